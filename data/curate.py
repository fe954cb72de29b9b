"""The curate stage's logic: `curate(traces, cfg) -> traces + keep/reject_reason + parsed columns`.

Rules run in this order, each only over rows that survived the ones before (so a duplicate is
never flagged against a row that was itself rejected):
1. parse (`<think>` split, final answer)      data.parsing   -> "parse_timeout"
2. verify (math-verify / code tests / judge)  data.verify -> `correct`
3. the R1 rejection rules                      data.filters (truncated, wrong_answer, ...)
4. decontamination against benchmarks          data.decontam  -> "contaminated"
5. prompt dedupe (exact + near)                data.dedupe    -> "prompt_duplicate_*"
6. response dedupe (exact + near), within each prompt by default
                                               data.dedupe    -> "duplicate_exact"/"duplicate_near"
7. opt-in: near-duplicate reasoning across prompts (dedupe_across_prompts, long texts only)
                                               data.dedupe    -> "cross_prompt_duplicate_*"
8. selection among a prompt's k samples        data.selection
Every input row comes out, kept or with its first reason, in the order it came in. Every choice
between rows (which duplicate is kept, which samples the cap keeps) follows the canonical order
(`canonical_order`: prompt_id, sample_index, request_id, text), never the row order, so the same
traces in any order give the same verdicts.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.data.columns import require_columns
from distill.data.decontam import DecontamConfig
from distill.data.dedupe import DedupeConfig
from distill.data.filters import FilterConfig
from distill.data.selection import SelectionConfig
from distill.data.verify import VerifyConfig
from distill.pipeline.accounting import combine_reasons
from distill.teachers.config import TeacherConfig


class ParseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    think_required: bool = Field(True, description="Text without </think> is unfinished reasoning "
                                 "(R1 teachers); false: a plain answer (instruct teachers).")
    answer_fallback: bool = Field(False, description="Where no final answer is extracted (no box, "
                                  "no 'Final answer:'), verify the whole answer text (math-verify "
                                  "takes its last expression), as lighteval does for plain models.")
    timeout_s: float = Field(2.0, gt=0, description="Seconds allowed to parse one row (parsing "
                             "is linear; this bounds a pathological text): a row past it is "
                             "rejected as parse_timeout and curation goes on.")


def _prompt_dedupe() -> DedupeConfig:
    return DedupeConfig(columns=["problem"])


class ResponseDedupeConfig(DedupeConfig):
    """Dedupe over responses: a DedupeConfig whose defaults compare a prompt's own samples."""

    columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1,
                               description="Response columns to dedupe over.")
    within: str | None = Field("prompt_id", description="Only a prompt's own samples can be "
                               "duplicates (two prompts may share the answer '22'); None: any two "
                               "rows (see dedupe_across_prompts for a safer cross-prompt rule).")


class CrossPromptDedupeConfig(DedupeConfig):
    """Near-duplicate reasoning across prompts: a DedupeConfig with defaults for that rule."""

    columns: list[str] = Field(default_factory=lambda: ["reasoning"], min_length=1,
                               description="Text columns compared across prompts.")
    min_chars: int = Field(500, ge=0, description="Texts with fewer characters (about 100 "
                           "words) are left out: short answers such as '22' legitimately repeat.")


class CurateConfig(BaseModel):
    """All curation settings; each part is documented in its own module."""

    model_config = ConfigDict(extra="forbid")
    parse: ParseConfig = Field(default_factory=ParseConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    dedupe_prompts: DedupeConfig | None = Field(default_factory=_prompt_dedupe,
                                                description="Dedupe over prompts (null: off).")
    dedupe_responses: ResponseDedupeConfig | None = Field(
        default_factory=ResponseDedupeConfig,
        description="Dedupe over responses (null: off); within each prompt by default.")
    dedupe_across_prompts: CrossPromptDedupeConfig | None = Field(None, description=(
        "Opt-in: flag reasoning that nearly duplicates another prompt's (at least min_chars "
        "characters), reason cross_prompt_duplicate_*; null: off."))
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    judge_teacher: TeacherConfig | None = Field(None, description=(
        "The model asked by the judge verifier (verify.method: judge or verify.judge.enabled), "
        "e.g. DeepSeek-V3 over HTTP; sampling.max_tokens can be small."))


REQUIRED = ("prompt_id", "problem", "reference", "text")
ORDER_KEYS = ("prompt_id", "sample_index", "request_id", "text")
_ORDER = "_curate_order"


def canonical_order(rows: pd.DataFrame) -> np.ndarray:
    """Each row's place (0..n-1) when sorted by ORDER_KEYS (those present): a function of the
    rows' content, so choices made by it do not depend on the order rows arrive in."""
    keys: list[np.ndarray] = []
    for column in (c for c in ORDER_KEYS if c in rows.columns):
        if keys and column == "text" and not pd.DataFrame(dict(enumerate(keys))).duplicated().any():
            break  # the ids already tell every row apart: spare the sort of long texts
        values = rows[column]
        keys.append(pd.factorize(values.astype(str) if values.dtype == object else values,
                                 sort=True)[0])
    order = np.empty(len(rows), dtype=np.int64)
    order[np.lexsort(keys[::-1])] = np.arange(len(rows))
    return order


def _dedupe(rows: pd.DataFrame, alive: pd.Series, cfg: DedupeConfig, prefix: str,
            unit: str) -> pd.Series:
    from distill.data.dedupe import flag_duplicates

    out = pd.Series([None] * len(rows), index=rows.index, dtype=object)
    live = rows[alive]
    if live.empty:
        return out
    for column in cfg.columns:
        if unit == "prompt":  # one vote per prompt; its rows share the verdict
            uniq = live.drop_duplicates("prompt_id")
            flags = flag_duplicates(uniq, cfg, column=column, order_column=_ORDER)
            by_prompt = dict(zip(uniq["prompt_id"], flags))
            new = live["prompt_id"].map(by_prompt)
        else:
            new = flag_duplicates(live, cfg, column=column, order_column=_ORDER)
        new = new.map(lambda r: None if r is None or pd.isna(r) else prefix + r)
        out = combine_reasons(out, pd.Series(new.to_numpy(), index=live.index, dtype=object))
    return out


def curate(traces: pd.DataFrame, cfg: CurateConfig, *,
           judge: Callable[[list[str]], list[str]] | None = None,
           timings: dict[str, float] | None = None) -> pd.DataFrame:
    """Parsed, verified and flagged copy of `traces` (needs prompt_id, problem, reference, text;
    sample_index and request_id fix the order among a prompt's samples)."""
    from distill.data.decontam import flag_contaminated
    from distill.data.filters import apply_filters
    from distill.data.parsing import parse_frame
    from distill.data.selection import select_samples
    from distill.data.verify import verify_frame

    require_columns(traces, REQUIRED, "curate", fix="curate reads the generate stage's traces "
                    "(prompt_id, problem, reference, text); pass a frame with those columns")
    timings = timings if timings is not None else {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    reasoning = "reasoning" if "reasoning" in traces and traces["reasoning"].notna().any() else None
    rows = parse_frame(traces.drop(columns=["reasoning"]) if reasoning is None and "reasoning" in traces
                       else traces, text_column="text", reasoning_column=reasoning,
                       think_required=cfg.parse.think_required, timeout_s=cfg.parse.timeout_s)
    parse_reasons = rows.pop("parse_error")
    if cfg.parse.answer_fallback:
        missing = rows["final_answer"].isna()
        rows.loc[missing, "final_answer"] = rows.loc[missing, "answer_text"].where(
            rows.loc[missing, "answer_text"].str.strip() != "", None)
    rows[_ORDER] = canonical_order(rows)
    lap("parse")
    rows["correct"] = verify_frame(rows, cfg.verify, judge=judge)
    lap("verify")
    reasons = combine_reasons(parse_reasons,
                              apply_filters(rows.assign(prompt=rows["problem"]), cfg.filters))
    lap("filters")
    if cfg.decontam.enabled:
        reasons = combine_reasons(reasons, flag_contaminated(rows, cfg.decontam, column="problem"))
    lap("decontam")
    if cfg.dedupe_prompts is not None:
        reasons = combine_reasons(reasons, _dedupe(rows, reasons.isna(), cfg.dedupe_prompts, "prompt_", "prompt"))
    if cfg.dedupe_responses is not None:
        reasons = combine_reasons(reasons, _dedupe(rows, reasons.isna(), cfg.dedupe_responses, "", "response"))
    if cfg.dedupe_across_prompts is not None:
        reasons = combine_reasons(reasons, _dedupe(rows, reasons.isna(), cfg.dedupe_across_prompts,
                                                   "cross_prompt_", "response"))
    lap("dedupe")
    order = rows.pop(_ORDER)
    reasons = combine_reasons(reasons, select_samples(rows, cfg.selection, already_rejected=reasons,
                                                      order=order))
    lap("selection")
    rows["reject_reason"] = reasons
    rows["keep"] = reasons.isna()
    return rows
