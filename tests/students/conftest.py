"""Shared fixtures for tests/students: tiny models built once per session, short real traces."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from distill.engines.tiny import build_tiny_model

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "r1traces"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(arch, root / arch) for arch in ("llama", "qwen2")}


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_models) -> Path:
    return tiny_models["qwen2"]


@pytest.fixture(scope="session")
def traces() -> pd.DataFrame:
    """20 real R1-Distill traces cut short (tests train tiny models on them)."""
    rows = [json.loads(line) for line in
            (TRACES / "math500_r1_distill_qwen7b_pilot.jsonl").read_text().splitlines() if line]
    return pd.DataFrame({
        "row_id": [r["item_id"] for r in rows],
        "prompt": [r["problem"][:300] for r in rows],
        "reasoning": [r["reasoning_trace"][: 150 + 40 * i] for i, r in enumerate(rows)],
        "answer_text": [r["answer_text"][:120] for r in rows],
    })
