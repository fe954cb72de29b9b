"""Parquet row slices as Ray Data work items: `slices_dataset(folder, rows) -> (ds, schema)`.

    ds, schema = slices_dataset(traces_dir, rows_per_slice=2048)
    ds.map_batches(lambda item: rules(read_slices(item, schema)), batch_size=None, ...)

The driver plans from the files' footers (row counts, schemas): each work item is a run of
(file, start, stop) slices holding at most `rows_per_slice` rows, made of whole row groups
where they fit (small files packed together, a large file cut at row-group bounds). The
worker that gets an item reads its rows with pyarrow and runs the stage's rules in the same
task, so rows go from storage to the rules without a separate read and repartition step.

Why not `ray.data.read_parquet(...).repartition(...)`: in Ray 2.60 that costs ~1.2 s before the
first row reaches a rule (a file-listing task, then a read that packs small files into one
block which the repartition must wait for), against ~0.06 s for these items
(`python bench/curate_scale.py` measures the stage both ways round: cluster vs in-driver).
Every slice is cast to the schema unified over all files (a column null in one file and text in
another is text; a column a file lacks is null there), so blocks agree whatever they hold.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa


def plan_slices(folder: Path, rows_per_slice: int, footers: list[tuple[Path, Any]] | None = None
                ) -> list[list[tuple[str, int, int]]]:
    """Work items for the Parquet files in `folder`: lists of (path, start, stop) row slices,
    each item at most rows_per_slice rows, in file order; every row in exactly one slice.

    Items are made of whole row groups where they fit (a task decodes a whole row group to
    take any row of it): groups are packed while the item stays within rows_per_slice, and only
    a group larger than that is cut (each piece then decodes the group; writers keep groups
    small: pipeline.store.ROW_GROUP_ROWS). `footers`: parquet_footers(folder), if read."""
    from distill.pipeline.accounting import parquet_footers

    items: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    held = 0
    for path, meta in parquet_footers(folder) if footers is None else footers:
        offset = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            for start in range(offset, offset + n, rows_per_slice):
                stop = min(offset + n, start + rows_per_slice)
                if current and held + stop - start > rows_per_slice:
                    items.append(current)
                    current, held = [], 0
                if current and current[-1][0] == str(path) and current[-1][2] == start:
                    current[-1] = (str(path), current[-1][1], stop)   # the same file, contiguous
                else:
                    current.append((str(path), start, stop))
                held += stop - start
            offset += n
    if current:
        items.append(current)
    return items


def _column(batch: Any, name: str) -> list:
    column = batch[name]
    return column.to_pylist() if isinstance(column, pa.ChunkedArray) else list(column)


def read_slices(batch: Any, schema: pa.Schema) -> pa.Table:
    """The rows of the work items in `batch` (a block of slices_dataset), in item order, cast
    to `schema`."""
    import pyarrow.parquet as pq

    tables = []
    for item in _column(batch, "slices"):
        for path, start, stop in json.loads(item):
            tables.append(_conform(_read_rows(pq.ParquetFile(path), start, stop), schema))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def _read_rows(file: Any, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a ParquetFile, reading only the row groups that hold them."""
    meta, groups, first, offset = file.metadata, [], None, 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if offset + n > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return file.schema_arrow.empty_table()
    table = file.read_row_groups(groups)
    return table.slice(start - first, stop - start)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(len(table), field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def mark_done(batch: Any, folder: str) -> None:
    """Record the work items in `batch` as done: one file per item in `folder` (storage every
    node sees), named by the item and holding its row count; a retried item rewrites its own."""
    from distill.pipeline.store import write_atomic

    for item, slices in zip(_column(batch, "item"), _column(batch, "slices")):
        rows = sum(stop - start for _, start, stop in json.loads(slices))
        write_atomic(Path(folder) / f"{int(item):08d}.done", str(rows))


def rows_done(folder: Path, seen: dict[str, int]) -> int:
    """Rows of the items mark_done recorded in `folder`; `seen` caches what was read before."""
    for path in folder.glob("*.done"):
        if path.name not in seen:
            try:
                seen[path.name] = int(path.read_text())
            except (OSError, ValueError):
                continue
    return sum(seen.values())


def slices_dataset(folder: Path, rows_per_slice: int) -> tuple[Any, pa.Schema]:
    """A Ray Dataset of one block per work item (columns `item`: its number, `slices`: the
    item as JSON) and the unified schema to read them with (read_slices;
    pipeline.accounting.parquet_schema). The files' footers are read once, for both."""
    import ray

    from distill.pipeline.accounting import parquet_footers, parquet_schema

    footers = parquet_footers(folder)
    items = plan_slices(folder, rows_per_slice, footers)
    ds = ray.data.from_items([{"item": i, "slices": json.dumps(item)}
                              for i, item in enumerate(items)],
                             override_num_blocks=max(1, len(items)))
    return ds, parquet_schema(folder, footers)
