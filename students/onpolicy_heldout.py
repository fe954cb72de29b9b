"""The held-out reverse KL of a student to its teacher, on the student's own answers:
`held_out_reverse_kl(model, tok, teacher, prompts, cfg, vmap=...) -> {"mean", "tokens",
"per_prompt", "estimator"}` and `paired_change(before, after)`.

The student samples `cfg.held_out_samples` answers to each held-out prompt (a fixed seed, the
same before and after training), the teacher reads its own prompt and those tokens, and every
answer token adds KL(student || teacher) over the whole next-token distribution (estimator
"exact"; "uld" for a teacher with another tokenizer: students.onpolicy_teacher). `mean` is per
token over all answers; `per_prompt` the mean of each prompt, for the paired comparison.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from distill.students.onpolicy_config import OnPolicyConfig


@torch.no_grad()
def held_out_reverse_kl(model, tokenizer, teacher, prompts: list, cfg: OnPolicyConfig, *,
                        vmap=None, align=None, chunk: int = 8,
                        progress: Callable[[int, int], None] | None = None) -> dict:
    """See the module docstring; `prompts` are students.onpolicy_batch.Prompt; `progress(done,
    total)` after each chunk of prompts."""
    from distill.students.onpolicy_batch import divergence, sample

    n = cfg.held_out_samples
    sums, counts = [], []
    was_training = model.training
    model.eval()  # no dropout in the measurement
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 7919)
        for i in range(0, len(prompts), chunk):
            part = prompts[i:i + chunk]
            completions = sample(model, tokenizer, [p.student for p in part], n=n,
                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
            _, per_token, mask = divergence(model, teacher, part, completions, vmap=vmap,
                                            beta=1.0, estimator="full", align=align)
            sums += per_token.sum(-1).view(len(part), n).sum(-1).tolist()
            counts += mask.sum(-1).view(len(part), n).sum(-1).tolist()
            if progress:
                progress(len(counts), len(prompts))
    model.train(was_training)
    tokens = sum(counts)
    return {"mean": sum(sums) / tokens if tokens else float("nan"), "tokens": int(tokens),
            "per_prompt": [s / c if c else float("nan") for s, c in zip(sums, counts)],
            "estimator": "uld" if align is not None else "exact"}


def paired_change(before: dict, after: dict) -> dict:
    """after minus before per held-out prompt: the mean with a 95% t interval (prompts whose
    answers had no scored token on either side are left out)."""
    from scipy.stats import t as student_t

    diffs = [a - b for a, b in zip(after["per_prompt"], before["per_prompt"])
             if not (math.isnan(a) or math.isnan(b))]
    k = len(diffs)
    if k == 0:
        return {"difference": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"),
                "prompts": 0, "excludes_zero": False}
    mean = sum(diffs) / k
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (k - 1)) if k > 1 else float("inf")
    half = float(student_t.ppf(0.975, k - 1)) * sd / math.sqrt(k) if k > 1 else float("inf")
    return {"difference": mean, "ci95_low": mean - half, "ci95_high": mean + half, "prompts": k,
            "excludes_zero": bool(mean - half > 0 or mean + half < 0)}
