"""Mixing curated sources by weight (data.mixing): shares follow the weights, the most rows are
kept, and which rows is decided by their ids, not their order."""
from __future__ import annotations

import pandas as pd
import pytest

from distill.data.mixing import mix_targets, mixed_out


@pytest.mark.parametrize("counts, weights, expected", [
    ({"r": 600, "n": 400}, {"r": 3, "n": 1}, {"r": 600, "n": 200}),
    ({"r": 600, "n": 400}, {"r": 1, "n": 1}, {"r": 400, "n": 400}),
    ({"r": 600, "n": 200}, {"r": 3, "n": 1}, {"r": 600, "n": 200}),   # the R1 mix: all kept
    ({"r": 0, "n": 50}, {"r": 1, "n": 1}, {"r": 0, "n": 50}),         # an empty source
    ({"a": 10, "b": 10, "c": 10}, {"a": 1, "b": 2, "c": 2}, {"a": 5, "b": 10, "c": 10}),
])
def test_targets(counts, weights, expected):
    assert mix_targets(counts, weights) == expected


def test_the_rows_left_out_depend_on_ids_not_order():
    ids = pd.Series([f"row-{i}" for i in range(30)])
    sources = pd.Series(["a"] * 20 + ["b"] * 10)
    out = mixed_out(ids, sources, {"a": 1, "b": 1})
    assert out[sources == "a"].sum() == 10 and not out[sources == "b"].any()
    shuffled = ids.sample(frac=1, random_state=3)
    again = mixed_out(shuffled, sources[shuffled.index], {"a": 1, "b": 1})
    assert set(ids[out]) == set(shuffled[again])


def test_a_source_without_weight_is_an_error():
    with pytest.raises(ValueError, match="no weight"):
        mixed_out(pd.Series(["x"]), pd.Series(["c"]), {"a": 1})


def test_weights_go_on_every_source_or_none():
    from pydantic import ValidationError

    from distill.workflows.recipe import PromptsConfig

    with pytest.raises(ValidationError, match="weights are set on \\['a'\\] but not on the other"):
        PromptsConfig(sources=[{"name": "a", "source": "x.jsonl", "weight": 2},
                               {"name": "b", "source": "y.jsonl"}])
    with pytest.raises(ValidationError, match="two sources are named 'a'"):
        PromptsConfig(sources=[{"name": "a", "source": "x.jsonl"}, {"name": "a", "source": "y.jsonl"}])
