"""Chat formatting: labelled spans, the R1 generation template, EOS fixes."""
from __future__ import annotations

import pytest
import torch
from distill.students.chat import (
    assistant_text,
    build_example,
    end_of_turn_token,
    ensure_chat_template,
    fix_eos,
    r1_generation_template,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

REASONING = "Okay, 12 + 7 = 19. Wait, let me check: 19 - 7 = 12."
ANSWER = "The answer is \\boxed{19}."


@pytest.fixture
def tok(tiny_qwen2):
    return AutoTokenizer.from_pretrained(tiny_qwen2)


def _labelled(tok, ex) -> str:
    return tok.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])


def _unlabelled(tok, ex) -> str:
    return tok.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100])


def test_r1_example_labels_exactly_the_completion(tok):
    tok.chat_template = r1_generation_template(tok.chat_template)
    ex = build_example(tok, "What is 12+7?", REASONING, ANSWER, think_format="r1", max_length=512)
    prompt = "<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert _unlabelled(tok, ex) == prompt  # exactly what inference feeds the model
    assert _labelled(tok, ex) == f"{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"
    n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
    assert ex["labels"][:n_prompt] == [-100] * n_prompt and ex["labels"][n_prompt] != -100
    assert ex["input_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert ex["length"] == len(ex["input_ids"]) == len(ex["labels"])
    assert ex["reject_reason"] is None


def test_plain_chatml_template_trains_the_think_tag_too(tok):
    ex = build_example(tok, "What is 12+7?", REASONING, ANSWER, think_format="r1", max_length=512)
    assert _labelled(tok, ex) == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"


def test_plain_format_has_no_think_tags(tok):
    ex = build_example(tok, "q", REASONING, ANSWER, think_format="plain", max_length=512)
    assert _labelled(tok, ex) == f"{REASONING}\n\n{ANSWER}<|im_end|>"
    assert assistant_text(float("nan"), "42", "plain") == "42"


def test_overlong_rows_are_flagged_or_truncated(tok):
    full = build_example(tok, "q", REASONING * 5, ANSWER, think_format="r1", max_length=10_000)
    limit = full["length"] - 7
    dropped = build_example(tok, "q", REASONING * 5, ANSWER, think_format="r1", max_length=limit)
    assert dropped["reject_reason"] == "too_long_for_max_length"
    cut = build_example(tok, "q", REASONING * 5, ANSWER, think_format="r1", max_length=limit,
                        overlong="truncate")
    assert cut["reject_reason"] is None and cut["truncated"]
    assert cut["input_ids"] == full["input_ids"][:limit] and cut["length"] == limit
    tiny = build_example(tok, "a long prompt " * 20, "r", "a", think_format="r1", max_length=8,
                         overlong="truncate")
    assert tiny["reject_reason"] == "too_long_for_max_length"  # the prompt alone does not fit


def test_r1_template_forces_think_and_strips_earlier_reasoning(tok):
    template = r1_generation_template(tok.chat_template)
    assert r1_generation_template(template) == template  # idempotent
    msgs = [{"role": "user", "content": "a"},
            {"role": "assistant", "content": "<think>\nsecret\n</think>\n\nanswer A"},
            {"role": "user", "content": "b"}]
    text = tok.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                   add_generation_prompt=True)
    assert "secret" not in text and "answer A<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    plain = tok.apply_chat_template(msgs[:1], chat_template=template, tokenize=False)
    assert not plain.endswith("<think>\n")  # only the generation prompt is forced


def test_r1_template_does_not_double_an_existing_think_prompt(tok):
    r1_style = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    text = tok.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False,
                                   chat_template=r1_generation_template(r1_style),
                                   add_generation_prompt=True)
    assert text.endswith("assistant\n<think>\n") and text.count("<think>") == 1


def test_end_of_turn_token_follows_the_template(tok):
    assert end_of_turn_token(tok) == "<|im_end|>"
    tok.add_tokens(["<|eot_id|>"], special_tokens=True)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot_id|>"
                         "{% endfor %}")
    assert end_of_turn_token(tok) == "<|eot_id|>"


def test_template_less_tokenizer_gets_chatml(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    tok.chat_template = None
    assert ensure_chat_template(tok, model)
    assert end_of_turn_token(tok) == "<|im_end|>"
    assert not ensure_chat_template(tok, model)


class _ForceAt(LogitsProcessor):
    """Emit `token` as the 3rd new token, `other` before and after (a model that wants to stop)."""

    def __init__(self, start: int, token: int, other: int):
        self.start, self.token, self.other = start, token, other

    def __call__(self, input_ids, scores):
        scores[:] = -1e9
        step = input_ids.shape[1] - self.start
        scores[:, self.token if step == 2 else self.other] = 0
        return scores


def _generated(model, tok, im_end: int) -> int:
    ids = tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt")
    n = ids.input_ids.shape[1]
    other = tok.convert_tokens_to_ids("x")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False,
                         logits_processor=LogitsProcessorList([_ForceAt(n, im_end, other)]))
    return out.shape[1] - n


def test_fix_eos_makes_qwen_base_style_models_stop_at_im_end(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    endoftext, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    # Qwen2.5 base: tokenizer, config and generation config all say <|endoftext|>.
    tok.eos_token = "<|endoftext|>"
    model.config.eos_token_id = model.generation_config.eos_token_id = endoftext
    assert _generated(model, tok, im_end) == 8  # never stops at <|im_end|>
    info = fix_eos(tok, model)
    assert tok.eos_token == "<|im_end|>" and info["eos_token_id"] == im_end
    assert model.generation_config.eos_token_id == [im_end, endoftext]
    assert model.config.eos_token_id == im_end and tok.pad_token == "<|endoftext|>"
    assert _generated(model, tok, im_end) == 3  # stops right after <|im_end|>
