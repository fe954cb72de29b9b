"""How the sandbox runs each language: `LANGUAGES["python"]`, and what the jail must hold for it.

A `Language` names the program's file, its argv, the test harness's argv (data/sandbox_harness.py,
copied into the jail's /.distill), the interpreter to use and the host paths it runs from, which
`jail_paths` adds to the system directories the jail mounts read-only. Used by data/sandbox.py.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from distill.pipeline.errors import DistillError

HARNESS = ("sandbox_harness.py", "sandbox_wire.py")  # copied into the jail's /.distill
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/etc/ld.so.cache")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailable(DistillError, RuntimeError):
    """The sandbox could not be set up on this machine (not a failure of the program)."""


class Language(NamedTuple):
    """How to run a program: its file, its argv, the harness's argv (given the interpreter and
    the result fd; None: no harness), the interpreter, and the host paths the jail needs for it."""

    filename: str
    argv: Callable[[str], list[str]]
    harness_argv: Callable[[str, int], list[str]] | None
    interpreter: Callable[[bool], str]
    paths: Callable[[str], tuple[str, ...]]


def _world_executable(path: str) -> bool:
    """True if a uid that is neither owner nor group can reach and run `path`."""
    real = Path(os.path.realpath(path))
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)


def python_interpreter(drops_uid: bool) -> str:
    """The Python the sandboxed program runs on: $DISTILL_SANDBOX_PYTHON, this one, or python3.

    When the program runs as another uid (root mode) the interpreter must be reachable by
    "others" (a pyenv Python under /root, mode 700, is not), so the system python3 is used.
    """
    candidates = [os.environ.get("DISTILL_SANDBOX_PYTHON"), sys.executable,
                  shutil.which("python3", path=SAFE_PATH)]
    for c in filter(None, candidates):
        if not drops_uid or _world_executable(c):
            return c
    raise SandboxUnavailable(
        f"no Python the sandbox uid can run: {sys.executable} is not reachable by other users "
        "(a parent directory lacks o+x)", fix="install a system python3 (apt-get install "
        "python3) or set DISTILL_SANDBOX_PYTHON to a world-executable interpreter")


@functools.cache
def python_paths(exe: str) -> tuple[str, ...]:
    """The host directories `exe` runs from: its prefixes (a venv's and its base's) and bin."""
    probe = ("import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix,"
             " sys.base_exec_prefix]))")
    try:
        done = subprocess.run([exe, "-I", "-S", "-c", probe], capture_output=True, text=True,
                              timeout=60, env={"PATH": SAFE_PATH}, check=True)
        prefixes = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        raise SandboxUnavailable(
            f"sandbox setup failed: cannot run the sandbox's Python {exe} ({e})",
            fix="set DISTILL_SANDBOX_PYTHON to a working python3") from None
    return (*prefixes, os.path.dirname(os.path.abspath(exe)))


def jail_paths(extra: tuple[str, ...]) -> list[str]:
    """SYSTEM_PATHS and `extra` that exist, without those inside another one on the list."""
    found: list[str] = []
    for p in [*SYSTEM_PATHS, *extra]:
        if os.path.lexists(p) and not any(p == q or p.startswith(q + "/") for q in found):
            found.append(p)
    return found


LANGUAGES: dict[str, Language] = {
    "python": Language(
        "main.py", lambda exe: [exe, "-I", "-B", "main.py"],
        lambda exe, fd: [exe, "-I", "-B", f"/.distill/{HARNESS[0]}", str(fd)],
        python_interpreter, python_paths),
}


@functools.cache
def harness_files() -> dict[str, str]:
    """The harness's modules, as the jail holds them: {".distill/<name>": source}."""
    here = Path(__file__).parent
    return {f".distill/{name}": (here / name).read_text(encoding="utf-8") for name in HARNESS}
