"""A disturbed run against the undisturbed one: `lost_and_doubled(run, calm)`,
`assert_same_run(run, calm)`.

Same run means: every stage's kept and rejected rows are equal (paths of the run folder
aside), the trained and published weights are bit-identical, and the run folder holds exactly
the same files and folders (no temporary file, staging folder or damaged shard left behind, and
nothing missing). Trace-cache shards are named by the rows in them, which depends on the order
answers came in, so their names are not compared; their rows are, through the generate stage.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from tests.faults.record import rows_lost_doubled
from tests.faults.runs import ORDER, stage_frames

CLI_ONLY = {".lock", "recipe.json"}  # written by `distill run`, not by the stages


def lost_and_doubled(run_dir: Path, calm: Path, stages: tuple[str, ...] | None = None
                     ) -> tuple[int, int]:
    """Rows of the undisturbed run missing from `run_dir`, and rows it has twice, over `stages`
    (default: all of the undisturbed run's)."""
    got, expected = stage_frames(run_dir), stage_frames(calm)
    lost = doubled = 0
    for name, frames in expected.items():
        if stages is not None and name not in stages:
            continue
        want = pd.concat(frames)
        rows = pd.concat(got[name]) if name in got else want.iloc[:0]
        if len(want.columns):
            key = next((c for c in ORDER if c in want.columns), want.columns[0])
            n_lost, n_doubled = rows_lost_doubled(rows[key], want[key])
            lost, doubled = lost + n_lost, doubled + n_doubled
    return lost, doubled


def assert_same_run(run_dir: Path, calm: Path) -> None:
    got, expected = stage_frames(run_dir), stage_frames(calm)
    assert got.keys() == expected.keys()
    for name in expected:
        for mine, theirs in zip(got[name], expected[name]):
            pd.testing.assert_frame_equal(_normalised(mine, run_dir), _normalised(theirs, calm),
                                          obj=f"{name} rows")
    assert files(run_dir) == files(calm)
    for folder in ("train-*/model", "hub"):
        mine, theirs = (weights(next(r.glob(folder))) for r in (run_dir, calm))
        assert mine.keys() == theirs.keys() and all((mine[k] == theirs[k]).all() for k in mine)


def files(run_dir: Path) -> set[str]:
    """The run's files and folders, shard names left out (see the module docstring)."""
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")} - CLI_ONLY
    return {re.sub(r"/shard-[0-9a-f]+\.parquet$", "/shard-*.parquet", n) for n in names}


def weights(folder: Path) -> dict[str, object]:
    """{file:tensor name: array} of every safetensors file under `folder`."""
    from safetensors.numpy import load_file

    return {f"{p.relative_to(folder)}:{k}": v for p in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(p).items()}


def _normalised(rows: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    """`rows` with the run folder's path in text cells replaced (publish records its paths)."""
    out = rows.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, str) and str(run_dir) in v).any():
            out[column] = out[column].str.replace(str(run_dir), "<run>", regex=False)
    return out
