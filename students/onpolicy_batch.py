"""One on-policy batch: prompts in both models' templates, the student's samples, the teacher's
and the student's distributions on them, and the per-token divergence.

    prompts = encode_prompts(rows, student_tok, teacher_tok)  # student_messages, teacher_messages
    completions = sample(model, student_tok, [p.student for p in prompts], n=1, max_new_tokens=128)
    per_token, mask = divergence(model, teacher, prompts, completions, beta=1.0, estimator="full")

The teacher reads its own prompt (e.g. with worked examples the student never sees) followed by
the student's exact tokens, so both share the ordinary vocabulary (students.onpolicy_vocab,
whose map also says which columns to compare); where the student's template pre-fills the
answer (`<think>\\n`), the teacher's prompt gets the same text.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from distill.students.onpolicy_loss import (
    generalized_jsd,
    masked_mean,
    sampled_reverse_kl_loss,
    token_logprobs,
    topk_generalized_jsd,
)


@dataclass
class Prompt:
    """One prompt as token ids: what the student reads, and what the teacher reads."""

    student: list[int]
    teacher: list[int]


def encode_prompts(rows: pd.DataFrame, student_tok, teacher_tok) -> list[Prompt]:
    """Token ids of `rows.student_messages` / `rows.teacher_messages` in each model's chat
    template with the generation prompt; the student's pre-fill (e.g. `<think>\\n`) is appended
    to the teacher's prompt when its own template does not end with it."""
    from distill.evaluation.protocol import prefill_of

    out = []
    for s_msgs, t_msgs in zip(rows["student_messages"], rows["teacher_messages"]):
        s_text = student_tok.apply_chat_template(list(s_msgs), tokenize=False,
                                                 add_generation_prompt=True)
        t_text = teacher_tok.apply_chat_template(list(t_msgs), tokenize=False,
                                                 add_generation_prompt=True)
        fill = prefill_of(s_text)
        if fill and not t_text.endswith(fill):
            t_text += fill
        out.append(Prompt(student_tok(s_text, add_special_tokens=False)["input_ids"],
                          teacher_tok(t_text, add_special_tokens=False)["input_ids"]))
    return out


def stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end an answer: the end-of-turn token and the generation config's eos."""
    from distill.students.chat import end_of_turn_token

    ids = [tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))]
    eos = model.generation_config.eos_token_id
    ids += [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]
    return list(dict.fromkeys(ids))


@torch.no_grad()
def sample(model, tokenizer, prompts: list[list[int]], *, n: int, max_new_tokens: int,
           temperature: float = 1.0) -> list[list[int]]:
    """`n` sampled answers per prompt (prompt-major), each cut after its first stop token."""
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    stops = stop_ids(model, tokenizer)
    device = next(model.parameters()).device
    out = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                         do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                         max_new_tokens=max_new_tokens, num_return_sequences=n,
                         eos_token_id=stops, pad_token_id=pad, use_cache=True)
    model.train(was_training)
    completions = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        completions.append(row[:cut])
    return completions


def completion_logits(model, prompts: list[list[int]], completions: list[list[int]],
                      cols: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's next-token logits at every completion token, (B, T, V) (only the vocabulary
    columns `cols` when given), and the mask (B, T) of real tokens. Row b is prompts[b] followed
    by completions[b], left-padded so every answer ends at the last position: the vocabulary
    projection then runs on the last T + 1 positions only (`logits_to_keep`), not on the prompts
    (a teacher's worked examples are most of its input)."""
    device = next(model.parameters()).device
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width, t_max = max(lengths), max(1, max(len(c) for c in completions))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    index = torch.zeros(len(prompts), t_max, dtype=torch.long)
    mask = torch.zeros(len(prompts), t_max)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, width - lengths[b]:] = torch.tensor(p + c)
        attention[b, width - lengths[b]:] = 1
        # answer token j sits at width - len(c) + j; the logits predicting it one earlier, which
        # is offset t_max - len(c) + j in the kept window of the last t_max + 1 positions
        index[b, :len(c)] = torch.arange(t_max - len(c), t_max)
        mask[b, :len(c)] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                   position_ids=positions.to(device), logits_to_keep=t_max + 1).logits
    picked = logits[torch.arange(len(prompts)).unsqueeze(1), index.to(device)]
    return (picked if cols is None else picked[..., cols]), mask.to(device)


def divergence(student, teacher, prompts: list[Prompt], completions: list[list[int]], *,
               vmap, beta: float, estimator: str, top_k: int = 20, align=None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, per-token divergence (B, T) detached, mask of the positions it covers) for
    prompts[i // n] answered by completions[i] (n = len(completions) // len(prompts)); `teacher`
    is a local transformers model, `vmap` a students.onpolicy_vocab.VocabMap; `align`: a
    students.onpolicy_teacher.CrossTokenizer (then `vmap` is unused)."""
    if align is not None:
        return align.divergence(student, teacher, prompts, completions)
    n = len(completions) // len(prompts)
    student_prompts = [prompts[i // n].student for i in range(len(completions))]
    teacher_prompts = [prompts[i // n].teacher for i in range(len(completions))]
    sampled = estimator == "sampled"  # log-probs over the whole vocabulary of each model
    with torch.no_grad():
        t_logits, _ = completion_logits(teacher, teacher_prompts,
                                        [vmap.teacher_ids(c) for c in completions],
                                        None if sampled else vmap.teacher_cols)
    s_logits, mask = completion_logits(student, student_prompts, completions,
                                       None if sampled else vmap.student_cols)
    t_logits = t_logits.to(s_logits.device)
    if estimator == "full":
        per_token = loss = generalized_jsd(s_logits, t_logits, beta)
    elif estimator == "topk":
        top = torch.log_softmax(t_logits.float(), -1).topk(min(top_k, t_logits.shape[-1]), dim=-1)
        per_token = loss = topk_generalized_jsd(s_logits, top.indices, top.values, beta)
    else:  # only log t(y) of the sampled tokens y, as a vLLM teacher returns them
        s_lp = token_logprobs(s_logits, _padded(completions, mask))
        t_lp = token_logprobs(t_logits, _padded([vmap.teacher_ids(c) for c in completions], mask))
        per_token, loss = s_lp - t_lp, sampled_reverse_kl_loss(s_lp, t_lp)
    return masked_mean(loss, mask), (per_token * mask).detach(), mask


def _padded(rows: list[list[int]], mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    for b, row in enumerate(rows):
        out[b, :len(row)] = torch.tensor(row, device=mask.device)
    return out
