"""The R1 rejection rules: each fires on its case and not on clean rows; real traces; ordering."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from distill.data.filters import FILTERS, FilterConfig, apply_filters, duplicate_ngram_share
from distill.data.parsing import parse_frame
from distill.data.verify import VerifyConfig, verify_frame
from distill.pipeline.errors import DistillError

TRACES = Path(__file__).parents[1] / "fixtures" / "r1traces"
CLEAN_REASONING = " ".join(f"Step {i}: we multiply {i} by {i + 1} to get {i * (i + 1)}, and "
                           f"check it against θ = π/{i + 2}." for i in range(40))


def rows(n: int = 1, **columns) -> pd.DataFrame:
    """n clean rows that pass every rule, with `columns` overriding."""
    base = {"prompt": "Compute the sum of the first 40 products.", "task": "math",
            "reasoning": CLEAN_REASONING, "answer_text": "The sum is $\\boxed{22140}$.",
            "final_answer": "22140", "think_closed": True, "finish_reason": "stop",
            "correct": True, "completion_tokens": 900}
    base.update(columns)
    return pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in base.items()})


def fired(reason: str, df: pd.DataFrame, cfg: FilterConfig | None = None) -> list[bool]:
    out = FILTERS[reason](df, cfg or FilterConfig())
    assert out.index.equals(df.index) and set(out.dropna()) <= {reason}
    return out.notna().tolist()


def test_clean_rows_pass_every_rule():
    df = rows(3)
    assert apply_filters(df).isna().all()
    assert all(not any(fired(name, df)) for name in FILTERS)


def test_truncated():
    df = rows(3, finish_reason=["stop", "length", "stop"], think_closed=[True, True, False])
    assert fired("truncated", df) == [False, True, True]
    assert fired("truncated", df.drop(columns="finish_reason")) == [False, False, True]
    with pytest.raises(DistillError, match="(?s)finish_reason.*think_closed.*parse_frame"):
        FILTERS["truncated"](df.drop(columns=["finish_reason", "think_closed"]))


def test_no_answer_depends_on_task():
    df = rows(4, answer_text=["ok", "  ", "ok", "```py\nprint(1)\n```"],
              final_answer=["1", "1", None, None], task=["math", "math", "math", "code"])
    assert fired("no_answer", df) == [False, True, True, False]


def test_wrong_answer_and_undecided():
    df = rows(3, correct=[True, False, None])
    assert fired("wrong_answer", df) == [False, True, False]
    assert fired("undecided", df) == [False, False, True]
    lenient = FilterConfig(wrong_answer={"reject_undecided": False})
    assert fired("undecided", df, lenient) == [False, False, False]
    nullable = df.assign(correct=pd.array([True, False, None], dtype="boolean"))
    assert fired("wrong_answer", nullable) == [False, True, False]
    assert fired("undecided", nullable) == [False, False, True]


def test_language_mix():
    chinese_slip = CLEAN_REASONING[:1500] + " 所以我们需要计算这个和的值然后检查答案是否正确" * 4
    zh_prompt = "计算前四十个乘积的和。"
    zh_reasoning = "我们计算 $\\sum_{i=1}^{40} i(i+1)$，" + "先求每一项再相加，得到结果。" * 10
    df = rows(5, reasoning=[CLEAN_REASONING + " café naïve", chinese_slip, zh_reasoning,
                            zh_reasoning + " это неправильно, давайте проверим ещё раз" * 3,
                            "短"],
              prompt=["Compute it.", "Compute it.", zh_prompt, zh_prompt, "Compute it."])
    # Greek and accented Latin are fine in English; Latin (LaTeX) is fine in Chinese; Cyrillic
    # in a Chinese trace and Chinese in an English one are not; 1 letter is too few to judge.
    assert fired("language_mix", df) == [False, True, False, True, False]
    assert fired("language_mix", df.drop(columns="prompt")) == [False, True, True, True, False]


def test_language_mix_judges_short_cjk_reasoning_by_words_not_letters():
    zh = "我们要算十一加十一。十一加十一等于二十二，所以答案是二十二，检查无误。"   # 34 characters
    english = ("We add 11 and 11 to get 22, which is the answer here: 11 + 11 = 22, so the sum "
               "of the two numbers is 22 and we are done with it now. ")
    df = rows(6, prompt="What is 11 + 11?",
              reasoning=[zh, zh + " So 22.", english * 3 + "(勾股 aside)", english + "Let θ = π.",
                         "十一加十一得二十二", english * 3 + " 勾股定理"])
    # Chinese for an English prompt is judged even when short (a character is about a word) and
    # flagged; a couple of CJK or Greek symbols in English are not; nine characters are too few.
    assert fired("language_mix", df) == [True, True, False, False, False, False]
    assert fired("language_mix", df.assign(prompt="十一加十一等于多少？")) == [False] * 6


def test_long_paragraph():
    wall = "word " * 700  # 3,500 characters, no blank line
    df = rows(3, reasoning=[wall, wall.replace("word word ", "word\n\nword ", 5), CLEAN_REASONING])
    assert fired("long_paragraph", df) == [True, True, False]
    split = wall[:1500] + "\n\n" + wall[1500:]
    assert fired("long_paragraph", rows(1, reasoning=split)) == [False]


def test_code_in_reasoning():
    block = (CLEAN_REASONING + "\n\nLet me check:\n```python\n"
             "print(sum(i*(i+1) for i in range(1, 41)))\n```\n")
    inline = CLEAN_REASONING + " the fence ``` in a sentence and `x` inline code"
    df = rows(3, reasoning=[block, block, inline], task=["math", "code", "math"])
    assert fired("code_in_reasoning", df) == [True, False, False]
    assert fired("code_in_reasoning", df.drop(columns="task")) == [True, True, False]


def test_repetition():
    loop = CLEAN_REASONING[:800] + " Alternatively, group it the other way: same. So, 121." * 60
    df = rows(3, reasoning=[loop, CLEAN_REASONING, "same same same " * 20])
    assert duplicate_ngram_share(loop) > 0.5 and duplicate_ngram_share(CLEAN_REASONING) == 0.0
    assert fired("repetition", df) == [True, False, False]  # the last is under min_words
    strict = FilterConfig(repetition={"min_words": 10})
    assert fired("repetition", df, strict) == [True, False, True]


def test_token_length_bounds_use_the_column_else_an_estimate():
    df = rows(3, completion_tokens=[5, 900, 40000])
    assert fired("too_short", df) == [True, False, False]
    assert fired("too_long", df) == [False, False, True]
    estimated = rows(2, reasoning=["a b", "word " * 30000], answer_text="x", completion_tokens=None)
    assert fired("too_short", estimated) == [True, False]  # 3 words * 1.65 < 10
    assert fired("too_long", estimated) == [False, True]   # 30,001 words * 1.65 > 32,768
    mixed = pd.concat([rows(1, completion_tokens=5.0), estimated.iloc[[1]]], ignore_index=True)
    mixed["completion_tokens"] = mixed["completion_tokens"].astype(float)  # 5.0, NaN: estimate
    assert fired("too_short", mixed) == [True, False]
    assert fired("too_long", mixed) == [False, True]


def test_an_empty_response_is_named_so_not_truncated():
    """A teacher that sent nothing back (null, blank, empty think tags) is `empty_response`;
    one that stopped inside its reasoning stays `truncated`, one with no answer `no_answer`."""
    from distill.data.parsing import parse_frame

    texts = [None, "  \n", "<think></think>", "<think>Let me think", "<think>x</think>  ",
             "<think>ok</think>The sum is $\\boxed{22140}$."]
    parsed = parse_frame(pd.DataFrame({"text": texts}), text_column="text")
    df = rows(len(texts)).drop(columns=["reasoning", "answer_text", "final_answer",
                                        "think_closed"]).join(parsed.drop(columns="text"))
    assert apply_filters(df).tolist() == ["empty_response", "empty_response", "empty_response",
                                          "truncated", "no_answer", None]
    assert not any(fired("empty_response", df, FilterConfig(truncated={"enabled": False})))
    at_cap = df.assign(finish_reason=["length"] * len(texts))   # blank at the token cap
    assert apply_filters(at_cap).tolist()[:5] == ["truncated"] * 5


def test_apply_filters_first_reason_in_order_with_the_input_index():
    df = rows(5, finish_reason=["length", "stop", "stop", "stop", "stop"],
              correct=[False, False, None, True, True],
              completion_tokens=[900, 900, 900, 5, 900])
    df.index = ["a", "b", "c", "d", "e"]
    reasons = apply_filters(df)
    assert reasons.to_dict() == {"a": "truncated", "b": "wrong_answer", "c": "undecided",
                                 "d": "too_short", "e": None}
    off = FilterConfig(truncated={"enabled": False})
    assert apply_filters(df, off)["a"] == "wrong_answer"
    assert not any(fired("truncated", df, off))  # a disabled rule called alone flags nothing


def test_a_pyarrow_table_is_accepted():
    df = rows(2, correct=[True, False])
    table = pa.Table.from_pandas(df, preserve_index=False)
    assert apply_filters(table).tolist() == [None, "wrong_answer"]
    assert FILTERS["wrong_answer"](table).tolist() == [None, "wrong_answer"]


def test_missing_columns_name_the_fix():
    with pytest.raises(DistillError, match="(?s)'wrong_answer'.*'correct'.*fix: .*verify_frame"):
        FILTERS["wrong_answer"](rows(1).drop(columns="correct"))
    with pytest.raises(DistillError, match="(?s)'repetition'.*'reasoning'.*fix: .*parse_frame"):
        FILTERS["repetition"](rows(1).drop(columns="reasoning"))
    with pytest.raises(DistillError, match="(?s)'truncated'.*think_closed.*fix: "):
        apply_filters(rows(1).drop(columns=["finish_reason", "think_closed"]))
    with pytest.raises(DistillError, match="(?s)default_script 'klingon'.*fix: use one of"):
        FILTERS["language_mix"](rows(1), FilterConfig(language_mix={"default_script": "klingon"}))
    with pytest.raises(ValueError, match="max_sahre"):
        FilterConfig(language_mix={"max_sahre": 0.1})


def test_real_traces_funnel():
    raw = pd.concat([pd.read_json(p, lines=True) for p in sorted(TRACES.glob("*.jsonl"))],
                    ignore_index=True)
    df = parse_frame(raw.drop(columns="answer_text"), text_column="full_response")
    df["correct"] = verify_frame(df, VerifyConfig(workers=1), reference_column="ground_truth")
    df["completion_tokens"] = df["total_generated_tokens"]
    reasons = apply_filters(df)
    assert reasons.value_counts().to_dict() == {"wrong_answer": 6, "truncated": 1,
                                                "long_paragraph": 1}
    key = df["model_short_name"] + "/" + df["item_id"]
    assert key[reasons == "truncated"].tolist() == ["R1-Distill-Qwen-7B/math500_0009"]
    # a 3,860-character bullet list enumerating multiples of 30
    assert key[reasons == "long_paragraph"].tolist() == ["R1-Distill-Llama-8B/math500_0010"]
    # the truncated trace also loops: repetition flags it when asked on its own
    looping = FILTERS["repetition"](df, FilterConfig()).notna()
    assert key[looping].tolist() == ["R1-Distill-Qwen-7B/math500_0009"]
    assert np.isclose(duplicate_ngram_share(df.loc[looping.idxmax(), "reasoning"]), 0.517,
                      atol=0.01)
