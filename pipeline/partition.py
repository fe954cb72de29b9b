"""Rows that share a part number meet in one Ray task: `by_part(ds, column, parts, fn) -> results`.

    lines = by_part(ds, "_part", parts=8, fn=write_one_part, num_cpus=0.5)

Every block of `ds` (a Ray Dataset; it is executed first) is cut by its rows' part number, an
int in 0..parts-1 (one task per block, one output per part); then `fn(rows)` (rows: a pyarrow
Table) runs once for each part that has rows, in a task that gets that part's piece of every
block, in block order. This is a hash shuffle in plain Ray tasks, at most one task per CPU at
a time (pipeline.cluster.task_slots: a task beyond that would start a worker process).

Why not Ray Data's `groupby(column).map_groups(fn)`: in Ray 2.60 it samples the blocks for sort
boundaries, sorts and merges every block, and packed 6 parts into 4 tasks, so that ~1 s passed
between the last curate rule and the first part written, on 12,000 curated R1-length rows, and
one worker wrote the last part alone (`python bench/curate_scale.py`: the stage's rows/s against
the in-driver path's). The pieces are the driver's objects: those lost with a node are made again
from their lineage, and a retried task rewrites the same part.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import pairwise
from typing import Any

import numpy as np


def _cut(block: Any, column: str, parts: int) -> Any:
    """One block's rows by part: `parts` tables (a single table when parts == 1)."""
    if column not in block.column_names:
        if block.num_rows:
            raise ValueError(f"no column {column!r} to part the rows by (columns: "
                             f"{block.column_names})")
        return [block] * parts if parts > 1 else block   # an empty block may have no columns
    key = np.asarray(block[column].to_numpy(), dtype=np.int64)
    if len(key) and (key.min() < 0 or key.max() >= parts):
        bad = int(key.min() if key.min() < 0 else key.max())
        raise ValueError(f"column {column!r} holds part {bad}, outside 0..{parts - 1}")
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(parts + 1))
    pieces = [block.take(order[a:b]) for a, b in pairwise(bounds)]
    return pieces if parts > 1 else pieces[0]


def _meet(fn: Callable[[Any], Any], *pieces: Any) -> Any:
    """One part: its pieces of every block as one table, given to fn; None when it has no rows."""
    import pyarrow as pa

    rows = pa.concat_tables(pieces, promote_options="permissive")
    return fn(rows) if rows.num_rows else None


def _bounded(submits: list[Callable[[], Any]], slots: int) -> list[list[Any]]:
    """Call each submit (it starts Ray tasks and returns their refs) in order, with at most
    `slots` of them unfinished at once; every call's refs, as lists, in order."""
    import ray

    running: list[Any] = []
    out: list[list[Any]] = []
    for submit in submits:
        if len(running) >= slots:   # fetch_local=False: a piece stays on the node that made it
            _, running = ray.wait(running, num_returns=1, fetch_local=False)
        refs = submit()
        refs = refs if isinstance(refs, list) else [refs]
        running.append(refs[0])
        out.append(refs)
    return out


def by_part(ds: Any, column: str, parts: int, fn: Callable[[Any], Any], *,
            num_cpus: float = 0.5, name: str | None = None) -> list[Any]:
    """fn(rows of one part) for each part of `ds` that has rows (see the module docstring); the
    results, in part order. `num_cpus`: what each task asks Ray for; `name`: the part tasks'
    name in Ray's dashboard and state API (default: fn's)."""
    import ray

    from distill.pipeline.cluster import task_slots

    name = name or getattr(fn, "func", fn).__name__
    cut = ray.remote(_cut).options(num_returns=parts, num_cpus=num_cpus, name=f"cut_by_{column}")
    meet = ray.remote(_meet).options(num_cpus=num_cpus, name=name)
    slots = task_slots()
    pieces = _bounded([partial(cut.remote, block, column, parts) for block in ds.to_arrow_refs()],
                      slots)
    if not pieces:
        return []
    results = _bounded([partial(meet.remote, fn, *(p[part] for p in pieces))
                        for part in range(parts)], slots)
    return [r for r in ray.get([refs[0] for refs in results]) if r is not None]
