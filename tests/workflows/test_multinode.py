"""The workflow on a Ray cluster of three nodes on this machine (issue 8's proof), slow.

`ray.cluster_utils.Cluster`: a head with no CPUs (so every task and actor must go to a worker
node) and two worker nodes with one CPU each, each its own raylet, object store and node id.
1. The smoke recipe runs end to end through the real CLI joined to the cluster (RAY_ADDRESS);
   Ray's state API (every task with its node id) shows that curate's per-batch and writing
   tasks ran on both worker nodes, and that generate's Ray Data tasks did too. vLLM's engine is
   one actor (one CPU) on one node; what spreads over both is the rest of generate (prompt
   preprocessing, result postprocessing and writing), so the test checks the union and prints
   which kind ran where. Nothing that needs a CPU ran on the head.
2. Curate (data.curate_ray, the stage's own function) runs on a few thousand synthetic traces;
   when its first per-batch tasks run on the second worker node, that node is removed
   (`cluster.remove_node`: its raylet and workers killed). The run completes on the node left,
   and every input row is once in kept or rejected: the output equals curate()'s in-process
   result, byte for byte after sorting.
What it does not show: separate machines (one host, one file system), or a node lost in
generate or train (tests/faults covers a killed worker process in generate).
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

from distill.pipeline import accounting, open_run
from distill.pipeline.cluster import CPU_ENGINE_ENV
from distill.pipeline.store import read_parquet_dir
from helpers import REPO, run_cli

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"
# Ray task names (Ray Data names a task after its fused operators' functions; the part writers
# are named by pipeline.accounting.split_and_write_ray after their finishing rules)
CURATE_TASKS = ("MapBatches(_rows)", "write_part(_finish)")
GENERATE_TASKS = ("_preprocess", "vLLMEngineStageUDF", "_postprocess", "ChatTemplateUDF",
                  "TokenizeUDF", "DetokenizeUDF")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def cluster():
    """Head (0 CPUs, dashboard for the state API) + two 1-CPU worker nodes; this process joins."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    saved = dict(os.environ)
    os.environ.update({**CPU_ENGINE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1",
                       "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"})
    store = 300 * 1024 * 1024
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "object_store_memory": store})
    workers = [c.add_node(num_cpus=1, object_store_memory=store) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _node_of(cluster_and_workers) -> dict[str, str]:
    c, workers = cluster_and_workers
    return {w.node_id: f"worker{i + 1}" for i, w in enumerate(workers)} | {
        c.head_node.node_id: "head"}


def _tasks(address: str, **filters) -> list:
    from ray.util.state import list_tasks

    return list_tasks(address=address, detail=True, limit=10_000, raise_on_missing_output=False,
                      filters=[(k, "=", v) for k, v in filters.items()])


def test_smoke_workflow_runs_across_both_worker_nodes(cluster, distill_home, tmp_path):
    import ray

    c, _ = cluster
    names = _node_of(cluster)
    mine = ray.get_runtime_context().get_job_id()
    run_dir = tmp_path / "run"
    proc = run_cli(["run", str(SMOKE), "--run-dir", str(run_dir)], home=distill_home,
                   cwd=tmp_path, extra_env={"RAY_ADDRESS": c.address}, timeout=1500)
    run = open_run(run_dir)
    for stage in ("prompts", "generate", "curate", "train", "evaluate", "publish"):
        m = run.stage(stage).manifest
        assert m["rows_in"] == m["kept"] + sum(m["rejected"].values()), stage
    assert "ran" in proc.stdout

    tasks = [t for t in _tasks(c.address) if t.job_id != mine]
    started = {t.task_id: t.start_time_ms or t.creation_time_ms or 0 for t in tasks}
    curate = [t for t in tasks if t.node_id and any(k in t.name for k in CURATE_TASKS)]
    first_curate = min(started[t.task_id] for t in curate)
    # generate ran before curate: its Ray Data tasks (preprocessing, the engine actor's batches,
    # postprocessing and writing) are those of the LLM pipeline that started before curate's
    generate = [t for t in tasks if started[t.task_id] < first_curate and t.node_id
                and any(k in t.name for k in GENERATE_TASKS)]
    by_kind: dict[str, set] = {}
    for t in curate + generate:
        by_kind.setdefault(t.name, set()).add(names.get(t.node_id, "?"))
    print("\ntasks by kind and node:", {k: sorted(v) for k, v in sorted(by_kind.items())})
    assert {names.get(t.node_id) for t in curate} == {"worker1", "worker2"}
    assert {names.get(t.node_id) for t in generate} == {"worker1", "worker2"}
    engines = [t for t in generate if "vLLMEngine" in t.name and t.type == "ACTOR_TASK"]
    assert engines and {names.get(t.node_id) for t in engines} <= {"worker1", "worker2"}
    # the head has no CPU: only zero-CPU actors (Ray Data's bookkeeping, the progress queue)
    # ran there, every task that needs a CPU ran on a worker node
    assert not [t.name for t in tasks if t.type == "NORMAL_TASK" and names.get(t.node_id) == "head"]


def _many_traces(n_prompts: int, k: int) -> pd.DataFrame:
    """Generate-shaped rows: k samples per prompt, right and wrong boxed answers, repeats."""
    rng = np.random.default_rng(11)
    rows = []
    for p in range(n_prompts):
        a, b = int(rng.integers(10, 99)), int(rng.integers(10, 99))
        for s in range(k):
            guess = a + b + int(rng.integers(0, 3)) - 1
            steps = " ".join(f"Step {j}: {a} plus {b} is considered again." for j in
                             range(int(rng.integers(2, 30))))
            rows.append({"prompt_id": f"q{p:05d}", "sample_index": s, "request_id": f"q{p:05d}:{s}",
                         "problem": f"What is {a} + {b}?", "reference": str(a + b),
                         "text": f"{steps} The answer is \\boxed{{{guess}}}.",
                         "completion_tokens": 10 + 8 * s, "finish_reason": "stop"})
    return pd.DataFrame(rows)


def test_a_worker_node_removed_mid_curate_loses_and_doubles_no_row(cluster, tmp_path):
    from distill.data.curate import CurateConfig, curate
    from distill.data.curate_ray import curate_on_ray
    from tests.data.test_curate_ray import _generate_dir, _sorted_bytes

    c, workers = cluster
    victim = workers[1]
    df = _many_traces(1000, 3)
    cfg = CurateConfig.model_validate({
        "parse": {"think_required": False}, "verify": {"method": "math", "workers": 1},
        "filters": {"truncated": {"enabled": False}, "too_short": {"min_tokens": 1}},
        "decontam": {"enabled": False}, "selection": {"max_per_prompt": 2},
        "cluster": {"rows_per_block": 100, "rows_per_part": 500}})
    source = _generate_dir(df.sample(frac=1, random_state=2), tmp_path / "gen", 4)

    removed: dict = {}

    def remove_when_curating() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not removed.get("stop"):
            running = [t for t in _tasks(c.address, state="RUNNING")
                       if CURATE_TASKS[0] in t.name and t.node_id == victim.node_id]
            if running:
                removed["task"] = running[0].name
                c.remove_node(victim, allow_graceful=False)
                removed["at"] = time.monotonic()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_when_curating, daemon=True)
    watcher.start()
    try:
        counts, _ = curate_on_ray(source, cfg, tmp_path / "out")
    finally:
        removed["stop"] = True
        watcher.join(timeout=60)
    assert "at" in removed, "no curate task ran on the second worker node"
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert victim.node_id not in alive and workers[0].node_id in alive

    kept, rejected = (read_parquet_dir(tmp_path / "out" / p) for p in ("data", "rejected"))
    ids = pd.concat([kept["request_id"], rejected["request_id"]])
    assert not ids.duplicated().any()                       # no row twice
    assert set(ids) == set(df["request_id"])                # no row lost
    assert counts["kept"] == len(kept) and counts["rows_in"] == len(df)
    local = curate(df, cfg)                                 # the undisturbed result, in-process
    accounting.split_and_write(local, tmp_path / "local", len(local))
    for part, ours in (("data", kept), ("rejected", rejected)):
        assert _sorted_bytes(ours) == _sorted_bytes(read_parquet_dir(tmp_path / "local" / part))
