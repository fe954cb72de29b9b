"""The one error type users see: it names the file, key, row or column, and the fix."""
from __future__ import annotations


class DistillError(Exception):
    """A user-facing error. The CLI prints its message (no traceback) and exits with `exit_code`;
    configured secrets are masked in it."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None):
        from distill.pipeline.secrets import redact  # no secret is ever printed (pipeline.secrets)

        self.fix = redact(fix) if fix else fix
        super().__init__(redact(f"{message}\n  fix: {fix}" if fix else message))


class RecipeError(DistillError):
    """The recipe is invalid: an unknown key, a bad value, a missing file or column."""


class RunStopped(DistillError):
    """A run stopped part-way (a full disk, Ctrl-C): its message says what was kept; running the
    same command again resumes from there."""


class Interrupted(RunStopped):
    """Ctrl-C (SIGINT) during a run; the CLI exits 130 (128 + SIGINT), as shells expect."""

    exit_code = 130
