"""Choose among a prompt's k samples: pass-rate window and a cap per prompt, flagged not dropped.

    from distill.data.selection import SelectionConfig, select_samples
    reasons = select_samples(df, SelectionConfig(max_per_prompt=4, pass_rate_max=0.9),
                             already_rejected=df["reject_reason"])
    df["reject_reason"] = df["reject_reason"].fillna(reasons)

Rules, in this order, each giving a reason to rows not already rejected:

- `pass_rate_window`: the prompt's pass rate is outside [pass_rate_min, pass_rate_max]
  (inclusive). The pass rate is the share of ALL the prompt's samples whose `correct` is True,
  rejected or not: a truncated or undecided sample counts as not solved. The defaults 0.0 and
  1.0 keep every prompt; open-r1-style "drop what the teacher always solves" is
  pass_rate_max < 1.0, "drop what it never solves" is pass_rate_min > 0.0 (rows of a prompt the
  teacher never solves are usually already rejected as wrong).
- `over_max_per_prompt`: beyond the prompt's first m surviving samples. "First" is decided by
  `prefer`: "first" = lowest `sample_index` (then the `order` given, else row order: the curate
  stage passes its canonical order, so the choice never depends on row order), the default,
  because sample order is random so the kept set keeps the teacher's length distribution;
  "shortest" = fewest completion tokens (`completion_tokens`, else characters of reasoning +
  answer), ties by sample order, which biases the student toward short reasoning.
  keep_all_correct=False is the same as max_per_prompt=1 (one sample per prompt).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.data.columns import require_columns
from distill.pipeline.errors import DistillError


class SelectionConfig(BaseModel):
    """Which of a prompt's surviving samples go to the SFT set."""

    model_config = ConfigDict(extra="forbid")
    keep_all_correct: bool = Field(True, description="Keep every surviving sample of a prompt "
                                   "(up to max_per_prompt); False keeps one per prompt.")
    max_per_prompt: int | None = Field(None, ge=1, description="Keep at most this many "
                                       "samples per prompt; None = no cap.")
    prefer: Literal["first", "shortest"] = Field("first", description="Which samples the cap "
                                                 "keeps: lowest sample_index, or shortest.")
    pass_rate_min: float = Field(0.0, ge=0, le=1, description="Drop prompts the teacher solves "
                                 "less often than this (inclusive bound).")
    pass_rate_max: float = Field(1.0, ge=0, le=1, description="Drop prompts the teacher solves "
                                 "more often than this (inclusive bound).")
    sample_index_column: str = Field("sample_index", description="Column with each sample's "
                                     "index among the prompt's k samples; optional.")

    @model_validator(mode="after")
    def _consistent(self) -> SelectionConfig:
        if self.pass_rate_min > self.pass_rate_max:
            raise ValueError(f"pass_rate_min={self.pass_rate_min} is above pass_rate_max="
                             f"{self.pass_rate_max}; the window would keep no prompt")
        if not self.keep_all_correct and self.max_per_prompt not in (None, 1):
            raise ValueError(f"keep_all_correct=False keeps one sample per prompt but "
                             f"max_per_prompt={self.max_per_prompt}; set keep_all_correct=True "
                             f"to keep up to {self.max_per_prompt}")
        return self

    @property
    def cap(self) -> int | None:
        """The effective number kept per prompt (None = all)."""
        return self.max_per_prompt if self.keep_all_correct else 1


def pass_rates(df: pd.DataFrame, *, prompt_column: str = "prompt_id",
               correct_column: str = "correct") -> pd.Series:
    """Each row's prompt pass rate: share of the prompt's samples with correct True."""
    solved = df[correct_column].astype(object).map(lambda v: v is True or v is np.True_)
    return solved.astype(float).groupby(df[prompt_column], sort=False).transform("mean")


def select_samples(df: pd.DataFrame, cfg: SelectionConfig | None = None, *,
                   prompt_column: str = "prompt_id", correct_column: str = "correct",
                   already_rejected: pd.Series | None = None,
                   order: pd.Series | np.ndarray | None = None) -> pd.Series:
    """A reason per row ("pass_rate_window", "over_max_per_prompt") or None; rows already
    rejected (a non-null `already_rejected`) get None here and do not use up the cap. `order`
    (one number per row) breaks ties in sample order in place of the row position."""
    cfg = cfg or SelectionConfig()
    require_columns(df, [prompt_column], "select_samples", fix="pass prompt_column= naming the "
                    "column with the prompt each sample answers")
    missing = df.index[df[prompt_column].isna()]
    if len(missing):
        raise DistillError(f"select_samples: {len(missing)} rows have no {prompt_column!r} "
                           f"(first at index {missing[0]!r})",
                           fix="every sample needs its prompt's id")
    alive = np.ones(len(df), dtype=bool)
    if already_rejected is not None:
        if len(already_rejected) != len(df) or not already_rejected.index.equals(df.index):
            raise ValueError("select_samples: already_rejected must have the frame's index "
                             "(the reject_reason column of the same frame)")
        alive = already_rejected.isna().to_numpy(copy=True)
    if order is not None and len(order) != len(df):
        raise ValueError(f"select_samples: order has {len(order)} values for {len(df)} rows")
    reasons = np.full(len(df), None, dtype=object)
    if cfg.pass_rate_min > 0.0 or cfg.pass_rate_max < 1.0:
        require_columns(df, [correct_column], "select_samples (pass_rate_min/max)",
                        fix="run data.verify.verify_frame first, or pass correct_column=")
        rate = pass_rates(df, prompt_column=prompt_column, correct_column=correct_column)
        outside = ((rate < cfg.pass_rate_min) | (rate > cfg.pass_rate_max)).to_numpy()
        reasons[alive & outside] = "pass_rate_window"
        alive &= ~outside
    if cfg.cap is not None:
        rank = _rank_within_prompt(df, cfg, prompt_column, alive, order)
        over = alive & (rank >= cfg.cap)
        reasons[over] = "over_max_per_prompt"
    return pd.Series(reasons, index=df.index, dtype=object, name="reject_reason")


def _rank_within_prompt(df: pd.DataFrame, cfg: SelectionConfig, prompt_column: str,
                        alive: np.ndarray, tie: pd.Series | np.ndarray | None) -> np.ndarray:
    """0-based rank of each alive row within its prompt by the `prefer` order (dead rows: -1)."""
    order = pd.DataFrame({"prompt": df[prompt_column].to_numpy(),
                          "pos": np.arange(len(df)),
                          "tie": np.arange(len(df)) if tie is None else np.asarray(tie)})
    if cfg.sample_index_column in df.columns:
        order["sample"] = pd.to_numeric(df[cfg.sample_index_column]).to_numpy()
    else:
        order["sample"] = order["tie"]
    keys = ["sample", "tie"]
    if cfg.prefer == "shortest":
        order["length"] = _lengths(df)
        keys = ["length", "sample", "tie"]
    order = order[alive].sort_values(keys, kind="stable")  # cumcount keeps this order per prompt
    rank = np.full(len(df), -1)
    rank[order["pos"].to_numpy()] = order.groupby("prompt", sort=False).cumcount().to_numpy()
    return rank


def _lengths(df: pd.DataFrame) -> np.ndarray:
    if "completion_tokens" in df.columns:
        return pd.to_numeric(df["completion_tokens"]).to_numpy(dtype=float)
    if "reasoning" not in df.columns and "answer_text" not in df.columns:
        raise DistillError("select_samples(prefer='shortest') needs completion_tokens or the "
                           "reasoning/answer_text columns (columns: "
                           f"{list(df.columns)})", fix="run data.parsing.parse_frame first")
    total = np.zeros(len(df))
    for col in ("reasoning", "answer_text"):
        if col in df.columns:
            total += df[col].fillna("").str.len().to_numpy(dtype=float)
    return total

