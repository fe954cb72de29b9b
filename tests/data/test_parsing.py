"""Trace parsing: every output shape, final-answer extraction, and the real R1-Distill traces."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from distill.data.parsing import extract_final_answer, parse_frame, parse_trace
from distill.pipeline.errors import DistillError

TRACES = Path(__file__).parents[1] / "fixtures" / "r1traces"


def load_traces() -> pd.DataFrame:
    frames = [pd.read_json(p, lines=True) for p in sorted(TRACES.glob("*.jsonl"))]
    return pd.concat(frames, ignore_index=True)


def test_closed_think_block():
    t = parse_trace("<think>\nLet me add: 2+2=4.\n</think>\n\nSo the answer is $\\boxed{4}$.")
    assert (t.reasoning, t.think_closed, t.n_think_blocks) == ("Let me add: 2+2=4.", True, 1)
    assert t.answer == "So the answer is $\\boxed{4}$."
    assert t.final_answer == "4"


def test_reasoning_in_a_separate_field():
    t = parse_trace("The answer is $\\boxed{7}$.", reasoning="3+4 is 7")
    assert (t.reasoning, t.answer, t.think_closed, t.final_answer) == (
        "3+4 is 7", "The answer is $\\boxed{7}$.", True, "7")
    cut = parse_trace("", reasoning="still thinking about")  # the server stopped in reasoning
    assert (cut.think_closed, cut.answer, cut.final_answer) == (False, "", None)


def test_missing_opening_tag_from_a_prefilled_template():
    t = parse_trace("Okay, so x = 3.\n</think>\n\nThus $x = \\boxed{3}$.")
    assert (t.reasoning, t.think_closed, t.n_think_blocks) == ("Okay, so x = 3.", True, 1)
    assert t.final_answer == "3"


def test_unclosed_tag_is_truncated():
    t = parse_trace("<think>Let me compute \\boxed{5} maybe, then")
    assert (t.think_closed, t.answer, t.final_answer) == (False, "", None)
    assert t.reasoning == "Let me compute \\boxed{5} maybe, then"


def test_several_think_blocks():
    t = parse_trace("<think>first</think>interlude<think>second</think>Answer: \\boxed{2}")
    assert t.n_think_blocks == 2 and t.think_closed
    assert t.reasoning == "first\n\ninterlude\n\nsecond"
    assert (t.answer, t.final_answer) == ("Answer: \\boxed{2}", "2")
    reopened = parse_trace("<think>a</think>b<think>c, still going")
    assert (reopened.think_closed, reopened.n_think_blocks, reopened.answer) == (False, 2, "")


def test_empty_think_block():
    t = parse_trace("<think>\n\n</think>\n\nThe final answer is 12.")
    assert (t.reasoning, t.think_closed, t.n_think_blocks, t.final_answer) == ("", True, 1, "12")


def test_no_tags_depends_on_think_required():
    text = "We factor and get \\boxed{6}."
    reasoning_teacher = parse_trace(text)
    assert (reasoning_teacher.think_closed, reasoning_teacher.answer) == (False, "")
    assert reasoning_teacher.final_answer is None
    plain = parse_trace(text, think_required=False)
    assert (plain.reasoning, plain.answer, plain.think_closed, plain.n_think_blocks) == (
        "", text, True, 0)
    assert plain.final_answer == "6"


def test_final_answer_comes_from_the_answer_part_only():
    t = parse_trace("<think>maybe \\boxed{1}</think>I cannot decide.")
    assert t.final_answer is None


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{\\frac{1}{2}} and then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
    ("\\boxed{\\left\\{ 1, 2 \\right\\}}", "\\left\\{ 1, 2 \\right\\}"),
    ("\\fbox{x^{2}}", "x^{2}"),
    ("\\boxed {7}", "7"),
    ("thus \\boxed 5.", "5"),
    ("\\boxed{8} then \\boxed{\\frac{1}{2", "8"),  # the last one is cut off: take the earlier
    ("Final Answer: The final answer is $12$. I hope it is correct.", "12"),
    ("**Final Answer:** $x = 3$", "x = 3"),
    ("The final answer is \\(\\pi\\).", "\\pi"),
    ("no answer here", None),
    ("\\boxed{}", None),
    ("", None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_parse_frame_columns_index_and_missing_values():
    df = pd.DataFrame({"text": ["<think>r</think>\\boxed{1}", None, "cut <think>off"],
                       "rc": ["sep", None, float("nan")]}, index=[10, 11, 12])
    out = parse_frame(df, text_column="text", reasoning_column="rc")
    assert list(out.index) == [10, 11, 12] and "reasoning" not in df.columns
    assert out["think_closed"].dtype == bool and out["n_think_blocks"].dtype == "int64"
    assert out.loc[10, "reasoning"] == "sep" and out.loc[10, "final_answer"] == "1"
    assert out.loc[11, "final_answer"] is None and not out.loc[11, "think_closed"]
    assert not out.loc[12, "think_closed"] and out.loc[12, "reasoning"] == "cut\n\noff"


def test_parse_frame_names_a_missing_column():
    with pytest.raises(DistillError, match="(?s)text_column.*'full_response'.*fix: pass"):
        parse_frame(pd.DataFrame({"text": ["x"]}), text_column="full_response")


def test_real_r1_distill_traces():
    raw = load_traces()
    out = parse_frame(raw.rename(columns={"answer_text": "source_answer"}),
                      text_column="full_response")
    cut = out["total_generated_tokens"] >= 32768
    assert cut.sum() == 1
    row = out[cut].iloc[0]
    assert "</think>" not in row["full_response"]  # stopped at 32,768 tokens mid-reasoning
    assert (row["think_closed"], row["answer_text"], row["final_answer"]) == (False, "", None)
    done = out[~cut]
    assert done["think_closed"].all() and (done["n_think_blocks"] == 1).all()
    # The source split the same traces; our parts match theirs and so do the final answers.
    assert (done["reasoning"] == done["reasoning_trace"].str.strip()).all()
    assert (done["answer_text"] == done["source_answer"].str.strip()).all()
    assert (done["final_answer"] == done["extracted_answer"]).all()


LOOPING = {  # what a looping teacher writes: each took seconds to minutes when parsing was quadratic
    "unclosed boxes": "<think>x</think>" + "\\boxed{" * 50_000,              # 350 KB
    "nested boxes": "</think>" + "\\boxed{" * 25_000 + "}" * 25_000,
    "a blank run in a final-answer line": "</think>The final answer is x" + " " * 350_000 + "y",
    "escapes": "</think>\\boxed{" + "\\" * 350_000,
}


@pytest.mark.parametrize("name", LOOPING)
def test_pathological_texts_parse_in_linear_time(name):
    import time

    start = time.perf_counter()
    parse_trace(LOOPING[name])
    assert time.perf_counter() - start < 1.0  # about 0.05 s here; quadratic took minutes


def test_a_box_after_unclosed_ones_and_before_them():
    assert extract_final_answer("\\boxed{3} and " + "\\boxed{" * 1000) == "3"
    assert extract_final_answer("\\boxed{" * 1000 + "\\boxed{4}") == "4"
    assert extract_final_answer("\\boxed{\\boxed{}} x") == "\\boxed{}"


def test_a_row_over_its_parse_budget_is_rejected_and_curation_goes_on():
    from distill.data.curate import CurateConfig, curate
    from distill.data.parsing import ParseTimeout

    with pytest.raises(ParseTimeout):
        parse_trace("</think>\\boxed{1}", budget_s=0)
    huge = "<think>r</think>" + "\\boxed{" * 1_000_000  # 7 MB: about 1 s to parse in full
    rows = pd.DataFrame({"prompt_id": ["a", "b"], "problem": ["1+1?", "2+2?"],
                         "reference": ["2", "4"],
                         "text": ["<think>r</think>\\boxed{2}", huge]})
    cfg = CurateConfig.model_validate({"parse": {"timeout_s": 0.05}, "verify": {"method": "none"},
                                       "filters": {"wrong_answer": {"enabled": False},
                                                   "too_short": {"min_tokens": 1}}})
    out = curate(rows, cfg)
    assert out["reject_reason"].tolist() == [None, "parse_timeout"] and out["keep"].tolist() == [
        True, False]
    assert (out.loc[1, "final_answer"], out.loc[1, "answer_text"]) == (None, "")
    assert "parse_error" not in out
    framed = parse_frame(rows, timeout_s=0.05)
    assert framed["parse_error"].tolist() == [None, "parse_timeout"]
    assert "parse_error" not in parse_frame(rows)  # no budget: no column
