"""pipeline.slices: work items of Parquet row slices cover every row once, read as one schema."""
from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.pipeline.accounting import parquet_schema
from distill.pipeline.errors import DistillError
from distill.pipeline.slices import mark_done, plan_slices, read_slices, rows_done


def _files(tmp_path, sizes, row_group_size=None):
    start = 0
    for i, n in enumerate(sizes):
        table = pa.table({"id": list(range(start, start + n)),
                          "text": [f"row {j}" for j in range(start, start + n)]})
        pq.write_table(table, tmp_path / f"part-{i:05d}.parquet", row_group_size=row_group_size)
        start += n
    return start


@pytest.mark.parametrize("sizes,per_item,row_group", [
    ([10, 3, 0, 25, 7], 8, None),      # small files packed, a large one cut, an empty one
    ([100], 7, 16),                    # one file, cut across row groups
    ([5, 5, 5], 100, None),            # everything in one item
])
def test_items_cover_every_row_once_in_order(tmp_path, sizes, per_item, row_group):
    total = _files(tmp_path, sizes, row_group)
    items = plan_slices(tmp_path, per_item)
    assert all(sum(stop - start for _, start, stop in item) <= per_item for item in items)
    schema = parquet_schema(tmp_path)
    ids = []
    for item in items:
        batch = pa.table({"item": [0], "slices": [json.dumps(item)]})
        ids += read_slices(batch, schema)["id"].to_pylist()
    assert ids == list(range(total))


def test_items_are_whole_row_groups_where_they_fit(tmp_path):
    """A task decodes a whole row group to take any of its rows: items never cut one that fits."""
    _files(tmp_path, [100, 30, 250], row_group_size=40)   # groups 40 40 20 | 30 | 40 x6, 10
    groups = []                                            # (path, first row, end)
    for path in sorted(tmp_path.glob("*.parquet")):
        meta, offset = pq.ParquetFile(path).metadata, 0
        for g in range(meta.num_row_groups):
            groups.append((str(path), offset, offset + meta.row_group(g).num_rows))
            offset += meta.row_group(g).num_rows
    bounds = {(p, a) for p, a, _ in groups} | {(p, b) for p, _, b in groups}
    items = plan_slices(tmp_path, 90)
    assert all((path, start) in bounds and (path, stop) in bounds
               for item in items for path, start, stop in item)
    assert [sum(stop - start for _, start, stop in item) for item in items] == [80, 90, 80, 80, 50]
    # only a group larger than an item is cut (each piece then decodes that group)
    for item in plan_slices(tmp_path, 25):
        assert sum(stop - start for _, start, stop in item) <= 25
        for p, a, b in groups:
            touched = [(max(a, start), min(b, stop)) for path, start, stop in item
                       if path == p and start < b and a < stop]
            assert not touched or sum(y - x for x, y in touched) == b - a or b - a > 25


def test_schema_unified_over_files(tmp_path):
    pq.write_table(pa.table({"id": [0, 1], "reasoning": pa.nulls(2)}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [2], "reasoning": ["why"], "extra": [1.5]}),
                   tmp_path / "b.parquet")
    schema = parquet_schema(tmp_path)
    assert schema.field("reasoning").type == pa.string()
    items = plan_slices(tmp_path, 10)
    table = read_slices(pd.DataFrame({"item": [0], "slices": [json.dumps(items[0])]}), schema)
    assert table.schema == schema
    assert table.to_pydict() == {"id": [0, 1, 2], "reasoning": [None, None, "why"],
                                 "extra": [None, None, 1.5]}


def test_done_marks_count_each_item_once(tmp_path):
    (tmp_path / "in").mkdir()
    _files(tmp_path / "in", [6, 4])
    items = plan_slices(tmp_path / "in", 5)
    batches = [pa.table({"item": [i], "slices": [json.dumps(it)]}) for i, it in enumerate(items)]
    marks, seen = tmp_path / "marks", {}
    marks.mkdir()
    mark_done(batches[0], str(marks))
    assert rows_done(marks, seen) == 5
    mark_done(batches[0], str(marks))         # a retried item rewrites its own mark
    mark_done(batches[1], str(marks))
    assert rows_done(marks, seen) == 10


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    _files(tmp_path, [3])
    (tmp_path / "part-00001.parquet").write_text("not parquet")
    with pytest.raises(DistillError, match="(?s)part-00001.parquet: not a readable Parquet.*fix:"):
        plan_slices(tmp_path, 10)
