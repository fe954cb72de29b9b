"""Evaluation scoring on hand-made answer rows: the R1 answer rules, the same rules for student
and base (template pre-fill, stop tokens), and cons@n over math-verify-equivalent answers."""
from __future__ import annotations

import pandas as pd
import pytest

from distill.engines.sampling import SamplingConfig
from distill.engines.tiny import build_tokenizer
from distill.engines.vllm import EngineSpec
from distill.evaluation.evaluate import score
from distill.evaluation.metrics import summarise
from distill.evaluation.protocol import prefill_of, render
from distill.students.chat import r1_generation_template

THINK = "<think>\n"


def rows(texts: list[str], *, reference: str = "4", prefill: str = "",
         finish: list[str] | None = None, question: str = "q1") -> pd.DataFrame:
    """Answer rows as generate_answers returns them: one question, one row per sample."""
    n = len(texts)
    return pd.DataFrame({"benchmark": "b", "question_id": question, "sample_idx": range(n),
                         "problem": "p", "reference": reference, "prefill": prefill,
                         "text": texts, "finish_reason": finish or ["stop"] * n,
                         "completion_tokens": [10] * n})


def test_unfinished_reasoning_of_an_r1_student_is_no_answer():
    """The template pre-filled `<think>\\n`: the generation is reasoning until `</think>`."""
    texts = ["Let me try: maybe \\boxed{4}? No wait...",           # cut by the token limit
             "Let me try: maybe \\boxed{4}? Hmm, so",               # stopped inside the reasoning
             "2 + 2 = 4.\n</think>\n\nThe answer is \\boxed{4}.",   # finished: an answer
             "2 + 2 = 4.\n</think>\n\nThe answer is \\boxed{4}. Let me"]  # answer, then cut
    out = score(rows(texts, prefill=THINK, finish=["length", "stop", "stop", "length"]), workers=1)
    assert out["correct"].tolist() == [False, False, True, False]
    assert out["no_answer"].tolist() == ["length", "unclosed_think", None, "length"]
    assert out["reasoning"].iloc[2] == "2 + 2 = 4."
    assert summarise(out)["pass@1"] == 0.25


def test_a_base_model_gets_the_same_rules():
    texts = ["So the answer is \\boxed{4}.", "<think>maybe \\boxed{4}", "\\boxed{4} and so on and",
             "42 + 13 = 55, so 4 - 0 = 4"]  # no box: the whole answer, read by math-verify
    out = score(rows(texts, finish=["stop", "stop", "length", "stop"]), workers=1)
    assert out["correct"].tolist() == [True, False, False, True]
    assert out["no_answer"].tolist() == [None, "unclosed_think", "length", None]
    assert out["answer_is_text"].tolist() == [False, False, False, True]


@pytest.mark.parametrize("texts, reference, cons", [
    # 0.5, \frac{1}{2} and 1/2 are one answer (3 votes) against 3 (2 votes)
    (["\\boxed{0.5}", "\\boxed{3}", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "1/2 is it: \\boxed{1/2}"],
     "\\frac{1}{2}", 1.0),
    # answers found by the whole-text fallback vote too
    (["so we get 55", "\\boxed{54}", "42 + 13 = 55, so we get 55"], "55", 1.0),
    # a tie goes to the group answered first (sample 0)
    (["\\boxed{7}", "\\boxed{8}"], "7", 1.0),
    (["\\boxed{7}", "\\boxed{8}"], "8", 0.0),
    (["\\boxed{8}", "\\boxed{7}", "\\boxed{7.0}", "\\boxed{8}"], "8", 1.0),
    # samples without an answer do not vote; none at all: wrong
    (["<think>\\boxed{5}", "\\boxed{4}", "<think>\\boxed{5}"], "4", 1.0),
    (["<think>\\boxed{4}", "<think>"], "4", 0.0),
])
def test_cons_votes_over_equivalent_answers(texts, reference, cons):
    out = score(rows(texts, reference=reference), workers=1)
    result = summarise(out)
    assert result[f"cons@{len(texts)}"] == cons


def test_cons_groups_per_question_in_sample_order():
    a = rows(["\\boxed{2}", "\\boxed{0.5}", "\\boxed{1/2}"], question="a")
    b = rows(["\\boxed{1/2}", "\\boxed{2}", "\\boxed{2.0}"], question="b")
    out = score(pd.concat([b, a], ignore_index=True).sample(frac=1, random_state=0), workers=1)
    groups = out.sort_values(["question_id", "sample_idx"])["answer_group"].tolist()
    assert groups == [0, 1, 1, 0, 1, 1]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """A Qwen2.5-like base (eos <|endoftext|>, ChatML turns end in <|im_end|>) and its R1 student."""
    root = tmp_path_factory.mktemp("tok")
    base = build_tokenizer()
    base.eos_token = "<|endoftext|>"
    base.save_pretrained(root / "base")
    student = build_tokenizer()
    student.chat_template = r1_generation_template(student.chat_template)
    student.save_pretrained(root / "student")
    return {"base": str(root / "base"), "student": str(root / "student"), "tok": base}


def test_student_and_base_get_the_same_prompt_and_stop_rules(tokenizers):
    messages = [[{"role": "user", "content": "What is 2 + 2?"}]]
    s_prompts, s_rules = render(tokenizers["student"], messages)
    b_prompts, b_rules = render(tokenizers["base"], messages)
    assert s_prompts[0] == b_prompts[0] + THINK  # the student's template forces <think>\n
    assert s_rules["prefill"] == THINK and b_rules["prefill"] == ""
    im_end = tokenizers["tok"].convert_tokens_to_ids("<|im_end|>")
    # the base's eos is <|endoftext|>, but its ChatML turn ends in <|im_end|>: stop there too
    assert b_rules["stop_tokens"] == ["<|im_end|>", "<|endoftext|>"]
    assert im_end in b_rules["stop_token_ids"] and im_end in s_rules["stop_token_ids"]
    assert b_rules["template"] == s_rules["template"] == "the model's chat template"
    spec = EngineSpec(model="m", sampling=SamplingConfig(), stop_token_ids=b_rules["stop_token_ids"])
    assert spec.sampling_params()["stop_token_ids"] == b_rules["stop_token_ids"]


@pytest.mark.parametrize("prompt, prefill", [
    ("<|im_start|>assistant\n<think>\n", THINK), ("<|im_start|>assistant\n", ""),
    ("Q: what is <think>?<|im_end|>\n<|im_start|>assistant\n", ""),
    ("<think>\nold</think>\n<|im_start|>assistant\n<think>\n", THINK)])
def test_prefill_is_an_open_think_at_the_end_of_the_prompt(prompt, prefill):
    assert prefill_of(prompt) == prefill
