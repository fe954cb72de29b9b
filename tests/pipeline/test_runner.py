"""The stage runner on two toy stages: skip when done, re-run what is damaged, keep resume state."""
from __future__ import annotations

import io

import pandas as pd
import pytest
from pydantic import BaseModel
from rich.console import Console

from distill.pipeline.runner import run_stages
from distill.pipeline.stage import StageContext, StageResult
from distill.pipeline.store import RunStore, open_run


class Toy(BaseModel):
    name: str = "toy"
    n: int = 5


class MakeRows:
    name, version, needs, resumable = "make", "1", (), False
    calls = 0

    def config(self, recipe: Toy) -> dict:
        return {"n": recipe.n}

    def run(self, ctx: StageContext) -> StageResult:
        MakeRows.calls += 1
        rows = pd.DataFrame({"x": range(ctx.recipe.n)})
        rows["reject_reason"] = [None if x % 2 == 0 else "odd" for x in rows["x"]]
        rows["keep"] = rows["reject_reason"].isna()
        return StageResult(rows=rows, rows_in=len(rows))


class Resumable:
    name, version, needs, resumable = "use", "1", ("make",), True
    calls = 0

    def config(self, recipe: Toy) -> dict:
        return {}

    def run(self, ctx: StageContext) -> StageResult:
        Resumable.calls += 1
        (ctx.out_dir / "checkpoints").mkdir(exist_ok=True)
        (ctx.out_dir / "checkpoints" / f"step-{Resumable.calls}").write_text("state")
        rows = ctx.inputs["make"].to_pandas()
        return StageResult(rows=rows.assign(y=rows["x"] * 10), rows_in=len(rows))


STAGES = [MakeRows(), Resumable()]


def _run(root) -> str:
    out = io.StringIO()
    run_stages(STAGES, Toy(), RunStore(root), console=Console(file=out, width=200), resolvers={})
    return out.getvalue()


@pytest.fixture
def done(tmp_path):
    MakeRows.calls = Resumable.calls = 0
    _run(tmp_path)
    return tmp_path


def test_a_finished_run_runs_nothing_again(done):
    log = _run(done)
    assert "make      skipped" in log and "use       skipped" in log
    assert (MakeRows.calls, Resumable.calls) == (1, 1)
    assert "files" in open_run(done).stage("make").manifest


@pytest.mark.parametrize("damage", ["cut", "deleted", "changed", "manifest_cut"])
def test_a_damaged_finished_stage_runs_again_and_its_readers_do_not(done, damage):
    make = open_run(done).stage("make")
    data = next((make.path / "data").glob("*.parquet"))
    before = make.to_pandas()
    if damage == "cut":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "deleted":
        data.unlink()
    elif damage == "changed":
        pd.DataFrame({"x": [99]}).to_parquet(data)
    else:
        (make.path / "manifest.json").write_text('{"key": ')
    log = _run(done)
    assert "make      again    damaged" in log
    assert MakeRows.calls == 2 and Resumable.calls == 1  # same key downstream: still done
    pd.testing.assert_frame_equal(open_run(done).stage("make").to_pandas(), before)


def test_a_damaged_resumable_stage_keeps_its_resume_state(done):
    use = open_run(done).stage("use")
    next((use.path / "data").glob("*.parquet")).write_bytes(b"PAR1 cut")
    (use.path / "stray.txt").write_text("left by a crash")
    log = _run(done)
    assert "use       again    damaged" in log
    assert (use.path / "checkpoints" / "step-1").exists()      # resume state survives
    assert not (use.path / "stray.txt").exists()                 # other debris does not
    assert open_run(done).stage("use").damage() == []


def test_a_stage_made_again_with_new_content_makes_its_readers_run_again(done, monkeypatch):
    """Same keys, new content (a stage's `stale` asked for a re-run, e.g. retried failures):
    the readers see their input's content changed and run again; unchanged content would not."""
    monkeypatch.setattr(MakeRows, "stale", lambda self, recipe, manifest: "retrying", raising=False)
    monkeypatch.setattr(MakeRows, "run", lambda self, ctx: StageResult(
        rows=pd.DataFrame({"x": [7, 8]}), rows_in=2))
    log = _run(done)
    assert "make      again    retrying" in log
    assert "use       again    its input make was made again since" in log
    assert Resumable.calls == 2
    assert open_run(done).stage("use").to_pandas()["y"].tolist() == [70, 80]


class Optional:
    name, version, needs, resumable = "extra", "1", ("make",), False

    def config(self, recipe: Toy) -> dict:
        return {"extra": None}

    def run(self, ctx: StageContext) -> StageResult:
        return StageResult(rows=None, rows_in=0, already_written=True, extra={
            "counts": {"rows_in": 0, "kept": 0, "rejected": {}}, "enabled": False})


def test_an_optional_stage_the_recipe_leaves_out_says_off_not_ran(tmp_path):
    out = io.StringIO()
    run_stages([MakeRows(), Optional()], Toy(), RunStore(tmp_path),
               console=Console(file=out, width=200), resolvers={})
    log = out.getvalue()
    assert "extra     off      (no `extra:` section in the recipe)" in log
    assert "make      ran      in" in log
