"""Difficulty filtering (open-r1, Light-R1): keep the prompts a reference model sometimes solves.

    select_prompts:
      model: null                 # null: the student's base (train.student)
      samples: 8                  # m answers per prompt
      too_hard_at_most: 0.0       # pass rate <= this: too_hard   (null: no lower bound)
      too_easy_at_least: 0.6      # pass rate >= this: too_easy   (null: no upper bound)

The reference model answers each prompt m times on the evaluation engine path
(evaluation.evaluate.generate_answers: the model's chat template, its end-of-turn stop) and its
answers are scored as evaluation scores them (evaluation.protocol.find_answers, math-verify; no
answer = wrong). `window_reasons` turns pass rates into reasons; a prompt without a reference
answer cannot be scored and is kept as it is (`unscored` in the manifest).
"""
from __future__ import annotations

import math

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.engines.sampling import SamplingConfig
from distill.pipeline.keys import RUNTIME, fingerprint


def _sampling() -> SamplingConfig:
    return SamplingConfig(n=1, temperature=0.6, top_p=0.95, max_tokens=4096)


class SelectPromptsConfig(BaseModel):
    """The optional select_prompts stage between prompts and generate (null section: off)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="The reference model; null: the student's base "
                              "(train.student).", json_schema_extra=fingerprint("model"))
    samples: int = Field(8, ge=1, description="Answers per prompt (m).")
    too_hard_at_most: float | None = Field(0.0, ge=0, le=1, description=(
        "A pass rate at or below this rejects the prompt as too_hard; null: none is too hard."))
    too_easy_at_least: float | None = Field(0.6, ge=0, le=1, description=(
        "A pass rate at or above this rejects the prompt as too_easy; null: none is too easy."))
    template: str | None = Field(None, description="Prompt template; null: teacher.template (the "
                                 "user message the student is trained on).")
    sampling: SamplingConfig = Field(default_factory=_sampling, description="Sampling (n ignored).")
    engine: dict = Field(default_factory=dict, description="vLLM engine arguments.",
                         json_schema_extra=fingerprint("engine_args"))
    batch_size: int = Field(32, ge=1, description="Rows per engine batch.", json_schema_extra=RUNTIME)
    concurrency: int = Field(1, ge=1, description="Engine replicas.", json_schema_extra=RUNTIME)

    @model_validator(mode="after")
    def _a_window(self) -> SelectPromptsConfig:
        lo, hi = self.too_hard_at_most, self.too_easy_at_least
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"too_hard_at_most ({lo}) must be below too_easy_at_least ({hi}): "
                             "the window of kept pass rates would be empty")
        return self


def window_reasons(pass_rate: pd.Series, cfg: SelectPromptsConfig) -> pd.Series:
    """too_hard / too_easy / None per prompt from its pass rate (NaN: unscored, kept)."""
    lo, hi = cfg.too_hard_at_most, cfg.too_easy_at_least

    def reason(p: float) -> str | None:
        if p is None or (isinstance(p, float) and math.isnan(p)):
            return None
        if lo is not None and p <= lo + 1e-12:
            return "too_hard"
        if hi is not None and p >= hi - 1e-12:
            return "too_easy"
        return None

    return pd.Series([reason(p) for p in pass_rate.tolist()], index=pass_rate.index, dtype=object)


def pass_rates(answers: pd.DataFrame) -> pd.DataFrame:
    """Per prompt_id: reference_samples, _correct, _pass_rate and _answers (the answers read,
    by sample index) from scored answer rows (prompt_id, sample_index, answer, correct)."""
    answers = answers.sort_values(["prompt_id", "sample_index"], kind="stable")
    g = answers.groupby("prompt_id")
    out = pd.DataFrame({"reference_samples": g["correct"].size(),
                        "reference_correct": g["correct"].sum().astype("int64"),
                        "reference_answers": g["answer"].agg(
                            lambda a: [x if isinstance(x, str) else None for x in a])})
    out["reference_pass_rate"] = out["reference_correct"] / out["reference_samples"]
    return out.reset_index()
