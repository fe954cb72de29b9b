"""Chat formatting of SFT examples in the student's own chat template, R1 style.

    tok.chat_template = r1_generation_template(tok.chat_template)   # forces "<think>\\n"
    fix_eos(tok, model)                                             # stop at <|im_end|>
    ex = build_example(tok, prompt, reasoning, answer, think_format="r1", max_length=32768)
    ex["input_ids"], ex["labels"], ex["length"], ex["reject_reason"]

The assistant turn is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` (think_format "r1") or
`{reasoning}\\n\\n{answer}` ("plain"), followed by the template's end-of-turn token (for ChatML
`<|im_end|>`). The prompt is the template's rendering of one user message with the generation
prompt, exactly what the model sees at inference; if that rendering already ends with
`<think>\\n` (the R1 template), the completion starts after it. Loss only on the completion:
labels are -100 over the prompt. Prompt and completion are tokenized separately (no special
tokens added) and concatenated, so the boundary is the one inference produces.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

R1_MARK = "{#- distill:r1-generation-template #}"
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
THINK_OPEN = "<think>\n"
_PROBE = "QZXJVK"  # a string no template produces on its own


def r1_generation_template(template: str) -> str:
    """Wrap a chat template: earlier assistant turns lose everything up to `</think>` (as the
    R1-Distill template does) and `add_generation_prompt` ends with `<think>\\n`. Idempotent, and
    no second `<think>\\n` if the template already adds one."""
    if R1_MARK in template:
        return template
    strip = (
        "{%- set ns_r1 = namespace(msgs=[]) %}{%- for m in messages %}"
        "{%- if m['role'] == 'assistant' and m['content'] is string and '</think>' in m['content'] %}"
        "{%- set ns_r1.msgs = ns_r1.msgs + [{'role': m['role'], "
        "'content': m['content'].split('</think>')[-1].lstrip()}] %}"
        "{%- else %}{%- set ns_r1.msgs = ns_r1.msgs + [m] %}{%- endif %}{%- endfor %}"
        "{%- set messages = ns_r1.msgs %}"
    )
    body = "{%- set r1_body %}" + template + "{%- endset %}{{- r1_body }}"
    force = ("{%- if add_generation_prompt and not r1_body.endswith('<think>\\n') %}"
             "{{- '<think>\\n' }}{%- endif %}")
    return R1_MARK + strip + body + force


def _render(tokenizer, messages: list[dict], *, generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation)


@lru_cache(maxsize=32)
def _end_of_turn(template: str, added: tuple[str, ...], eos: str | None, rendered: str) -> str:
    tail = rendered.split(_PROBE, 1)[1].lstrip(" ")
    hits = [tok for tok in added if tail.startswith(tok)]
    if hits:
        return max(hits, key=len)
    if eos:
        return eos
    raise ValueError("the chat template closes an assistant turn with no special token and the "
                     "tokenizer has no eos_token; set tokenizer.eos_token")


def end_of_turn_token(tokenizer) -> str:
    """The token that closes an assistant turn in this template (`<|im_end|>` for ChatML,
    `<|eot_id|>` for Llama 3), else the tokenizer's eos_token."""
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat_template; call ensure_chat_template first")
    rendered = _render(tokenizer, [{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": _PROBE}], generation=False)
    added = tuple(sorted(tokenizer.get_added_vocab()))
    return _end_of_turn(tokenizer.chat_template, added, tokenizer.eos_token, rendered)


def ensure_chat_template(tokenizer, model=None) -> bool:
    """Give a template-less tokenizer (some base models) ChatML, adding its tokens and resizing
    the model's embeddings to a multiple of 64. Returns True if it changed anything."""
    if tokenizer.chat_template:
        return False
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False)
                          for t in ("<|im_start|>", "<|im_end|>")], special_tokens=True)
    tokenizer.chat_template = CHATML_TEMPLATE
    if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return True


def fix_eos(tokenizer, model) -> dict[str, Any]:
    """Make generation stop at the end-of-turn token: tokenizer.eos_token, config.eos_token_id
    and generation_config.eos_token_id (a list: end-of-turn first, then the old eos ids) agree.
    Qwen2.5 base models ship `<|endoftext|>` as eos while ChatML turns end in `<|im_end|>`."""
    eot = end_of_turn_token(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    old_eos = tokenizer.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = old_eos if old_eos and old_eos != eot else eot
    tokenizer.eos_token = eot
    gen = model.generation_config
    ids = [eot_id]
    for source in (gen.eos_token_id, model.config.eos_token_id,
                   tokenizer.convert_tokens_to_ids(old_eos) if old_eos else None):
        for i in source if isinstance(source, list) else [source]:
            if i is not None and i not in ids:
                ids.append(int(i))
    gen.eos_token_id = ids
    gen.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = eot_id
    model.config.pad_token_id = tokenizer.pad_token_id
    return {"eos_token": eot, "eos_token_id": eot_id, "generation_eos_token_ids": ids,
            "pad_token": tokenizer.pad_token}


def assistant_text(reasoning: str | None, answer: str | None, think_format: str) -> str:
    """The assistant turn's content for one trace."""
    reasoning = "" if reasoning is None or _isnan(reasoning) else str(reasoning).strip()
    answer = "" if answer is None or _isnan(answer) else str(answer).strip()
    if think_format == "r1":
        return f"<think>\n{reasoning}\n</think>\n\n{answer}"
    if think_format == "plain":
        return f"{reasoning}\n\n{answer}" if reasoning else answer
    raise ValueError(f"think_format must be 'r1' or 'plain', got {think_format!r}")


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def build_examples(tokenizer, prompts: list[str], reasonings: list, answers: list, *,
                   think_format: str, max_length: int, overlong: str = "drop") -> list[dict]:
    """build_example over many rows, tokenizing in batches (the fast tokenizer's threads)."""
    eot = end_of_turn_token(tokenizer)
    prompt_texts = [_render(tokenizer, [{"role": "user", "content": p}], generation=True)
                    for p in prompts]
    completions = []
    for text, r, a in zip(prompt_texts, reasonings, answers):
        c = assistant_text(r, a, think_format)
        if think_format == "r1" and text.endswith(THINK_OPEN):
            c = c[len(THINK_OPEN):]
        completions.append(c + eot)
    p_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    return [_example(p, c, max_length, overlong) for p, c in zip(p_ids, c_ids)]


def _example(p: list[int], c: list[int], max_length: int, overlong: str) -> dict:
    ids, labels = p + c, [-100] * len(p) + c
    out = {"input_ids": ids, "labels": labels, "length": len(ids), "reject_reason": None,
           "truncated": False}
    if len(ids) > max_length:
        if overlong == "truncate" and len(p) < max_length:
            out.update(input_ids=ids[:max_length], labels=labels[:max_length],
                       length=max_length, truncated=True)
        else:
            out["reject_reason"] = "too_long_for_max_length"
    return out


def build_example(tokenizer, prompt: str, reasoning: str, answer: str, *, think_format: str = "r1",
                  max_length: int, overlong: str = "drop") -> dict:
    """One SFT example: input_ids, labels (-100 outside the assistant completion), length, and
    reject_reason ("too_long_for_max_length" or None) / truncated per the `overlong` rule."""
    return build_examples(tokenizer, [prompt], [reasoning], [answer], think_format=think_format,
                          max_length=max_length, overlong=overlong)[0]
