"""curate(): verdicts that depend on the rows only, dedupe scoped to a prompt, errors with a fix."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from distill.data.curate import CurateConfig, canonical_order, curate
from distill.pipeline.errors import DistillError

QUESTIONS = {"p-add": ("What is 11 + 11?", "22"), "p-sub": ("What is 30 - 8?", "22"),
             "p-mul": ("What is 2 * 11?", "22"), "p-big": ("What is 40 + 9?", "49")}
LONG = " ".join(f"Step {i}: add {i} to the running total, then check it once more."
                for i in range(40))


def _config(**update) -> CurateConfig:
    cfg = {"parse": {"think_required": False}, "verify": {"method": "none"},
           "filters": {"truncated": {"enabled": False}, "no_answer": {"enabled": False},
                       "wrong_answer": {"enabled": False}, "too_short": {"min_tokens": 1}},
           "decontam": {"enabled": False}, "selection": {"max_per_prompt": 2}}
    return CurateConfig.model_validate({**cfg, **update})


def traces(k: int = 5) -> pd.DataFrame:
    """k samples per prompt from a small pool of answers: exact and near duplicates within a
    prompt, the same short answer across prompts, and more survivors than the cap keeps."""
    rng = np.random.default_rng(7)
    rows = []
    for pid, (question, answer) in QUESTIONS.items():
        for i in range(k):
            pick = int(rng.integers(0, 4))
            text = [f"The answer is \\boxed{{{answer}}}.", f"So we get \\boxed{{{answer}}}.",
                    LONG + f" The answer is \\boxed{{{answer}}}.",
                    LONG.replace("once more", "again") + f" Hence \\boxed{{{answer}}}."][pick]
            rows.append({"prompt_id": pid, "sample_index": i, "request_id": f"{pid}:{i}",
                         "problem": question, "reference": answer, "text": text,
                         "completion_tokens": len(text.split())})
    return pd.DataFrame(rows)


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.sort_values("request_id").reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.mark.parametrize("drop", [[], ["sample_index"], ["sample_index", "request_id"]])
def test_shuffled_traces_give_byte_identical_kept_and_rejected_sets(drop):
    base = traces().drop(columns=drop)
    if "request_id" in drop:
        base["request_id"] = base["prompt_id"] + "/" + base["text"].str.len().astype(str)
    cfg = _config(dedupe_across_prompts={"min_chars": 100})
    first = curate(base, cfg)
    assert first["reject_reason"].value_counts().to_dict().keys() >= {
        "duplicate_exact", "over_max_per_prompt"}
    for seed in range(4):
        shuffled = base.sample(frac=1, random_state=seed)
        out = curate(shuffled, cfg)
        assert out.index.equals(shuffled.index)        # rows come out in the order they came in
        for keep in (True, False):
            a, b = first[first["keep"] == keep], out[out["keep"] == keep]
            assert _parquet(a) == _parquet(b), (seed, keep)


def test_canonical_order_is_a_function_of_the_rows():
    df = traces()
    order = canonical_order(df)
    assert sorted(order) == list(range(len(df)))
    shuffled = df.sample(frac=1, random_state=1)
    assert (canonical_order(shuffled) == order[shuffled.index.to_numpy()]).all()
    assert df.iloc[np.argsort(order)]["request_id"].tolist()[:2] == ["p-add:0", "p-add:1"]


def test_response_dedupe_stays_within_a_prompt_by_default():
    df = pd.DataFrame([{"prompt_id": pid, "sample_index": 0, "request_id": f"{pid}:0",
                        "problem": q, "reference": a, "text": f"The answer is \\boxed{{{a}}}."}
                       for pid, (q, a) in QUESTIONS.items()])
    out = curate(df, _config())
    assert out["keep"].all()        # 30 - 8 = 22 is no duplicate of 11 + 11 = 22
    as_in_r1_recipes = _config(dedupe_responses={"columns": ["text"], "threshold": 0.8})
    assert as_in_r1_recipes.dedupe_responses.within == "prompt_id"
    assert curate(df, as_in_r1_recipes)["keep"].all()
    across = curate(df, _config(dedupe_responses={"within": None}))
    assert across["reject_reason"].value_counts().to_dict() == {"duplicate_exact": 2}
    on = _config(dedupe_across_prompts={})
    assert on.dedupe_across_prompts.columns == ["reasoning"]
    assert on.dedupe_across_prompts.min_chars == 500
    assert curate(df, on)["keep"].all()       # short texts are never judged across prompts


def test_cross_prompt_near_duplicate_reasoning_is_opt_in():
    df = pd.DataFrame([{"prompt_id": pid, "sample_index": 0, "request_id": f"{pid}:0",
                        "problem": q, "reference": a,
                        "text": f"<think>\n{LONG} So it is {a}.\n</think>\n\\boxed{{{a}}}"}
                       for pid, (q, a) in QUESTIONS.items()])
    cfg = _config(parse={"think_required": True})
    assert curate(df, cfg)["keep"].all()
    out = curate(df, cfg.model_copy(update={"dedupe_across_prompts": _config(
        dedupe_across_prompts={}).dedupe_across_prompts}))
    assert out["reject_reason"].tolist() == [None, "cross_prompt_duplicate_exact",
                                             "cross_prompt_duplicate_exact",
                                             "cross_prompt_duplicate_near"]


def test_missing_trace_columns_name_the_column_and_the_fix():
    with pytest.raises(DistillError, match="(?s)curate: column 'reference'.*fix: curate reads"):
        curate(traces().drop(columns="reference"), _config())
    with pytest.raises(DistillError, match="(?s)dedupe: column 'answer'.*fix: "):
        curate(traces(), _config(dedupe_responses={"columns": ["answer"]}))
