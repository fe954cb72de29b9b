"""A full disk during generate, curate, train and publish: a message, then a re-run after freeing
space gives the undisturbed run's results.

The run directory is on a 64 MiB tmpfs (skipped where one cannot be mounted). The stages before
the one under test run with room to spare; then a ballast file fills the disk, leaving a few
KiB: room for a shard or two of generate, or for the run's bookkeeping (run.json) but not the
stage's output. The run stops
with the runner's message (the stage, what was kept, run the same command again); the ballast
is deleted and the same run completes with the undisturbed run's rows, weights and files
(tests/faults/compare.py).
"""
from __future__ import annotations

import pytest

from distill.pipeline.errors import RunStopped
from helpers import fill_disk, tmpfs
from tests.faults.compare import assert_same_run, lost_and_doubled
from tests.faults.record import record
from tests.faults.runs import run_stages_in_process

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]
BEFORE = {"generate": "prompts", "curate": "generate", "train": "curate", "publish": "evaluate"}
LEAVE = {"generate": 12 * 1024}  # bytes left free: a shard or two fit
BOOKKEEPING = 8 * 1024  # the other stages: run.json's updates fit, the stage's output does not


@pytest.mark.parametrize("stage", list(BEFORE))
def test_a_full_disk_stops_with_a_message_and_a_rerun_completes(undisturbed, stage, tmp_path):
    _, _, recipe, calm = undisturbed
    with tmpfs(tmp_path / "disk", "64m") as disk:
        run_dir = disk / "run"
        run_stages_in_process(recipe, run_dir, upto=BEFORE[stage])
        ballast = fill_disk(disk / "ballast", leave=LEAVE.get(stage, BOOKKEEPING))
        with pytest.raises(RunStopped) as err:
            run_stages_in_process(recipe, run_dir)
        message = " ".join(str(err.value).split())
        ballast.unlink()
        run_stages_in_process(recipe, run_dir)
        lost, doubled = lost_and_doubled(run_dir, calm)
        record(f"disk full during {stage}, then a re-run", injected=1, completed=1, lost=lost,
               doubled=doubled)
        assert "the disk is full" in message and f"stage {stage!r}" in message, message
        assert "run the same command again" in message and str(run_dir) in message
        assert_same_run(run_dir, calm)
