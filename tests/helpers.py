"""Helpers shared by tests (importable as `helpers`: pytest's pythonpath includes tests/)."""
from __future__ import annotations

import os
import subprocess
import sys
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
