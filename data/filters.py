"""The DeepSeek-R1 rejection rules: one reason per rule, flagged, never dropped.

    from distill.data.filters import FilterConfig, FILTERS, apply_filters
    df["reject_reason"] = apply_filters(df, FilterConfig())      # first reason per row, None = keep
    FILTERS["language_mix"](df, FilterConfig())                   # one rule on its own

Every rule takes a pandas batch (or a pyarrow Table) and a FilterConfig and returns a Series of
its reason or None, on the same index; a disabled rule returns all None. FILTERS lists them in
the order apply_filters tries them. Columns read (the curate stage makes them with
data.parsing.parse_frame and data.verify.verify_frame):

| reason | fires when | reads |
|---|---|---|
| empty_response | neither reasoning nor answer (null or blank text, empty think tags), not at the cap | reasoning, answer_text, finish_reason |
| truncated | finish_reason == "length", or reasoning never closed | finish_reason, think_closed |
| no_answer | answer empty, or no final answer (`final_answer_tasks`) | answer_text, final_answer |
| wrong_answer | correct is False | correct |
| undecided | correct is None and `wrong_answer.reject_undecided` | correct |
| language_mix | share of letter units outside the prompt's script > max_share | reasoning, prompt |
| long_paragraph | a paragraph (text between blank lines) over max_chars | reasoning |
| code_in_reasoning | a line starting with ``` in a task not in allowed_tasks | reasoning, task |
| repetition | share of duplicate word 10-grams > max_duplicate_share (0.3) | reasoning |
| too_short/too_long | completion tokens outside [min_tokens, max_tokens] | completion_tokens |

Scripts for language_mix: latin, cyrillic, cjk (Han, kana, Hangul), arabic, hebrew, devanagari,
thai. Greek never counts (θ, π, α are math), and in a non-Latin prompt Latin letters do not count
as foreign (LaTeX and variables are Latin), so Chinese reasoning for a Chinese prompt with
English words in it is not flagged: a known limit. The prompt's script is its most frequent one
(`default_script` when the prompt column is missing or has no letters). Counts are in letter
units: a letter is one, a CJK character (Han, kana, Hangul) is SCRIPT_WEIGHTS["cjk"] = 3, since
one carries about a word (English averages ~4.7 letters a word, Chinese ~1.5 characters), so
both the share and `min_letters` (50: about ten words, or 17 CJK characters) mean the same
amount of text in every script.

Repetition: 1 - unique/total over the word 10-grams of the reasoning (whitespace words); on the
R1-Distill fixtures normal traces score 0.00-0.16 and a trace looping until the 32,768-token
cap scores 0.52. Traces under `min_words` words are not judged.

Token counts come from the `completion_tokens` column where present (per row), else an estimate:
whitespace-separated pieces (spaces + newlines) of reasoning + answer times `tokens_per_word`
(1.65: the mean on those fixtures, range 1.2-2.3).
"""
from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.data.columns import require_columns
from distill.pipeline.errors import DistillError

SCRIPTS: dict[str, str] = {
    "latin": "A-Za-z\u00c0-\u024f",
    "cyrillic": "\u0400-\u04ff",
    "cjk": "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff",
    "arabic": "\u0600-\u06ff",
    "hebrew": "\u0590-\u05ff",
    "devanagari": "\u0900-\u097f",
    "thai": "\u0e00-\u0e7f",
}
SCRIPT_WEIGHTS: dict[str, int] = {"cjk": 3}  # letter units per character (1 when not listed)
_SCRIPT_RES = {name: re.compile(f"[{chars}]") for name, chars in SCRIPTS.items()}
_ASCII_LETTERS = string.ascii_letters.encode("ascii")
_ASCII = bytes(range(128))
_PARAGRAPH_SPLIT = re.compile(r"\n[ \t\r]*\n")
_FENCE = re.compile(r"(?m)^[ \t]*```")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Apply this rule.")


class TruncatedRule(_Rule):
    finish_reason_column: str = Field("finish_reason", description="Teacher finish reason "
                                      "column ('length' = hit max tokens); used if present.")


class NoAnswerRule(_Rule):
    final_answer_tasks: list[str] = Field(["math"], description="Tasks whose answer must hold a "
                                          "final answer (boxed etc.); other tasks only need a "
                                          "non-empty answer.")


class WrongAnswerRule(_Rule):
    reject_undecided: bool = Field(True, description="Also reject rows whose correctness could "
                                   "not be decided (correct is None), reason 'undecided'.")
    correct_column: str = Field("correct", description="Column of True/False/None verdicts.")


class LanguageMixRule(_Rule):
    max_share: float = Field(0.05, ge=0, le=1, description="Largest share of letters in the "
                             "reasoning written in a script other than the prompt's.")
    min_letters: int = Field(50, ge=0, description="Reasoning with fewer letters is not judged.")
    prompt_column: str = Field("prompt", description="Column with the prompt text.")
    default_script: str = Field("latin", description="Script assumed when the prompt column is "
                                "missing or has no letters.")


class LongParagraphRule(_Rule):
    max_chars: int = Field(3000, gt=0, description="Longest paragraph allowed (characters "
                           "between blank lines).")


class CodeInReasoningRule(_Rule):
    allowed_tasks: list[str] = Field(["code"], description="Tasks where code in the reasoning "
                                     "is fine.")


class RepetitionRule(_Rule):
    n: int = Field(10, ge=2, description="Word n-gram size.")
    max_duplicate_share: float = Field(0.3, ge=0, le=1, description="Largest share of n-grams "
                                       "that repeat an earlier one.")
    min_words: int = Field(100, ge=0, description="Reasoning with fewer words is not judged.")


class TooShortRule(_Rule):
    min_tokens: int = Field(10, ge=0, description="Fewest completion tokens kept.")


class TooLongRule(_Rule):
    max_tokens: int = Field(32768, gt=0, description="Most completion tokens kept (the R1 "
                            "generation cap; lower it to your SFT max length).")


class FilterConfig(BaseModel):
    """Settings of every rejection rule, one group per rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    truncated: TruncatedRule = Field(default_factory=TruncatedRule,
                                     description="truncated and empty_response")
    no_answer: NoAnswerRule = Field(default_factory=NoAnswerRule, description="no_answer")
    wrong_answer: WrongAnswerRule = Field(default_factory=WrongAnswerRule,
                                          description="wrong_answer and undecided")
    language_mix: LanguageMixRule = Field(default_factory=LanguageMixRule,
                                          description="language_mix")
    long_paragraph: LongParagraphRule = Field(default_factory=LongParagraphRule,
                                              description="long_paragraph")
    code_in_reasoning: CodeInReasoningRule = Field(default_factory=CodeInReasoningRule,
                                                   description="code_in_reasoning")
    repetition: RepetitionRule = Field(default_factory=RepetitionRule, description="repetition")
    too_short: TooShortRule = Field(default_factory=TooShortRule, description="too_short")
    too_long: TooLongRule = Field(default_factory=TooLongRule, description="too_long")
    reasoning_column: str = Field("reasoning", description="Text the reasoning rules read.")
    task_column: str = Field("task", description="Task kind per row ('math', 'code'); optional.")
    default_task: str = Field("math", description="Task when the task column is absent or empty.")
    token_column: str = Field("completion_tokens", description="Completion token counts; "
                              "optional (estimated from words when absent).")
    tokens_per_word: float = Field(1.65, gt=0, description="Tokens per whitespace word for the "
                                   "estimate.")


Rule = Callable[..., pd.Series]


def as_frame(data) -> pd.DataFrame:
    """A pandas frame from a DataFrame or a pyarrow Table."""
    if isinstance(data, pd.DataFrame):
        return data
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data.to_pandas()
    raise TypeError(f"filters take a pandas DataFrame or a pyarrow Table, not {type(data)!r}")


def _rule(reason: str, section: str) -> Callable[[Callable], Rule]:
    """Wrap a mask function (frame, cfg) -> bool array into a reason-returning rule."""

    def wrap(fn: Callable[[pd.DataFrame, FilterConfig], np.ndarray]) -> Rule:
        @functools.wraps(fn)
        def run(data, cfg: FilterConfig | None = None) -> pd.Series:
            df, cfg = as_frame(data), cfg or FilterConfig()
            mask = np.zeros(len(df), dtype=bool)
            if getattr(cfg, section).enabled and len(df):
                mask = np.asarray(fn(df, cfg), dtype=bool)
            return pd.Series(np.where(mask, reason, None), index=df.index, dtype=object,
                             name=reason)

        run.section = section  # type: ignore[attr-defined]
        return run

    return wrap


def _col(df: pd.DataFrame, column: str, rule: str, fix: str) -> pd.Series:
    require_columns(df, [column], f"filter {rule!r}", fix=fix)
    return df[column]


def _texts(df: pd.DataFrame, column: str, rule: str) -> pd.Series:
    s = _col(df, column, rule, "run data.parsing.parse_frame first or set the column name")
    return s.fillna("")


def _tasks(df: pd.DataFrame, cfg: FilterConfig) -> pd.Series:
    if cfg.task_column not in df.columns:
        return pd.Series(cfg.default_task, index=df.index, dtype=object)
    return df[cfg.task_column].astype(object).where(df[cfg.task_column].notna(), cfg.default_task)


def _correct(df: pd.DataFrame, cfg: FilterConfig, rule: str) -> pd.Series:
    col = cfg.wrong_answer.correct_column
    s = _col(df, col, rule, "run data.verify.verify_frame first, or disable wrong_answer")
    return s.astype(object).map(lambda v: None if pd.isna(v) else bool(v))


@_rule("empty_response", "truncated")
def empty_response(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """Neither reasoning nor answer (a null or blank text, or empty think tags) though the
    teacher was not cut off: said as such, not as `truncated` (an empty text's reasoning never
    closes) or `no_answer`. A blank text at the token cap stays `truncated`. Switched with the
    truncated rule."""
    empty = _texts(df, cfg.reasoning_column, "empty_response").str.strip().eq("") & _texts(
        df, "answer_text", "empty_response").str.strip().eq("")
    fr_col = cfg.truncated.finish_reason_column
    if fr_col in df.columns:
        empty &= df[fr_col].astype(object).ne("length")
    return empty.to_numpy(dtype=bool)


@_rule("truncated", "truncated")
def truncated(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """The teacher hit its token cap, or the reasoning never closed."""
    fr_col = cfg.truncated.finish_reason_column
    if fr_col not in df.columns and "think_closed" not in df.columns:
        raise DistillError(f"filter 'truncated' needs {fr_col!r} or 'think_closed' (columns: "
                           f"{list(df.columns)})", fix="run data.parsing.parse_frame first, or "
                           "set truncated.finish_reason_column")
    mask = np.zeros(len(df), dtype=bool)
    if fr_col in df.columns:
        mask |= (df[fr_col].astype(object) == "length").to_numpy(dtype=bool)
    if "think_closed" in df.columns:
        mask |= ~df["think_closed"].fillna(False).astype(bool).to_numpy()
    return mask


@_rule("no_answer", "no_answer")
def no_answer(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """Empty answer part, or no final answer where the task needs one."""
    empty = _texts(df, "answer_text", "no_answer").str.strip().eq("").to_numpy(dtype=bool)
    final = _col(df, "final_answer", "no_answer", "run data.parsing.parse_frame first")
    needs = _tasks(df, cfg).isin(cfg.no_answer.final_answer_tasks).to_numpy(dtype=bool)
    missing = final.map(lambda v: not isinstance(v, str) or not v.strip()).to_numpy(dtype=bool)
    return empty | (needs & missing)


@_rule("wrong_answer", "wrong_answer")
def wrong_answer(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """The verifier said the answer is wrong."""
    return _correct(df, cfg, "wrong_answer").map(lambda v: v is False).to_numpy(dtype=bool)


@_rule("undecided", "wrong_answer")
def undecided(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """The verifier could not decide, and reject_undecided is on."""
    if not cfg.wrong_answer.reject_undecided:
        return np.zeros(len(df), dtype=bool)
    return _correct(df, cfg, "undecided").isna().to_numpy(dtype=bool)


def letter_counts(text: str) -> dict[str, int]:
    """Letter units per script in `text` (only scripts present; a CJK character counts
    SCRIPT_WEIGHTS["cjk"]), in C-speed passes."""
    raw = text.encode("utf-8", "surrogatepass")
    counts = {"latin": len(raw) - len(raw.translate(None, _ASCII_LETTERS))}
    if text.isascii():
        return {k: v for k, v in counts.items() if v}
    rest = raw.translate(None, _ASCII).decode("utf-8", "surrogatepass")  # non-ASCII, in order
    for name, pattern in _SCRIPT_RES.items():
        n = len(rest) - len(pattern.sub("", rest))
        if n:
            counts[name] = counts.get(name, 0) + n * SCRIPT_WEIGHTS.get(name, 1)
    return {k: v for k, v in counts.items() if v}


def foreign_share(text: str, script: str) -> tuple[float, int]:
    """(share of letter units not in `script`, letter units); Latin is never foreign in a
    non-Latin script (see above)."""
    counts = letter_counts(text)
    total = sum(counts.values())
    own = counts.get(script, 0) + (counts.get("latin", 0) if script != "latin" else 0)
    return ((total - own) / total if total else 0.0), total


def _prompt_script(prompt: object, default: str) -> str:
    counts = letter_counts(prompt) if isinstance(prompt, str) else {}
    return max(counts, key=counts.__getitem__) if counts else default


@_rule("language_mix", "language_mix")
def language_mix(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """Too many reasoning letters in a script other than the prompt's."""
    rule = cfg.language_mix
    if rule.default_script not in SCRIPTS:
        raise DistillError(f"filters.language_mix.default_script {rule.default_script!r} is "
                           "not a script we count", fix=f"use one of {sorted(SCRIPTS)}")
    text = _texts(df, cfg.reasoning_column, "language_mix")
    prompts = (df[rule.prompt_column] if rule.prompt_column in df.columns
               else pd.Series(None, index=df.index, dtype=object))
    out = np.zeros(len(df), dtype=bool)
    for i, (t, p) in enumerate(zip(text, prompts)):
        share, total = foreign_share(t, _prompt_script(p, rule.default_script))
        out[i] = total >= rule.min_letters and share > rule.max_share
    return out


def _longest_paragraph(text: str, limit: int) -> int:
    if len(text) <= limit:
        return len(text)
    return max(map(len, _PARAGRAPH_SPLIT.split(text)))


@_rule("long_paragraph", "long_paragraph")
def long_paragraph(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """A paragraph of the reasoning is longer than max_chars."""
    limit = cfg.long_paragraph.max_chars
    text = _texts(df, cfg.reasoning_column, "long_paragraph")
    return np.fromiter((_longest_paragraph(t, limit) > limit for t in text), bool, len(df))


@_rule("code_in_reasoning", "code_in_reasoning")
def code_in_reasoning(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """A fenced code block in the reasoning of a task that is not about code."""
    text = _texts(df, cfg.reasoning_column, "code_in_reasoning")
    applies = ~_tasks(df, cfg).isin(cfg.code_in_reasoning.allowed_tasks).to_numpy(dtype=bool)
    fenced = np.fromiter((("```" in t) and _FENCE.search(t) is not None for t in text), bool,
                         len(df))
    return applies & fenced


_HASH_BASE = np.uint64(0x100000001B3)


def duplicate_ngram_share(text: str, n: int = 10) -> float:
    """1 - unique/total over the word n-grams of `text` (0.0 when it has fewer than n words).

    Words are hashed with Python's str hash and n-grams combined by a 64-bit polynomial, so
    two different n-grams collide with odds of about 2**-64 per pair.
    """
    return _duplicate_share(text.split(), n)


def _duplicate_share(words: list[str], n: int) -> float:
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    grams = ids[:total].copy()
    for i in range(1, n):
        grams = grams * _HASH_BASE + ids[i:i + total]
    return 1.0 - len(set(grams.tolist())) / total


@_rule("repetition", "repetition")
def repetition(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """The reasoning repeats itself (duplicate word n-grams)."""
    rule, limit = cfg.repetition, cfg.repetition.max_duplicate_share
    text = _texts(df, cfg.reasoning_column, "repetition")

    def fires(t: str) -> bool:
        words = t.split()
        return len(words) >= rule.min_words and _duplicate_share(words, rule.n) > limit

    return np.fromiter((fires(t) for t in text), bool, len(df))


def completion_tokens(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """Token counts per row: the token column where set, else the word-based estimate."""
    known = (np.array(df[cfg.token_column].to_numpy(dtype=float, na_value=np.nan))
             if cfg.token_column in df.columns else np.full(len(df), np.nan))
    missing = np.isnan(known)
    if missing.any():
        sub = df.loc[missing]
        words = (_texts(sub, cfg.reasoning_column, "too_short/too_long").map(_n_words)
                 + _texts(sub, "answer_text", "too_short/too_long").map(_n_words))
        known[missing] = words.to_numpy(dtype=float) * cfg.tokens_per_word
    return known


def _n_words(text: str) -> int:
    """Whitespace-separated pieces, counted as spaces + newlines (C speed; ~1.05x split())."""
    return text.count(" ") + text.count("\n") + 1 if text else 0


@_rule("too_short", "too_short")
def too_short(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """Fewer completion tokens than min_tokens."""
    return completion_tokens(df, cfg) < cfg.too_short.min_tokens


@_rule("too_long", "too_long")
def too_long(df: pd.DataFrame, cfg: FilterConfig) -> np.ndarray:
    """More completion tokens than max_tokens."""
    return completion_tokens(df, cfg) > cfg.too_long.max_tokens


FILTERS: dict[str, Rule] = {
    "empty_response": empty_response,
    "truncated": truncated,
    "no_answer": no_answer,
    "wrong_answer": wrong_answer,
    "undecided": undecided,
    "language_mix": language_mix,
    "long_paragraph": long_paragraph,
    "code_in_reasoning": code_in_reasoning,
    "repetition": repetition,
    "too_short": too_short,
    "too_long": too_long,
}


def apply_filters(data, cfg: FilterConfig | None = None) -> pd.Series:
    """The first reject reason per row (None = keep), trying FILTERS in order.

    Each rule sees only the rows no earlier rule rejected, so the costly text rules run on
    fewer rows. The result has the input's index (a RangeIndex for a pyarrow Table).
    """
    df, cfg = as_frame(data), cfg or FilterConfig()
    work = df.reset_index(drop=True)
    reasons = np.full(len(work), None, dtype=object)
    alive = np.arange(len(work))
    for rule in FILTERS.values():
        if not len(alive):
            break
        section = getattr(rule, "section", None)  # user-added rules have none: always run
        if section is not None and not getattr(cfg, section).enabled:
            continue
        found = rule(work.iloc[alive], cfg).to_numpy()
        hit = pd.notna(found)
        reasons[alive[hit]] = found[hit]
        alive = alive[~hit]
    return pd.Series(reasons, index=df.index, dtype=object, name="reject_reason")
