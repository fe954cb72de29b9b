"""A prompt without a reference answer takes its samples' majority answer (data.majority):
math-verify equivalence groups the answers, ties and low agreement reject the prompt as
no_reference, rows say where their reference came from, and the row order changes nothing."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from distill.data.curate import curate
from distill.data.majority import majority_of
from tests.data.test_curate import _config


def test_the_largest_equivalent_group_wins_and_a_tie_gives_none():
    assert majority_of(["\\frac{1}{2}", "0.5", "3", None]) == ("\\frac{1}{2}", 0.5)
    assert majority_of(["0.5", "\\frac{1}{2}", "3", "1/2"]) == ("0.5", 0.75)
    assert majority_of(["1", "2", "2", "1"]) == (None, 0.5)          # a tie: no majority
    assert majority_of([None, None]) == (None, 0.0)


def majority_traces() -> pd.DataFrame:
    """p-maj: no reference, 4 of 5 samples say 22 (one as 22.0); p-tie: no reference, 2 say 7,
    2 say 8; p-low: no reference, answers all differ; p-given: reference 5."""
    answers = {"p-maj": (None, ["22", "22.0", "23", "22", "22"]),
               "p-tie": (None, ["7", "8", "8", "7"]),
               "p-low": (None, ["1", "2", "3"]),
               "p-given": ("5", ["5", "6"])}
    rows = []
    for pid, (ref, said) in answers.items():
        for i, a in enumerate(said):
            text = f"Working {pid} sample {i}. The answer is \\boxed{{{a}}}."
            rows.append({"prompt_id": pid, "sample_index": i, "request_id": f"{pid}:{i}",
                         "problem": f"Problem {pid}?", "reference": ref, "text": text,
                         "completion_tokens": len(text.split())})
    return pd.DataFrame(rows)


def majority_config(min_agreement: float = 0.6):
    return _config(verify={"method": "math", "workers": 1,
                           "majority_reference": {"enabled": True, "min_agreement": min_agreement}},
                   filters={"wrong_answer": {"enabled": True}, "too_short": {"min_tokens": 1}},
                   selection={"max_per_prompt": 10}, dedupe_responses=None)


def _bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.sort_values("request_id").reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


def test_curate_takes_the_majority_as_reference_and_says_so():
    out = curate(majority_traces(), majority_config()).set_index("request_id")
    maj = out.loc[[f"p-maj:{i}" for i in range(5)]]
    assert maj["reference"].tolist() == ["22"] * 5                # first of the group, canonical
    assert maj["reference_source"].eq("majority").all()
    assert maj["majority_agreement"].tolist() == [pytest.approx(0.8)] * 5
    assert maj["keep"].tolist() == [True, True, False, True, True]   # 22.0 is 22; 23 is wrong
    assert out.loc["p-maj:2", "reject_reason"] == "wrong_answer"
    for pid in ("p-tie", "p-low"):                                  # a tie; agreement 1/3
        rows = out[out["prompt_id"] == pid]
        assert rows["reject_reason"].eq("no_reference").all() and rows["reference_source"].isna().all()
    given = out[out["prompt_id"] == "p-given"]
    assert given["reference_source"].eq("given").all() and given["reference"].eq("5").all()
    assert given["keep"].tolist() == [True, False]
    # agreement 0.8 is not enough at 0.9: p-maj is rejected too
    strict = curate(majority_traces(), majority_config(0.9))
    assert strict.loc[strict["prompt_id"] == "p-maj", "reject_reason"].eq("no_reference").all()


def test_the_row_order_does_not_change_the_majority():
    df = majority_traces()
    first = curate(df, majority_config())
    for seed in (1, 2):
        again = curate(df.sample(frac=1, random_state=seed).reset_index(drop=True), majority_config())
        assert _bytes(again) == _bytes(first)


def test_off_by_default_rows_keep_their_columns():
    out = curate(majority_traces(), _config(verify={"method": "math", "workers": 1}))
    assert "reference_source" not in out.columns
    assert out.loc[out["prompt_id"] == "p-maj", "correct"].isna().all()   # nothing to compare
