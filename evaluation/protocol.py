"""The rules every evaluated model gets alike (student and base): prompt, stop tokens, answer.

    from distill.evaluation.protocol import render, find_answers
    prompts, rules = render(model_dir, messages)  # rules: template, prefill, stop tokens
    rows = find_answers(rows)  # needs text, prefill, finish_reason; adds answer, no_answer, ...

- Prompt: the model's own chat template with the generation prompt (ChatML where the model has
  none, as SFT gives such a student; no system prompt). The template decides the pre-fill: an
  R1-format student's template ends with `<think>\\n` (students.chat.r1_generation_template),
  so its generation starts inside the reasoning.
- Stop: the template's end-of-turn token (students.chat.end_of_turn_token: `<|im_end|>` for
  ChatML) and the tokenizer's eos, as token ids; the fix SFT applies to the student (fix_eos)
  applied to the base too, whose eos may not end a turn (Qwen2.5 bases: `<|endoftext|>`). A
  token the model's vocabulary lacks (ChatML given to a template-less model) stops as a string.
- Answer (PARSING): the assistant turn is the pre-fill plus the generated text.
"""
from __future__ import annotations

import pandas as pd

from distill.data.mathverify import Answer, WholeText

THINK = "<think>"
PARSING = ("assistant turn = template pre-fill + generated text; reasoning inside <think>...</think>"
           " (an unclosed <think> is unfinished reasoning: no answer); answer = the last \\boxed{}"
           " or 'final answer' phrase after the reasoning, else the whole answer part read by "
           "math-verify; a sample cut by the token limit (finish_reason 'length') or failed has no "
           "answer; no answer = wrong")


def prefill_of(prompt: str) -> str:
    """The start of the assistant turn the prompt already holds: `<think>\\n` after an R1-format
    template (an opened, unclosed `<think>` with only whitespace after it), else ''."""
    i = prompt.rfind(THINK)
    return prompt[i:] if i >= 0 and not prompt[i + len(THINK):].strip() else ""


def render(model_dir: str, messages: list[list[dict]]) -> tuple[list[str], dict]:
    """Prompts for `messages` in the model's chat template, and the rules used (a dict for the
    results: template, prefill, stop_tokens, stop_token_ids, stop_strings)."""
    from transformers import AutoTokenizer

    from distill.students.chat import end_of_turn_token, ensure_chat_template

    tok = AutoTokenizer.from_pretrained(model_dir)
    vocab = tok.get_vocab()  # before ChatML may add its tokens
    chatml = ensure_chat_template(tok)
    prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
               for m in messages]
    stops = [t for t in dict.fromkeys([end_of_turn_token(tok), tok.eos_token]) if t]
    prefills = sorted({prefill_of(p) for p in prompts})
    rules = {"template": "ChatML (the model has none)" if chatml else "the model's chat template",
             "prefill": prefills[0] if len(prefills) == 1 else prefills,
             "stop_tokens": [t for t in stops if t in vocab],
             "stop_token_ids": [int(vocab[t]) for t in stops if t in vocab],
             "stop_strings": [t for t in stops if t not in vocab]}
    return prompts, rules


def find_answers(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (text, prefill, finish_reason) parsed by the PARSING rule: adds data.parsing's
    columns on the whole assistant turn, `answer` (str or None), `answer_is_text` (the whole
    answer part, nothing extracted) and `no_answer` (why there is none: length, error,
    unclosed_think, empty; None when there is an answer)."""
    from distill.data.parsing import parse_frame
    from distill.pipeline.errors import DistillError

    missing = [c for c in ("text", "prefill", "finish_reason") if c not in rows.columns]
    if missing:
        raise DistillError(f"evaluation answer rows lack column(s) {missing}",
                           fix="build them with evaluation.evaluate.generate_answers")
    turn = rows["prefill"].fillna("").astype(str) + rows["text"].fillna("").astype(str)
    out = parse_frame(rows.assign(turn=turn), text_column="turn", think_required=False)
    out = out.drop(columns="turn")
    found = [_answer(fin, closed, final, text) for fin, closed, final, text in zip(
        out["finish_reason"], out["think_closed"], out["final_answer"], out["answer_text"])]
    out["answer"] = pd.Series([a for a, _, _ in found], index=out.index, dtype=object)
    out["answer_is_text"] = pd.Series([t for _, t, _ in found], index=out.index, dtype=bool)
    out["no_answer"] = pd.Series([w for _, _, w in found], index=out.index, dtype=object)
    return out


def _answer(finish: object, closed: bool, final: object, text: str
            ) -> tuple[str | None, bool, str | None]:
    if finish in ("length", "error"):
        return None, False, str(finish)
    if not closed:
        return None, False, "unclosed_think"
    if isinstance(final, str) and final.strip():
        return final, False, None
    if text.strip():
        return text, True, None
    return None, False, "empty"


def as_answer(answer: object, is_text: bool) -> Answer | None:
    """What math-verify compares for one row: the extracted answer, or a WholeText."""
    if not isinstance(answer, str):
        return None
    return WholeText(answer) if is_text else answer
