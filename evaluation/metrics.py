"""Evaluation metrics over n samples per question: pass@1 (mean, 95% interval), pass@k, cons@n.

`summarise(rows)` takes one row per (question, sample) with `question_id`, `correct` (bool) and
`final_answer`, and returns the R1 protocol's numbers: pass@1 averaged over the n samples of each
question, its 95% interval across questions, and cons@n (majority vote over the final answers).
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def mean_interval(per_question: np.ndarray) -> tuple[float, float, float]:
    """Mean of per-question scores with a normal 95% interval across questions, clipped to [0, 1].
    With one question (or no spread) the interval is the Wilson interval of the pooled samples."""
    q = len(per_question)
    mean = float(per_question.mean()) if q else float("nan")
    if q < 2:
        return mean, float("nan"), float("nan")
    half = Z95 * float(per_question.std(ddof=1)) / math.sqrt(q)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


_SPACE = re.compile(r"\s+")


def normalise_answer(answer: object) -> str | None:
    """A loose canonical form for majority voting: no spaces, no trailing '.0', no $ or \\text."""
    if answer is None or (isinstance(answer, float) and math.isnan(answer)):
        return None
    s = _SPACE.sub("", str(answer)).replace("$", "").replace("\\!", "").rstrip(".")
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    return s or None


def consensus_correct(group: pd.DataFrame) -> bool:
    """cons@n for one question: is the most common final answer a correct one?"""
    votes = Counter(a for a in group["final_answer"].map(normalise_answer) if a is not None)
    if not votes:
        return False
    top, _ = votes.most_common(1)[0]
    hits = group[group["final_answer"].map(normalise_answer) == top]["correct"]
    return bool(hits.fillna(False).astype(bool).any())


def summarise(rows: pd.DataFrame) -> dict:
    """pass@1 (with 95% interval), cons@n and counts for one model on one benchmark."""
    correct = rows["correct"].fillna(False).astype(bool)
    per_q = correct.groupby(rows["question_id"]).mean().to_numpy()
    n = int(rows.groupby("question_id").size().max()) if len(rows) else 0
    p1, lo, hi = mean_interval(per_q)
    cons = rows.assign(correct=correct).groupby("question_id")[["final_answer", "correct"]].apply(
        consensus_correct)
    return {"pass@1": p1, "ci95_low": lo, "ci95_high": hi, f"cons@{n}": float(cons.mean()) if len(cons) else float("nan"),
            "questions": int(len(per_q)), "samples_per_question": n,
            "mean_completion_tokens": float(rows["completion_tokens"].mean()) if "completion_tokens" in rows and len(rows) else float("nan"),
            "truncated_share": float((rows.get("finish_reason") == "length").mean()) if "finish_reason" in rows and len(rows) else 0.0}
