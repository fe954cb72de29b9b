"""`python tests/faults/killed_driver.py STAGE N RUN_DIR -- run RECIPE ...`: the `distill` command
line, SIGKILLed by itself at a chosen point of STAGE, as a crash or `kill -9` would stop it.

N >= 1: just before the Nth rename into RUN_DIR made while STAGE runs (every durable write of
the run store, the trace cache and publishing is a write to a temporary name, then a rename), so
the temporary file of that write is left behind and the writes before it are durable.
N == 0 (train): just after the Trainer saved its first checkpoint.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    stage, n, run_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]).resolve()
    args = sys.argv[sys.argv.index("--") + 1:]
    from distill.workflows.distill import STAGES

    running = {"stage": None, "renames": 0}

    def tracked(name, run):
        def run_and_note(ctx):
            running["stage"] = name
            return run(ctx)
        return run_and_note

    for s in STAGES:
        s.run = tracked(s.name, s.run)
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        if running["stage"] == stage and Path(dst).resolve().is_relative_to(run_dir):
            running["renames"] += 1
            if running["renames"] == n:
                _kill()
        return real_replace(src, dst, *a, **kw)

    os.replace = replace
    if n == 0:
        from transformers import Trainer

        save = Trainer._save_checkpoint

        def save_then_die(self, *a, **kw):
            save(self, *a, **kw)
            _kill()

        Trainer._save_checkpoint = save_then_die
    from distill.workflows.cli import app

    sys.argv = ["distill", *args]
    app()


if __name__ == "__main__":
    main()
