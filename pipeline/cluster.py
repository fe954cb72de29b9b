"""Ray setup: `ensure_ray(recipe.ray)` joins $RAY_ADDRESS / the recipe's address, or starts a local Ray.

Under `ray job submit ... -- distill run ...` RAY_ADDRESS is set by Ray and the same code joins
the cluster. Locally we start Ray quietly (no dashboard, worker logs off unless DISTILL_VERBOSE=1)
and with the environment vLLM's CPU backend needs.
"""
from __future__ import annotations

import os
from typing import Any

# vLLM on CPU: use every core (the default reserves one of our two), a fixed KV cache size.
CPU_ENGINE_ENV = {
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    "TOKENIZERS_PARALLELISM": "false",
}


def verbose() -> bool:
    return os.environ.get("DISTILL_VERBOSE", "") not in ("", "0")


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               runtime_env: dict | None = None) -> Any:
    """Initialise Ray once per process and quiet Ray Data's own progress output; `runtime_env`
    (the job's, e.g. a worker_process_setup_hook) applies when this call starts Ray."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        for key, value in CPU_ENGINE_ENV.items():
            os.environ.setdefault(key, value)
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=verbose(), runtime_env=runtime_env)
        else:
            # "local": always our own Ray here; a `ray start` left on this machine (or its stale
            # /tmp/ray/ray_current_cluster) is joined only when asked (RAY_ADDRESS=auto)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=verbose(), runtime_env=runtime_env,
                     configure_logging=verbose(), logging_level="INFO" if verbose() else "WARNING")
    import logging

    from ray.data import DataContext

    if not verbose():
        for name in ("ray", "ray.data", "ray.llm"):
            logging.getLogger(name).setLevel(logging.WARNING)

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = verbose()
    ctx.print_on_execution_start = verbose()
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = verbose()
    if not verbose() and hasattr(ctx, "issue_detectors_config"):  # its advice floods job logs
        ctx.issue_detectors_config.detectors = []
    return ray


def task_slots() -> int:
    """Tasks of one Ray Data operator at once: one per CPU in the cluster. A fractional num_cpus
    (so a task never waits for a CPU an actor holds) would otherwise let Ray run several per
    CPU, each in a new worker process that spends seconds on its imports before its first row."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def light_task_args() -> dict:
    """Ray Data arguments for a cheap step per block (shaping rows around an engine, writing a
    shard): a sliver of a CPU, so it never waits for the CPU an engine holds, and task_slots()
    at once. (Uncapped, Ray started a worker process per block while the engine was loading:
    `python bench/teacher_overhead.py` measured 0.73 with 16 blocks, 0.85 with 4.)"""
    import ray

    return {"num_cpus": 0.05, "compute": ray.data.TaskPoolStrategy(size=task_slots())}


def on_this_node() -> dict:
    """Ray actor options for a small bookkeeping actor (a progress queue) that must outlive any
    worker node: no CPU, on the driver's own node (whose loss ends the job anyway)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def vllm_is_cpu_build() -> bool:
    """True when the installed vLLM is the vllm-cpu build (our CPU machines)."""
    from importlib import metadata

    try:
        metadata.version("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


def writer_identity() -> dict[str, str]:
    """Which process writes a file: {node (Ray node id, '' outside Ray), pid, host}, recorded in
    what the workers write so a test or a user can see where each file was made."""
    import socket

    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001  (no Ray: the node is unknown, the pid still says who)
        node = ""
    return {"node": node, "pid": str(os.getpid()), "host": socket.gethostname()}
