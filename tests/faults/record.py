"""What the fault suite saw, for bench/faults.py: `record(fault, injected, completed, lost, doubled)`.

Each fault test calls `record` once per scenario; with DISTILL_FAULTS_LOG set (bench/faults.py
sets it) a JSON line is appended there, else nothing happens. `rows_lost_doubled` counts, for a
frame of results, the expected ids that have no row and the ids that have more than one.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable

import pandas as pd


def record(fault: str, *, injected: int, completed: int, lost: int, doubled: int) -> None:
    """Append one scenario's counts to $DISTILL_FAULTS_LOG (when set)."""
    path = os.environ.get("DISTILL_FAULTS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"fault": fault, "injected": injected, "completed": completed,
                                "lost": lost, "doubled": doubled}) + "\n")


def rows_lost_doubled(ids: pd.Series, expected: Iterable[str]) -> tuple[int, int]:
    """(expected ids with no row, rows beyond the first for an id)."""
    counts = ids.astype(str).value_counts()
    return len(set(expected) - set(counts.index)), int((counts - 1).sum())


def files_holding(folder, *secrets: str) -> list[str]:
    """Files under `folder` holding a secret: in their bytes, or in a Parquet file's values."""
    from pathlib import Path

    import pyarrow.parquet as pq

    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(s.encode() in data for s in secrets):
            found.append(str(path))
        elif path.suffix == ".parquet" and any(s in str(pq.read_table(path).to_pylist())
                                               for s in secrets):
            found.append(f"{path} (decoded)")
    return found
