"""A generated prompt set that ships: two-digit +, -, * problems ("What is 42 * 55?").

Symbols, not words: SmolLM2-135M solved 19 of 64 such prompts at least once in 4 samples with
symbols against 12 with words (measured with vLLM, temperature 0.7).

`arithmetic_problems(n, seed)` is deterministic; the `arithmetic` (train) and `arithmetic_test`
(held out) sets never share a problem. Small models solve a fair share of these, which makes
best-of-k distillation visible on a laptop (see README: what the quickstart numbers mean).
"""
from __future__ import annotations

import random

import pandas as pd

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _problem(rng: random.Random) -> tuple[str, int]:
    op = rng.choice(list(OPS))
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} {op} {b}?", OPS[op](a, b)


def arithmetic_problems(n: int, seed: int, exclude: set[str] | None = None) -> pd.DataFrame:
    """`n` distinct problems (id, problem, answer), none of them in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    rows = []
    while len(rows) < n:
        text, answer = _problem(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"id": f"arith-{seed}-{len(rows):05d}", "problem": text, "answer": str(answer)})
    return pd.DataFrame(rows)


def arithmetic_train(n: int = 2000) -> pd.DataFrame:
    return arithmetic_problems(n, seed=0)


def arithmetic_test(n: int = 500) -> pd.DataFrame:
    return arithmetic_problems(n, seed=1, exclude=set(arithmetic_train()["problem"]))
