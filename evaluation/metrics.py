"""Evaluation metrics over n samples per question: pass@1 with a 95% interval, cons@n, and the
paired student-minus-base difference.

    summarise(rows)                      # one model on one benchmark -> dict for the results
    paired_difference(student, base)     # per-question pass@1 arrays on the same questions

`rows` has one row per (question, sample): question_id, sample_idx, correct (bool) and
answer_group (evaluation.consensus). INTERVAL and PAIRED say how the intervals are made.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm

Z95 = float(norm.ppf(0.975))
INTERVAL = ("Wilson score interval at the Kish effective sample size p(1-p)/Var(mean) of the "
            "per-question pass rates, kept within [questions, samples] (all samples of one "
            "question; the questions when none or all are solved)")
PAIRED = ("student minus base pass@1 on the same questions; 95% interval by MOVER (Zou & Donner "
          "2008): the two Wilson intervals combined with the correlation of the per-question "
          "pass rates")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion `p` seen over `n` (possibly effective) trials."""
    if not n > 0 or math.isnan(p):
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if p <= 0.0 else max(0.0, centre - half)   # exact at the edges (no rounding)
    return low, 1.0 if p >= 1.0 else min(1.0, centre + half)


def effective_n(per_question: np.ndarray, samples: int) -> float:
    """Kish effective sample size of the mean of per-question pass rates (see INTERVAL).

    It lies in [questions, samples]: a rate in [0, 1] with mean p has variance at most p(1-p), so
    the questions alone never count for less than q trials, and n samples never for more than n.
    One question: its samples are independent draws (n). None or all solved: the spread between
    questions cannot be seen, so the conservative q."""
    q = len(per_question)
    if q <= 1:
        return float(samples)
    p = float(per_question.mean())
    if p <= 0.0 or p >= 1.0:
        return float(q)
    var_mean = float(per_question.var(ddof=1)) / q
    if var_mean <= 0.0:
        return float(samples)
    return float(min(max(p * (1 - p) / var_mean, q), samples))


def mean_interval(per_question: np.ndarray, samples: int) -> tuple[float, float, float]:
    """(mean pass rate, 95% low, 95% high) over questions; NaN for no questions."""
    if len(per_question) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(per_question.mean())
    return (mean, *wilson(mean, effective_n(per_question, samples)))


def paired_difference(student: np.ndarray, base: np.ndarray, samples_student: int,
                      samples_base: int) -> dict:
    """Student minus base pass@1 over the same questions (arrays aligned by question), with
    its 95% MOVER interval (PAIRED) and whether the interval excludes 0."""
    s, ls, us = mean_interval(student, samples_student)
    b, lb, ub = mean_interval(base, samples_base)
    r = 0.0
    if len(student) > 1 and student.std() > 0 and base.std() > 0:
        r = float(np.corrcoef(student, base)[0, 1])
    d = s - b
    low = d - math.sqrt(max(0.0, (s - ls) ** 2 + (ub - b) ** 2 - 2 * r * (s - ls) * (ub - b)))
    high = d + math.sqrt(max(0.0, (us - s) ** 2 + (b - lb) ** 2 - 2 * r * (us - s) * (b - lb)))
    low, high = max(-1.0, low), min(1.0, high)
    return {"difference": d, "ci95_low": low, "ci95_high": high,
            "excludes_zero": bool(low > 0 or high < 0), "questions": len(student),
            "correlation": r}


def per_question(rows: pd.DataFrame) -> pd.Series:
    """pass@1 of each question (mean of its samples' `correct`), indexed by question_id."""
    return rows["correct"].fillna(False).astype(bool).groupby(rows["question_id"]).mean()


def summarise(rows: pd.DataFrame) -> dict:
    """pass@1 (with 95% interval), cons@n and counts for one model on one benchmark."""
    from distill.evaluation.consensus import consensus_correct

    rows = rows.assign(correct=rows["correct"].fillna(False).astype(bool))
    per_q = per_question(rows).to_numpy()
    n = int(rows.groupby("question_id").size().max()) if len(rows) else 0
    p1, lo, hi = mean_interval(per_q, len(rows))
    cons = [consensus_correct(q) for _, q in rows.groupby("question_id")]
    finish = rows["finish_reason"] if "finish_reason" in rows else pd.Series(dtype=object)
    return {"pass@1": p1, "ci95_low": lo, "ci95_high": hi,
            f"cons@{n}": float(np.mean(cons)) if cons else float("nan"),
            "questions": len(per_q), "samples_per_question": n,
            "effective_n": effective_n(per_q, len(rows)) if len(per_q) else float("nan"),
            "mean_completion_tokens": float(rows["completion_tokens"].mean())
            if "completion_tokens" in rows and len(rows) else float("nan"),
            "truncated_share": float((finish == "length").mean()) if len(finish) else 0.0,
            "no_answer_share": float(rows["no_answer"].notna().mean())
            if "no_answer" in rows and len(rows) else float("nan")}


def compare_models(rows: pd.DataFrame, first: str, second: str) -> dict:
    """paired[benchmark] = paired_difference of `first` minus `second` (values of the `model`
    column) on the questions both answered; {} unless both models are in `rows`."""
    if not {first, second} <= set(rows["model"]):
        return {}
    out = {}
    for bench, g in rows.groupby("benchmark"):
        a, b = g[g["model"] == first], g[g["model"] == second]
        pa, pb = per_question(a), per_question(b)
        common = pa.index.intersection(pb.index).sort_values()
        n_a = int(a["question_id"].isin(common).sum())
        n_b = int(b["question_id"].isin(common).sum())
        out[bench] = {"models": f"{first} - {second}",
                      **paired_difference(pa[common].to_numpy(), pb[common].to_numpy(), n_a, n_b)}
    return out
