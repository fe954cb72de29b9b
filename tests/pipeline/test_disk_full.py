"""A full disk mid-stage: a message naming the stage, the run directory and what was kept, not a
raw `No space left on device` traceback; a re-run after freeing space resumes. The run directory
is a real small tmpfs (needs root or CAP_SYS_ADMIN to mount; skipped otherwise)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from distill.pipeline.errors import Interrupted, RunStopped
from distill.pipeline.runner import run_stages
from distill.pipeline.stage import StageContext, StageResult
from distill.pipeline.stops import is_disk_full
from distill.pipeline.store import RunStore, open_run, write_parquet
from helpers import tmpfs
from tests.pipeline.test_runner import MakeRows, Toy

MiB = 2**20


class Fill:
    """Writes two small shards (resume state), then ~3 MiB: through the runner's Parquet
    writer (pyarrow) or its own safetensors file, as train does."""

    name, version, needs, resumable = "fill", "1", ("make",), True
    writer = "parquet"

    def config(self, recipe: Toy) -> dict:
        return {}

    def run(self, ctx: StageContext) -> StageResult:
        shards = ctx.out_dir / "shards"
        for i in range(2):
            if not (shards / f"shard-{i}.parquet").exists():
                write_parquet(pd.DataFrame({"i": [i]}), shards / f"shard-{i}.parquet")
        noise = np.random.default_rng(0).random(3 * MiB // 8)  # incompressible
        if Fill.writer == "safetensors":
            from safetensors.numpy import save_file

            save_file({"w": noise}, str(ctx.out_dir / "model.safetensors"))
        return StageResult(rows=pd.DataFrame({"x": noise}), rows_in=len(noise))


class Stop:
    """Raises KeyboardInterrupt after writing a shard, as Ctrl-C in generate would."""

    name, version, needs, resumable = "stop", "1", ("make",), True

    def config(self, recipe: Toy) -> dict:
        return {}

    def run(self, ctx: StageContext) -> StageResult:
        write_parquet(pd.DataFrame({"i": [0]}), ctx.out_dir / "shards" / "shard-0.parquet")
        raise KeyboardInterrupt


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "disk", "8m") as mnt:
        yield mnt


def _run(root, stages) -> str:
    out = io.StringIO()
    run_stages(stages, Toy(), RunStore(root), console=Console(file=out, width=200), resolvers={})
    return out.getvalue()


@pytest.mark.parametrize("writer", ["parquet", "safetensors"])
def test_disk_full_names_stage_and_kept_work_and_a_rerun_resumes(small_disk, writer, monkeypatch):
    monkeypatch.setattr(Fill, "writer", writer)
    run = small_disk / "run"
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (6 * MiB))  # leaves ~2 MiB: enough for make, not for fill
    with pytest.raises(RunStopped) as err:
        _run(run, [MakeRows(), Fill()])
    msg = " ".join(str(err.value).split())
    assert "the disk is full" in msg and "stage 'fill'" in msg and str(run) in msg
    assert "kept: finished stages make" in msg and "fill's 2 finished shards" in msg
    assert "free space" in msg and "run the same command again" in msg and "resumes" in msg
    assert is_disk_full(err.value.__cause__)  # the library's own error stays as the cause

    ballast.unlink()  # free space, then the same run again
    log = _run(run, [MakeRows(), Fill()])
    assert "make      skipped" in log and "fill      ran" in log
    assert len(open_run(run).stage("fill").to_pandas()) == 3 * MiB // 8


def test_other_errors_pass_through_unchanged(tmp_path):
    class Broken(Fill):
        def run(self, ctx):
            raise ValueError("a bug, not a full disk")

    with pytest.raises(ValueError, match="a bug"):
        _run(tmp_path, [MakeRows(), Broken()])


def test_ctrl_c_in_a_stage_says_what_was_kept(tmp_path):
    with pytest.raises(Interrupted) as err:
        _run(tmp_path, [MakeRows(), Stop()])
    msg = " ".join(str(err.value).split())
    assert err.value.exit_code == 130
    assert "interrupted during stage 'stop'" in msg and "kept: finished stages make" in msg
    assert "stop's 1 finished shard (in" in msg and "run the same command again" in msg


def test_torch_save_on_a_full_disk_is_recognised(small_disk, tmp_path):
    """torch.save gives no errno ("unexpected pos", "file write failed"): a full disk is told
    by the space left where the run is, and the same error elsewhere is not a full disk."""
    import torch

    (small_disk / "ballast").write_bytes(b"\0" * (7 * MiB))
    with pytest.raises(RuntimeError) as err:
        torch.save(torch.zeros(MiB // 2), small_disk / "optimizer.pt")  # 2 MiB
    assert not is_disk_full(err.value)  # no errno and no words: only the disk can tell
    assert is_disk_full(err.value, small_disk)
    assert not is_disk_full(err.value, tmp_path)  # a disk with room: some other failure
