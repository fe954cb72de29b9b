"""pipeline.partition.by_part: the rows of a part meet in one task, every row exactly once."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def ray_local():
    from distill.pipeline.cluster import ensure_ray

    ray = ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def _summary(rows):
    """What a part's task saw: its part numbers, ids in order, and a text column's type."""
    return {"parts": sorted(set(rows["part"].to_pylist())), "ids": rows["id"].to_pylist(),
            "note": str(rows.schema.field("note").type)}


def test_each_part_meets_once_in_block_order(ray_local):
    rng = np.random.default_rng(3)
    blocks = []
    for b, n in enumerate([40, 0, 25, 60]):
        part = rng.integers(0, 5, n)
        part[part == 3] = 4                           # part 3 has no rows anywhere
        note = [None] * n if b == 0 else [f"n{i}" for i in range(n)]   # null-typed in one block
        blocks.append(pd.DataFrame({"id": np.arange(n) + 1000 * b, "part": part, "note": note}))
    ds = ray_local.data.from_pandas(blocks)
    from distill.pipeline.partition import by_part

    got = by_part(ds, "part", 5, lambda rows: _summary(rows))
    whole = pd.concat(blocks, ignore_index=True)
    expected = [whole.loc[whole["part"] == p, "id"].tolist() for p in (0, 1, 2, 4)]
    assert [g["parts"] for g in got] == [[0], [1], [2], [4]]       # part order, none for 3
    assert [g["ids"] for g in got] == expected                     # block order, then row order
    assert {g["note"] for g in got} <= {"string", "large_string"}  # null promoted to text
    assert sorted(i for g in got for i in g["ids"]) == sorted(whole["id"])


def test_one_part_and_no_rows(ray_local):
    from distill.pipeline.partition import by_part

    ds = ray_local.data.from_pandas(pd.DataFrame({"id": [3, 1, 2], "part": [0, 0, 0],
                                                  "note": ["a", "b", "c"]}))
    assert [g["ids"] for g in by_part(ds, "part", 1, _summary)] == [[3, 1, 2]]
    assert by_part(ds.filter(lambda r: False), "part", 2, _summary) == []


def test_a_part_number_out_of_range_is_named(ray_local):
    from distill.pipeline.partition import by_part

    ds = ray_local.data.from_pandas(pd.DataFrame({"id": [1, 2], "part": [0, 7], "note": "x"}))
    with pytest.raises(Exception, match="column 'part' holds part 7, outside 0..3"):
        by_part(ds, "part", 4, _summary)


def test_aligned_blocks_go_whole_and_are_checked(ray_local):
    """aligned=True: a block per part goes to fn as it is; a block holding two parts fails."""
    from distill.pipeline.partition import by_part

    blocks = [pd.DataFrame({"id": [2 * p, 2 * p + 1], "part": p, "note": "x"}) for p in range(3)]
    got = by_part(ray_local.data.from_pandas(blocks), "part", 3, _summary, aligned=True)
    assert [(g["parts"], g["ids"]) for g in got] == [([0], [0, 1]), ([1], [2, 3]), ([2], [4, 5])]
    mixed = ray_local.data.from_pandas([pd.DataFrame({"id": [1, 2], "part": [0, 1], "note": "x"})])
    with pytest.raises(Exception, match="rows of several parts met in one task"):
        by_part(mixed, "part", 2, _summary, aligned=True)


def test_rows_without_a_part_number_are_named(ray_local):
    from distill.pipeline.partition import by_part

    ds = ray_local.data.from_pandas(pd.DataFrame({"id": [1, 2], "part": [0.0, None], "note": "x"}))
    with pytest.raises(Exception, match="column 'part' has 1 rows without a part number"):
        by_part(ds, "part", 2, _summary)
