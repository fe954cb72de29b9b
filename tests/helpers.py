"""Helpers shared by tests (importable as `helpers`: pytest's pythonpath includes tests/)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.workflows.fingerprints import resolvers

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub: hub ids resolve from the cache
RESOLVERS = resolvers(None)  # the workflow's key resolvers, for recipes given by absolute paths


def run_cli(args: list[str], *, home: Path, cwd: Path, timeout: float = 900,
            check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `distill` command line in a subprocess and return its result."""
    env = {**os.environ, "DISTILL_HOME": str(home), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-m", "distill.workflows.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"distill {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@contextmanager
def tmpfs(mnt: Path, size: str = "8m") -> Iterator[Path]:
    """A size-limited filesystem (tmpfs) at `mnt`, unmounted afterwards; skips the test where it
    cannot be mounted (needs root or CAP_SYS_ADMIN)."""
    import pytest

    mnt.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                              check=False, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command: cannot make a small filesystem to fill")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(path: Path, leave: int = 0) -> Path:
    """Write `path` until the disk holding it has at most `leave` bytes free (tmpfs: exactly)."""
    import shutil

    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as f:
        try:
            f.write(b"\0" * max(free - leave, 0))
            f.flush()
        except OSError:
            pass
    return path
