"""Bundled evaluation benchmarks: `load_benchmark("math500")` -> DataFrame(id, problem, answer).

The files under data/bundled/benchmarks are JSON Lines copies of MATH-500, AIME 2024, AMC 2023
and the GSM8K test split (`id`, `problem`, `answer`, `solution`, and `level`/`subject` where the
source has them). They serve evaluation and decontamination alike.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

BUNDLED_DIR = Path(__file__).parent / "bundled"

BENCHMARKS: dict[str, Path] = {
    "math500": BUNDLED_DIR / "benchmarks" / "math500.jsonl",
    "aime24": BUNDLED_DIR / "benchmarks" / "aime24.jsonl",
    "amc23": BUNDLED_DIR / "benchmarks" / "amc23.jsonl",
    "gsm8k_test": BUNDLED_DIR / "benchmarks" / "gsm8k_test.jsonl",
}


def benchmark_path(name: str) -> Path:
    """The bundled file for a short benchmark name; a KeyError names the choices."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; bundled: {sorted(BENCHMARKS)}") from None


def load_benchmark(name: str) -> pd.DataFrame:
    """The bundled benchmark `name` as a DataFrame with at least `id`, `problem`, `answer`."""
    return pd.read_json(benchmark_path(name), lines=True, dtype={"id": str, "answer": str})
