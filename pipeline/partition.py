"""Rows that share a part number meet in one Ray task: `by_part(ds, column, parts, fn) -> results`.

    lines = by_part(ds, "_part", parts=8, fn=write_one_part, num_cpus=0.5)

`ds` (a Ray Dataset; it is executed first) holds a part number per row in `column`, an int in
0..parts-1. Its blocks are cut by part number in at most 2 x task_slots() tasks (each takes a
run of consecutive blocks, about as many rows as the others, and makes one piece per part
that has rows in it); then `fn(rows)` (rows: a pyarrow Table) runs once for each part that has
rows, in a task that gets that part's pieces, in block order. With `aligned=True` the caller
says each block already holds the rows of one part, none of which are in another block: each
block goes to fn as it is, with no cut. This is a hash shuffle in plain Ray tasks, at most one
task per CPU at a time (pipeline.cluster.task_slots: a task beyond that would start a worker
process). The driver holds references only: at most 2 x task_slots() x parts pieces (an
empty one is None), never their rows.

Why not Ray Data's `groupby(column).map_groups(fn)`: in Ray 2.60 it samples the blocks for sort
boundaries, sorts and merges every block, and packed 6 parts into 4 tasks, so that ~1 s passed
between the last curate rule and the first part written, on 12,000 curated R1-length rows, and
one worker wrote the last part alone (`python bench/curate_scale.py`: the stage's rows/s against
the in-driver path's). The pieces are the driver's objects: those lost with a node are made
again from their lineage, and tasks are retried when a worker or node dies (a retried task
makes the same pieces, or rewrites the same part).
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np


def _arrow(block: Any) -> Any:
    """A Ray Data block (a pyarrow Table or a pandas DataFrame) as a pyarrow Table."""
    import pyarrow as pa

    if isinstance(block, pa.Table):
        return block
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(block).to_arrow()


def _keys(table: Any, column: str, parts: int) -> np.ndarray:
    """The part numbers of a table's rows, checked: present, not null, within 0..parts-1."""
    if column not in table.column_names:
        raise ValueError(f"no column {column!r} to part the rows by (columns: "
                         f"{table.column_names})")
    values = table[column]
    if values.null_count:
        raise ValueError(f"column {column!r} has {values.null_count} rows without a part number")
    key = np.asarray(values.to_numpy(), dtype=np.int64)
    if len(key) and (key.min() < 0 or key.max() >= parts):
        bad = int(key.min() if key.min() < 0 else key.max())
        raise ValueError(f"column {column!r} holds part {bad}, outside 0..{parts - 1}")
    return key


def _cut(column: str, parts: int, *blocks: Any) -> Any:
    """A run of blocks' rows by part: `parts` tables, None for a part with no rows here (a
    single one when parts == 1)."""
    import pyarrow as pa

    tables = [t for t in map(_arrow, blocks) if t.num_rows]   # an empty block may lack columns
    if not tables:
        return [None] * parts if parts > 1 else None
    table = pa.concat_tables(tables, promote_options="permissive")
    key = _keys(table, column, parts)
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(parts + 1))
    pieces = [table.take(order[a:b]) if b > a else None for a, b in pairwise(bounds)]
    return pieces if parts > 1 else pieces[0]


def _meet(fn: Callable[[Any], Any], column: str, parts: int, *pieces: Any) -> Any:
    """One part: its pieces as one table, given to fn; None when it has no rows."""
    import pyarrow as pa

    tables = [t for t in (_arrow(p) for p in pieces if p is not None) if t.num_rows]
    if not tables:
        return None
    rows = pa.concat_tables(tables, promote_options="permissive")
    if len(np.unique(_keys(rows, column, parts))) != 1:
        raise ValueError(f"rows of several parts met in one task (column {column!r}): a block "
                         "said to hold one part holds more")
    return fn(rows)


def _runs(sizes: list[int], runs: int) -> list[range]:
    """Consecutive runs of block indices, at most `runs`, each about as many rows as the others."""
    if not sizes:
        return []
    ends = np.cumsum(np.maximum(sizes, 1))
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, runs) / runs, side="left") + 1
    edges = np.unique(np.concatenate([[0], np.clip(cuts, 0, len(sizes)), [len(sizes)]]))
    return [range(a, b) for a, b in pairwise(edges) if b > a]


def _bounded(submits: Any, slots: int) -> list[list[Any]]:
    """Call each submit (it starts one Ray task and returns its refs) in order, with at most
    `slots` of the tasks unfinished at once; every call's refs, as lists, in order."""
    import ray

    running: list[Any] = []
    out: list[list[Any]] = []
    for submit in submits:
        if len(running) >= slots:   # fetch_local=False: a piece stays on the node that made it
            _, running = ray.wait(running, num_returns=1, fetch_local=False)
        refs = submit()
        refs = refs if isinstance(refs, list) else [refs]
        running.append(refs[0])   # a task's returns are all ready when it ends
        out.append(refs)
    return out


def by_part(ds: Any, column: str, parts: int, fn: Callable[[Any], Any], *,
            num_cpus: float = 0.5, name: str | None = None, aligned: bool = False) -> list[Any]:
    """fn(rows of one part) for each part of `ds` that has rows (see the module docstring); the
    results, in part order. `num_cpus`: what each task asks Ray for; `name`: the part tasks'
    name in Ray's dashboard and state API (default: fn's); `aligned`: each block holds one
    part (checked)."""
    import ray

    from distill.pipeline.cluster import task_slots

    name = name or getattr(getattr(fn, "func", fn), "__name__", "by_part")
    retry = {"num_cpus": num_cpus, "max_retries": -1}   # on a lost worker or node, as Ray Data
    meet = ray.remote(_meet).options(name=name, **retry)
    slots = task_slots()
    entries = [e for bundle in ds.iter_internal_ref_bundles() for e in bundle.blocks]
    if aligned:
        results = _bounded((lambda e=e: meet.remote(fn, column, parts, e.ref) for e in entries),
                           slots)
        return [r for r in ray.get([refs[0] for refs in results]) if r is not None]
    cut = ray.remote(_cut).options(num_returns=parts, name=f"cut_by_{column}", **retry)
    runs = [[entries[i].ref for i in r]
            for r in _runs([e.metadata.num_rows or 0 for e in entries], 2 * slots)]
    pieces = _bounded((lambda run=run: cut.remote(column, parts, *run) for run in runs), slots)

    def submit(part: int) -> Any:
        mine = [p[part] for p in pieces]
        for p in pieces:
            p[part] = None   # the driver lets go of a piece once its part's task has it
        return meet.remote(fn, column, parts, *mine)

    results = _bounded((lambda part=part: submit(part) for part in range(parts)), slots)
    return [r for r in ray.get([refs[0] for refs in results]) if r is not None]
