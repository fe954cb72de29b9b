"""Per-prompt selection: the pass-rate window and the cap, on synthetic k-sample groups."""
from __future__ import annotations

import pandas as pd
import pytest

from distill.data.selection import SelectionConfig, pass_rates, select_samples
from distill.pipeline.errors import DistillError


@pytest.fixture()
def samples() -> pd.DataFrame:
    """Three prompts x 4 samples: p0 always solved, p1 half, p2 never (one undecided)."""
    return pd.DataFrame({
        "prompt_id": ["p0"] * 4 + ["p1"] * 4 + ["p2"] * 4,
        "sample_index": [3, 2, 1, 0] * 3,
        "correct": [True] * 4 + [True, False, True, False] + [False, False, None, False],
        "completion_tokens": [400, 300, 200, 100, 50, 60, 70, 80, 10, 20, 30, 40],
    }, index=[f"r{i}" for i in range(12)])


def test_defaults_keep_everything(samples):
    assert select_samples(samples).isna().all()


def test_pass_rates_count_undecided_as_unsolved(samples):
    rates = pass_rates(samples)
    assert rates.tolist() == [1.0] * 4 + [0.5] * 4 + [0.0] * 4


def test_pass_rate_window_inclusive(samples):
    cfg = SelectionConfig(pass_rate_min=0.5, pass_rate_max=0.5)
    out = select_samples(samples, cfg)
    assert out.tolist() == ["pass_rate_window"] * 4 + [None] * 4 + ["pass_rate_window"] * 4
    assert select_samples(samples, SelectionConfig(pass_rate_max=0.99))["r0"] == "pass_rate_window"


def test_rejected_rows_keep_their_reason_and_still_count_in_the_pass_rate(samples):
    rejected = pd.Series(["wrong_answer" if c is False else None for c in samples["correct"]],
                         index=samples.index, dtype=object)
    out = select_samples(samples, SelectionConfig(pass_rate_max=0.9), already_rejected=rejected)
    assert out[rejected.notna()].isna().all()  # not reasoned twice
    assert out[["r0", "r1", "r2", "r3"]].eq("pass_rate_window").all()
    assert out[["r4", "r6"]].isna().all()  # p1: rate 0.5 from all 4 samples, its 2 correct kept


def test_cap_keeps_lowest_sample_index_by_default(samples):
    out = select_samples(samples, SelectionConfig(max_per_prompt=2))
    kept = samples[out.isna()]
    assert kept.groupby("prompt_id")["sample_index"].apply(sorted).tolist() == [[0, 1]] * 3


def test_ties_follow_the_order_given_not_the_row_order(samples):
    no_index = samples.drop(columns="sample_index").assign(completion_tokens=100)
    order = pd.Series(range(12, 0, -1), index=samples.index)     # the reverse of row order
    for prefer in ("first", "shortest"):
        cfg = SelectionConfig(max_per_prompt=1, prefer=prefer)
        kept = no_index.index[select_samples(no_index, cfg, order=order).isna()]
        assert kept.tolist() == ["r3", "r7", "r11"], prefer
        shuffled = no_index.sample(frac=1, random_state=0)
        again = select_samples(shuffled, cfg, order=order[shuffled.index])
        assert sorted(shuffled.index[again.isna()]) == ["r11", "r3", "r7"], prefer


def test_cap_can_prefer_shortest(samples):
    out = select_samples(samples, SelectionConfig(max_per_prompt=1, prefer="shortest"))
    assert samples[out.isna()]["completion_tokens"].tolist() == [100, 50, 10]
    assert set(out.dropna()) == {"over_max_per_prompt"}


def test_cap_counts_only_rows_not_rejected_before(samples):
    rejected = pd.Series([None] * 12, index=samples.index, dtype=object)
    rejected[["r3", "r2"]] = "repetition"  # p0's sample indices 0 and 1
    out = select_samples(samples, SelectionConfig(max_per_prompt=1), already_rejected=rejected)
    p0 = out[samples["prompt_id"] == "p0"]
    assert p0.tolist() == ["over_max_per_prompt", None, None, None]  # index 2 (r1) is kept


def test_keep_all_correct_false_is_one_per_prompt(samples):
    out = select_samples(samples, SelectionConfig(keep_all_correct=False))
    assert out.isna().sum() == 3
    with pytest.raises(ValueError, match="keep_all_correct=True"):
        SelectionConfig(keep_all_correct=False, max_per_prompt=3)


def test_bad_input_names_the_problem(samples):
    with pytest.raises(ValueError, match="pass_rate_min"):
        SelectionConfig(pass_rate_min=0.8, pass_rate_max=0.2)
    with pytest.raises(DistillError, match="(?s)'question_id'.*fix: pass prompt_column="):
        select_samples(samples, prompt_column="question_id")
    with pytest.raises(DistillError, match="(?s)'correct'.*fix: run data.verify"):
        select_samples(samples.drop(columns="correct"), SelectionConfig(pass_rate_max=0.5))
    with pytest.raises(DistillError, match="(?s)completion_tokens.*fix: run data.parsing"):
        select_samples(samples.drop(columns="completion_tokens"),
                       SelectionConfig(max_per_prompt=1, prefer="shortest"))
    with pytest.raises(DistillError, match="no 'prompt_id'"):
        select_samples(samples.assign(prompt_id=[None] + ["p0"] * 11))
    with pytest.raises(ValueError, match="index"):
        select_samples(samples, already_rejected=pd.Series([None] * 12))
