"""A Ray worker killed mid-batch: `kill_once_env(target, marker)` is a runtime_env whose workers
SIGKILL themselves on the first call of `target` anywhere in the cluster.

    ensure_ray(num_cpus=2, runtime_env=kill_once_env("distill.data.parsing:parse_frame", marker))

`target` is "module:attribute" or "module:Class.method"; the worker_process_setup_hook
(`install`) wraps it in every worker as it starts. The first call (whichever worker gets the
marker file, created exclusively) kills its own process with SIGKILL, as the OOM killer or a lost
node would, while it holds a batch; every later call runs normally. `marker` existing afterwards
says the fault was injected.
"""
from __future__ import annotations

import importlib
import os
import signal
from pathlib import Path

from helpers import REPO

TARGET, MARKER = "DISTILL_FAULT_KILL", "DISTILL_FAULT_MARKER"


def kill_once_env(target: str, marker: Path) -> dict:
    """The runtime_env that arms the fault (the workers import this module from the checkout)."""
    return {"worker_process_setup_hook": "tests.faults.ray_hooks.install",
            "env_vars": {TARGET: target, MARKER: str(marker),
                         "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}}


def install() -> None:
    """Wrap the target in this worker (Ray calls this as each worker starts)."""
    module_name, _, path = os.environ[TARGET].partition(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, name, _killing(getattr(owner, name), Path(os.environ[MARKER])))


def _killing(fn, marker: Path):
    def first_call_dies(*args, **kwargs):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return fn(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    return first_call_dies
