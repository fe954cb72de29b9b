"""SIGKILL of the driver during each stage, then a re-run: the results of an undisturbed run.

`distill run` (tests/faults/killed_driver.py: the real command line, killing itself at a chosen
write) on the smoke recipe with the seeded HTTP teacher, killed in prompts, generate (two shards
durable, the third one's temporary file written), curate, train (after its first checkpoint) or
publish; then the same workflow again. The result is the undisturbed run's (tests/faults/
compare.py: the same rows, bit-identical weights on CPU with the same seed, exactly the same
files, so nothing left behind), and generation asks the teacher only for what was not durable.
Killed in evaluate (vLLM engines, whose samples on CPU are not reproducible), the re-run is
checked for completeness instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO
from tests.faults.compare import assert_same_run, lost_and_doubled
from tests.faults.record import record, rows_lost_doubled
from tests.faults.runs import KEY, KEY_ENV, run_stages_in_process, stage_frames, write_recipe
from tests.teachers.http_server import ChatServer

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
KILL_AT = {"prompts": 1, "generate": 3, "curate": 1, "train": 0, "publish": 1}  # killed_driver N


def killed_run(stage: str, recipe: Path, run_dir: Path, home: Path,
               at: int | None = None) -> subprocess.CompletedProcess:
    """`distill run`, SIGKILLed at write `at` (default KILL_AT[stage]) of `stage`."""
    env = {**os.environ, "DISTILL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    at = KILL_AT[stage] if at is None else at
    return subprocess.run([sys.executable, str(REPO / "tests" / "faults" / "killed_driver.py"),
                           stage, str(at), str(run_dir), "--", "run", str(recipe),
                           "--run-dir", str(run_dir)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def shard_rows(run_dir: Path) -> int:
    return sum(len(pd.read_parquet(p)) for p in run_dir.glob("cache/generate-*/shards/shard-*.parquet"))


@pytest.mark.parametrize("stage", list(KILL_AT))
def test_sigkill_of_the_driver_then_a_rerun_gives_the_undisturbed_results(undisturbed, stage,
                                                                         distill_home):
    work, server, recipe, calm = undisturbed
    run_dir = work / f"killed-{stage}"
    asked = len(server.received)
    proc = killed_run(stage, recipe, run_dir, distill_home)
    assert proc.returncode == -9, proc.stdout[-3000:] + proc.stderr[-3000:]
    durable, asked_before = shard_rows(run_dir), len(server.received) - asked
    run_stages_in_process(recipe, run_dir)
    lost, doubled = lost_and_doubled(run_dir, calm)
    record(f"SIGKILL of the driver during {stage}, then a re-run", injected=1, completed=1,
           lost=lost, doubled=doubled)
    assert_same_run(run_dir, calm)
    if stage == "generate":  # the re-run asked only for what was not durable at the kill
        assert 0 < durable < 48 and len(server.received) - asked - asked_before == 48 - durable


def test_sigkill_of_the_driver_during_evaluate_then_a_rerun_completes(tmp_path, distill_home,
                                                                      monkeypatch):
    """Evaluation starts vLLM engines, whose samples on CPU are not reproducible (README), so the
    re-run is checked for completeness: every (model, question, sample) answered once."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with ChatServer(seeded=True) as server:
        recipe = write_recipe(tmp_path / "recipe.yaml", server.base_url, evaluate=True)
        run_dir = tmp_path / "run"
        proc = killed_run("evaluate", recipe, run_dir, distill_home, at=1)
        assert proc.returncode == -9, proc.stdout[-3000:] + proc.stderr[-3000:]
        run_stages_in_process(recipe, run_dir)
    kept, rejected = stage_frames(run_dir)["evaluate"]
    rows = pd.concat([kept, rejected])
    want = {f"{m}/arithmetic_test:{q}:{s}" for m in ("student", "base")
            for q in set(rows["question_id"]) for s in range(2)}
    lost, doubled = rows_lost_doubled(rows["model"] + "/" + rows["request_id"], want)
    record("SIGKILL of the driver during evaluate, then a re-run", injected=1, completed=1,
           lost=lost, doubled=doubled)
    assert (lost, doubled) == (0, 0) and rows["question_id"].nunique() == 8
