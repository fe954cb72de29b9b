"""The one error type users see: it names the file, key, row or column, and the fix."""
from __future__ import annotations


class DistillError(Exception):
    """A user-facing error. The CLI prints its message (no traceback) and exits with code 2."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class RecipeError(DistillError):
    """The recipe is invalid: an unknown key, a bad value, a missing file or column."""
