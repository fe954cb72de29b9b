"""The curate stage's logic: `curate(traces, cfg) -> traces + keep/reject_reason + parsed columns`.

Rules run in this order, each only over rows that survived the ones before (so a duplicate is
never flagged against a row that was itself rejected):
1. parse (`<think>` split, final answer)      data.parsing   -> "parse_timeout"
   opt-in: a prompt without a reference takes its samples' majority answer
                                               data.majority  -> "no_reference"
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
(`canonical_order`: prompt_id, sample_index, request_id, then a digest of the text), never the
row order, so the same traces in any order give the same verdicts. Rules 1-4 look at one row
at a time (`parse_and_verify`, `flag_rows`: they run on any batch, anywhere); 5-8 compare rows.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.data.columns import require_columns
from distill.data.decontam import DecontamConfig, DecontamIndex
from distill.data.dedupe import DedupeConfig
from distill.data.filters import FilterConfig
from distill.data.selection import SelectionConfig
from distill.data.verify import VerifyConfig
from distill.pipeline.accounting import combine_reasons
from distill.pipeline.keys import RUNTIME
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


class ClusterConfig(BaseModel):
    """How the curate stage spreads over Ray (data.curate_ray); none of it changes results."""

    model_config = ConfigDict(extra="forbid")
    rows_per_block: int = Field(2048, ge=1, description="Rows per task of the per-row rules "
                                "(parse, verify, filters, decontamination); fewer when the input "
                                "is small, so every CPU gets work.", json_schema_extra=RUNTIME)
    rows_per_part: int = Field(2000, ge=1, description="Rows per output file: a part holds whole "
                               "prompts and is deduped, selected and written by one worker.",
                               json_schema_extra=RUNTIME)
    task_cpus: float = Field(0.5, gt=0, description="CPUs each task asks Ray for (a fraction, so "
                             "tasks never wait for a whole CPU an actor holds).",
                             json_schema_extra=RUNTIME)
    sort_shuffle_max_blocks: int = Field(32, ge=0, description="Shuffles over at most this many "
                                         "blocks run as a sort (tasks: quick to start, but "
                                         "blocks^2 objects); larger ones as Ray's default "
                                         "(hash) shuffle.", json_schema_extra=RUNTIME)


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
    plain_sources: list[str] = Field(default_factory=list, description=(
        "Sources (prompts.sources names) whose answers are plain, non-reasoning ones (e.g. "
        "DeepSeek-V3's): their rows need no <think>, are not verified, and skip the no_answer "
        "and wrong_answer rules; every other rule applies (data.curate.plain_split)."))
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="How the stage "
                                   "spreads over Ray (results unchanged).")


REQUIRED = ("prompt_id", "problem", "reference", "text")
ORDER_KEYS = ("prompt_id", "sample_index", "request_id", "text")
_ORDER = "_curate_order"
_SEP = "\x00"


def _sortable(values: pd.Series, column: str) -> list[str]:
    """Strings that sort as `values` do (numbers by value, texts by code point, missing first);
    the text column by its xxh3 digest (a content tie-break that spares sorting long texts)."""
    import xxhash

    if column == "text":
        return [xxhash.xxh3_64_hexdigest(v.encode("utf-8", "replace")) if isinstance(v, str)
                else "" for v in values.tolist()]
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        bits = pd.to_numeric(values).to_numpy(np.float64, na_value=np.nan).view(np.uint64)
        top = np.uint64(1 << 63)
        bits = np.where(bits & top, ~bits, bits | top)  # IEEE order as unsigned order
        missing = pd.isna(values).to_numpy()
        return ["" if m else f"{b:016x}" for b, m in zip(bits.tolist(), missing)]
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in values.tolist()]


def order_keys(rows: pd.DataFrame) -> pd.Series:
    """Each row's canonical sort key, a string: ORDER_KEYS (those present) encoded so that
    sorting the strings sorts the rows by them (text by its digest). A function of the row
    alone, so any worker computes it for its batch and every worker agrees."""
    parts = [_sortable(rows[c], c) for c in ORDER_KEYS if c in rows.columns]
    return pd.Series([_SEP.join(p) for p in zip(*parts)] if parts else [""] * len(rows),
                     index=rows.index, dtype=object)


def canonical_order(rows: pd.DataFrame, keys: pd.Series | None = None) -> np.ndarray:
    """Each row's place (0..n-1) when sorted by its order_keys (`keys` if given): a function
    of the rows' content, so choices made by it do not depend on the order rows arrive in."""
    keys = order_keys(rows) if keys is None else keys
    order = np.empty(len(rows), dtype=np.int64)
    order[np.argsort(keys.to_numpy(dtype=object), kind="stable")] = np.arange(len(rows))
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


def _lap(timings: dict[str, float] | None) -> Callable[[str], None]:
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + now - clock[0]
        clock[0] = now
    return lap


def parse_rows(traces: pd.DataFrame, cfg: CurateConfig) -> pd.DataFrame:
    """Rule 1 on any batch of traces: the parsed columns and `parse_error`."""
    from distill.data.parsing import parse_frame

    require_columns(traces, REQUIRED, "curate", fix="curate reads the generate stage's traces "
                    "(prompt_id, problem, reference, text); pass a frame with those columns")
    rows = parse_frame(traces, text_column="text", think_required=cfg.parse.think_required,
                       reasoning_column="reasoning" if "reasoning" in traces else None,
                       timeout_s=cfg.parse.timeout_s)
    if cfg.parse.answer_fallback:
        missing = rows["final_answer"].isna()
        rows.loc[missing, "final_answer"] = rows.loc[missing, "answer_text"].where(
            rows.loc[missing, "answer_text"].str.strip() != "", None)
    return rows


def majority_for(rows: pd.DataFrame, cfg: CurateConfig) -> pd.DataFrame:
    """data.majority's table for the prompts of `rows` (parsed, whole prompts) with no reference."""
    from distill.data.majority import majority_table
    from distill.data.mathverify import present

    missing = rows[~rows["reference"].map(present)]
    return majority_table(missing, order_keys(missing), timeout_s=cfg.verify.timeout_s,
                          workers=cfg.verify.workers)


def plain_split(rows: pd.DataFrame, cfg: CurateConfig) -> list[tuple[pd.DataFrame, CurateConfig]] | None:
    """With `plain_sources` and rows of them: [(plain rows, their settings: no <think> required,
    no verification, no answer rules), (the other rows, the recipe's settings)]; else None."""
    if not cfg.plain_sources or "source" not in rows.columns:
        return None
    plain = rows["source"].isin(set(cfg.plain_sources)).to_numpy()
    if not plain.any():
        return None
    base = cfg.model_copy(update={"plain_sources": []})
    filters = cfg.filters.model_copy(update={
        "no_answer": cfg.filters.no_answer.model_copy(update={"enabled": False}),
        "wrong_answer": cfg.filters.wrong_answer.model_copy(update={"enabled": False})})
    flat = base.model_copy(update={
        "parse": cfg.parse.model_copy(update={"think_required": False}),
        "verify": cfg.verify.model_copy(update={"method": "none", "majority_reference":
                                                cfg.verify.majority_reference.model_copy(
                                                    update={"enabled": False})}),
        "filters": filters})
    return [(rows[plain], flat), (rows[~plain], base)]


def _rejoin(parts: list[pd.DataFrame], index: pd.Index) -> pd.DataFrame:
    return pd.concat([p for p in parts if len(p)]).reindex(index)


def parse_and_verify(traces: pd.DataFrame, cfg: CurateConfig, *,
                     judge: Callable[[list[str]], list[str]] | None = None,
                     lap: Callable[[str], None] = lambda name: None,
                     majority: pd.DataFrame | dict | None = None) -> pd.DataFrame:
    """Rules 1-2 on any batch of traces: the parsed columns, `parse_error` (for flag_rows) and
    `correct`. Each row's result depends on that row alone, and, with
    verify.majority_reference on, on its prompt's entry in `majority` (majority_for over whole
    prompts; computed here when not given, so then `traces` must hold whole prompts)."""
    from distill.data.verify import verify_frame

    if (split := plain_split(traces, cfg)) is not None:
        return _rejoin([parse_and_verify(part, c, judge=judge, lap=lap, majority=majority)
                        for part, c in split if len(part)], traces.index)
    rows = parse_rows(traces, cfg)
    lap("parse")
    agree = cfg.verify.majority_reference
    if agree.enabled:
        from distill.data.majority import apply_majority

        rows, no_reference = apply_majority(
            rows, majority_for(rows, cfg) if majority is None else majority, agree.min_agreement)
        rows["parse_error"] = combine_reasons(rows["parse_error"], no_reference)
    rows["correct"] = verify_frame(rows, cfg.verify, judge=judge)
    lap("verify")
    return rows


def flag_rows(rows: pd.DataFrame, cfg: CurateConfig, *, index: DecontamIndex | None = None,
              lap: Callable[[str], None] = lambda name: None) -> pd.DataFrame:
    """Rules 3-4 on parse_and_verify's rows: `reject_reason` (the first per-row reason, None
    for survivors) in place of `parse_error`. `index`: a prebuilt decontamination index."""
    from distill.data.decontam import flag_contaminated
    from distill.data.filters import apply_filters

    if (split := plain_split(rows, cfg)) is not None:
        return _rejoin([flag_rows(part, c, index=index, lap=lap) for part, c in split if len(part)],
                       rows.index)
    rows = rows.copy()
    reasons = combine_reasons(rows.pop("parse_error"),
                              apply_filters(rows.assign(prompt=rows["problem"]), cfg.filters))
    lap("filters")
    if cfg.decontam.enabled:
        reasons = combine_reasons(reasons, flag_contaminated(rows, cfg.decontam,
                                                             column="problem", index=index))
    lap("decontam")
    rows["reject_reason"] = reasons
    return rows


def select(rows: pd.DataFrame, reasons: pd.Series, order: np.ndarray,
           cfg: CurateConfig) -> pd.DataFrame:
    """Rule 8 over rows holding whole prompts: `rows` with its final `reject_reason` and
    `keep` (order: the rows' canonical order, or any order that agrees with it)."""
    from distill.data.selection import select_samples

    rows = rows.drop(columns=["reject_reason", _ORDER], errors="ignore")
    reasons = combine_reasons(reasons, select_samples(rows, cfg.selection,
                                                      already_rejected=reasons, order=order))
    rows["reject_reason"] = reasons
    rows["keep"] = reasons.isna()
    return rows


def curate(traces: pd.DataFrame, cfg: CurateConfig, *,
           judge: Callable[[list[str]], list[str]] | None = None,
           timings: dict[str, float] | None = None) -> pd.DataFrame:
    """Parsed, verified and flagged copy of `traces` (needs prompt_id, problem, reference, text;
    sample_index and request_id fix the order among a prompt's samples), in this process. The
    curate stage runs the same rules on Ray Data (data.curate_ray), with equal results."""
    lap = _lap(timings)
    rows = flag_rows(parse_and_verify(traces, cfg, judge=judge, lap=lap), cfg, lap=lap)
    rows[_ORDER] = canonical_order(rows)
    reasons = rows["reject_reason"]
    if cfg.dedupe_prompts is not None:
        reasons = combine_reasons(reasons, _dedupe(rows, reasons.isna(), cfg.dedupe_prompts, "prompt_", "prompt"))
    if cfg.dedupe_responses is not None:
        reasons = combine_reasons(reasons, _dedupe(rows, reasons.isna(), cfg.dedupe_responses, "", "response"))
    if cfg.dedupe_across_prompts is not None:
        reasons = combine_reasons(reasons, _dedupe(rows, reasons.isna(), cfg.dedupe_across_prompts,
                                                   "cross_prompt_", "response"))
    lap("dedupe")
    rows = select(rows, reasons, rows[_ORDER].to_numpy(), cfg)
    lap("selection")
    return rows
