"""A Ray worker killed mid-batch, during curate and during generate (vLLM through Ray Data LLM).

The workers are armed by tests/faults/ray_hooks.py: the first worker to take a batch through
the target function SIGKILLs itself while holding it. Ray retries the lost work; where the stage
fails instead, running the same workflow again completes it. Either way every row comes out
once: for curate (the seeded HTTP teacher) exactly the undisturbed run's rows; for generate
(vLLM on CPU cannot reproduce samples, see the README) every request answered once.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from distill.pipeline.cluster import ensure_ray
from tests.faults.compare import lost_and_doubled
from tests.faults.ray_hooks import kill_once_env
from tests.faults.record import record, rows_lost_doubled
from tests.faults.runs import run_stages_in_process, stage_frames, write_recipe

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


@pytest.fixture
def armed_ray(tmp_path):
    """Start Ray (after any earlier one of this process) with workers armed by `arm(target)`."""
    import ray

    def arm(target: str) -> Path:
        marker = tmp_path / "killed"
        ray.shutdown()
        ensure_ray(num_cpus=2, runtime_env=kill_once_env(target, marker))
        return marker

    yield arm
    ray.shutdown()


def run_until_done(recipe: Path, run_dir: Path, upto: str) -> int:
    """Run the workflow up to `upto`, again if the fault stopped it; returns the runs it took."""
    try:
        run_stages_in_process(recipe, run_dir, upto=upto)
        return 1
    except Exception:  # noqa: BLE001  (the fault may fail the stage: a re-run must finish it)
        run_stages_in_process(recipe, run_dir, upto=upto)
        return 2


def test_a_worker_killed_mid_batch_during_curate(undisturbed, armed_ray):
    work, _, recipe, calm = undisturbed
    marker = armed_ray("distill.data.parsing:parse_frame")  # per batch, in curate's Ray tasks
    run_dir = work / "ray-kill-curate"
    runs = run_until_done(recipe, run_dir, "curate")
    if not marker.exists():
        pytest.skip("curate did not run on Ray workers here (no batch reached one)")
    got, expected = stage_frames(run_dir), stage_frames(calm)
    lost, doubled = lost_and_doubled(run_dir, calm, ("prompts", "generate", "curate"))
    record(f"Ray worker SIGKILLed mid-batch during curate ({runs} run(s))", injected=1,
           completed=1, lost=lost, doubled=doubled)
    for name in ("generate", "curate"):
        for mine, theirs in zip(got[name], expected[name]):
            assert mine.equals(theirs), name


def test_a_worker_killed_mid_batch_during_generate(tmp_path, armed_ray, distill_home):
    marker = armed_ray("ray.llm._internal.batch.stages.vllm_engine_stage:vLLMEngineStageUDF.udf")
    recipe = write_recipe(tmp_path / "recipe.yaml", "http://127.0.0.1:9/v1")
    data = yaml.safe_load(recipe.read_text())
    data["teacher"].update(backend="vllm", model="tiny-llama", shard_rows=8)
    data["teacher"].pop("endpoint")
    recipe.write_text(yaml.safe_dump(data))
    runs = run_until_done(recipe, tmp_path / "run", "generate")
    assert marker.exists(), "no engine worker took a batch"
    kept, failed = stage_frames(tmp_path / "run")["generate"]
    ids = [f"{p}:{i}" for p in stage_frames(tmp_path / "run")["prompts"][0]["prompt_id"]
           for i in range(2)]
    lost, doubled = rows_lost_doubled(pd.concat([kept["request_id"], failed["request_id"]]), ids)
    record(f"Ray worker (vLLM engine) SIGKILLed mid-batch during generate ({runs} run(s))",
           injected=1, completed=1, lost=lost, doubled=doubled)
    assert (lost, doubled) == (0, 0) and len(failed) == 0
