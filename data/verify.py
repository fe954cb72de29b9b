"""Decide whether each answer is correct: math by math-verify, code by tests, optionally a judge.

    from distill.data.verify import VerifyConfig, verify_math, verify_frame
    verify_math([("\\frac{1}{2}", "0.5"), ("2", "The answer is $\\boxed{3}$")])  # [True, False]
    df["correct"] = verify_frame(df, VerifyConfig(), reference_column="answer")

Verdicts are True, False, or None when the pair could not be decided: a side is missing, a side
does not parse to a math object (math-verify kept only its raw text, e.g. `\\frac{`) and the
texts differ, or the item ran past `timeout_s`. A bare answer with no math
delimiters (`\\frac{14}{3}`, `6 - 5i`, what `data.parsing` extracts from `\\boxed{}`) is read
as `$...$`; text that already has `$`, `\\(`, `\\[` or `\\boxed` is given to math-verify as is.

math-verify times out with `signal.alarm`, which works only in a process's main thread, so the
batch runs in a process pool (forkserver where available, else spawn), in chunks, with one
alarm per item covering parse and compare; small batches and `workers=1` run in-process when
this is the main thread. A judge (any teacher: prompts -> completions) can decide what the rules
left undecided (`judge_prompt` builds its prompt, `parse_verdict` reads its YES/NO).
"""
from __future__ import annotations

import math
import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Literal

import pandas as pd
from distill.data.verify_code import CodeVerifyConfig  # light: pandas, pydantic and the stdlib
from distill.pipeline.keys import RUNTIME
from pydantic import BaseModel, ConfigDict, Field

# A pool takes 2-4 s to start (forkserver importing sympy) and one process verifies about 120
# long answer texts a second here, so below this many pairs in-process is as fast or faster.
IN_PROCESS_MAX = 256
_DELIMS = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")

JUDGE_TEMPLATE = (
    "You are checking a student's answer to a math problem against the reference answer.\n\n"
    "Problem:\n{problem}\n\nReference answer:\n{reference}\n\nStudent's final answer:\n{answer}\n\n"
    "Are the two answers mathematically equivalent (same value, set, or expression; ignore "
    "formatting and units written differently)? Reply with a single word on the last line: "
    "YES or NO."
)


class JudgeConfig(BaseModel):
    """A teacher asked whether an answer matches the reference (the R1 paper used DeepSeek-V3)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="Ask the judge about rows the rules left undecided "
                          "(implied by method='judge').")
    prompt_template: str = Field(JUDGE_TEMPLATE, description="Prompt with {problem}, "
                                 "{reference} and {answer} placeholders; the judge must end with "
                                 "YES or NO.")
    applies_to: Literal["undecided", "undecided_and_wrong"] = Field(
        "undecided", description="Which rule-based verdicts the judge sees: only None, or also "
        "False (to rescue answers math-verify cannot read, such as words).")
    problem_column: str = Field("problem", description="Column with the problem text.")
    max_answer_chars: int = Field(2000, gt=0, description="Answers are cut to this length in "
                                  "the prompt.")


class VerifyConfig(BaseModel):
    """How the curate stage decides correctness (the `correct` column)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["math", "code", "judge", "none"] = Field(
        "math", description="math: math-verify; code: run tests (data.verify_code); judge: "
        "math-verify, then the judge on what it left undecided; none: every row None.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds allowed per item (parse+compare).")
    workers: int = Field(0, ge=0, description="Processes for math-verify; 0 = os.cpu_count().", json_schema_extra=RUNTIME)
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The optional judge.")
    code: CodeVerifyConfig = Field(default_factory=CodeVerifyConfig, description="Sandbox "
                                   "limits and threads for method='code' (data.verify_code).")


def _as_math(s: str) -> str:
    """Bare answers get `$...$` so math-verify's LaTeX extraction sees them."""
    return s if _DELIMS.search(s) else f"${s}$"


def _present(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v).strip() != ""


class _ItemTimeout(BaseException):
    """Raised by our alarm; a BaseException so math-verify's `except Exception` lets it out."""


def _on_alarm(signum, frame):
    raise _ItemTimeout


def _quiet_math_verify() -> None:
    """We pass timeout None to math-verify (our alarm covers the item); skip its one warning."""
    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True


def _is_math(parsed: list) -> bool:
    """math-verify parsed a math object (not just its raw-text fallback)."""
    from sympy import Basic, MatrixBase

    return any(isinstance(x, (Basic, MatrixBase)) for x in parsed)


def verify_one(gold: object, pred: object, timeout_s: float = 5.0) -> bool | None:
    """One verdict, in this process; must run in the main thread (it sets SIGALRM)."""
    if not (_present(gold) and _present(pred)):
        return None
    from math_verify import parse, verify

    _quiet_math_verify()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        g = parse(_as_math(str(gold)), parsing_timeout=None)
        p = parse(_as_math(str(pred)), parsing_timeout=None)
        if not g or not p:
            return None
        if verify(g, p, timeout_seconds=None):
            return True
        return False if _is_math(g) and _is_math(p) else None  # a side only fell back to text
    except _ItemTimeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _verify_chunk(args: tuple[list[tuple[object, object]], float]) -> list[bool | None]:
    pairs, timeout_s = args
    return [verify_one(g, p, timeout_s) for g, p in pairs]


def _pool_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["math_verify", "sympy"])
        return ctx
    return mp.get_context("spawn")


def verify_math(pairs: Sequence[tuple[str, str]], *, timeout_s: float = 5.0, workers: int = 0,
                in_process_max: int = IN_PROCESS_MAX) -> list[bool | None]:
    """Verdicts for (gold, predicted answer or full answer text) pairs, in order.

    Inside a Ray Data function UDF, pass workers=1 (Ray already runs one task per CPU, and each
    call would start its own pool); from a thread other than the main one a pool is always used.
    """
    pairs = [(g, p) for g, p in pairs]
    n_workers = workers or os.cpu_count() or 1
    main = threading.current_thread() is threading.main_thread()
    if main and (n_workers == 1 or len(pairs) < in_process_max):
        return _verify_chunk((pairs, timeout_s))
    if not pairs:
        return []
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, min(256, math.ceil(len(pairs) / (n_workers * 4))))
    chunks = [(pairs[i:i + size], timeout_s) for i in range(0, len(pairs), size)]
    n_workers = min(n_workers, len(chunks))
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=_pool_context()) as pool:
        return [v for chunk in pool.map(_verify_chunk, chunks) for v in chunk]


def judge_prompt(template: str, problem: object, reference: object, answer: object,
                 max_answer_chars: int = 2000) -> str:
    """The judge's prompt for one row."""
    return template.format(problem=problem, reference=reference,
                           answer=str(answer)[:max_answer_chars])


def parse_verdict(completion: str | None) -> bool | None:
    """YES -> True, NO -> False from the judge's completion (its reasoning, if any, ignored)."""
    if not completion:
        return None
    from distill.data.parsing import parse_trace

    answer = parse_trace(completion, think_required=False).answer
    found = re.findall(r"\b(yes|no)\b", answer, flags=re.IGNORECASE)
    return None if not found else found[-1].lower() == "yes"


def judge_undecided(df: pd.DataFrame, verdicts: pd.Series, cfg: JudgeConfig,
                    judge: Callable[[list[str]], list[str]], *, reference_column: str,
                    answer_column: str) -> pd.Series:
    """`verdicts` with the rows the judge applies to replaced by its YES/NO (None if unclear)."""
    _require(df, cfg.problem_column, "judge.problem_column")
    asked = verdicts.isna() if cfg.applies_to == "undecided" else verdicts.ne(True)
    asked &= df[answer_column].map(_present) & df[reference_column].map(_present)
    rows = df.loc[asked]
    prompts = [judge_prompt(cfg.prompt_template, p, r, a, cfg.max_answer_chars) for p, r, a in
               zip(rows[cfg.problem_column], rows[reference_column], rows[answer_column])]
    if not prompts:
        return verdicts
    completions = list(judge(prompts))
    if len(completions) != len(prompts):
        raise ValueError(f"the judge returned {len(completions)} completions for "
                         f"{len(prompts)} prompts; it must return one per prompt, in order")
    out = verdicts.astype(object).copy()
    out.loc[rows.index] = [parse_verdict(c) for c in completions]
    return out


def verify_frame(df: pd.DataFrame, cfg: VerifyConfig, *, reference_column: str = "reference",
                 answer_column: str = "final_answer",
                 judge: Callable[[list[str]], list[str]] | None = None) -> pd.Series:
    """The `correct` column (True/False/None per row, same index) for `df`."""
    if cfg.method == "none":
        return pd.Series([None] * len(df), index=df.index, dtype=object, name="correct")
    if cfg.method == "code":
        from distill.data.verify_code import verify_code_frame

        return verify_code_frame(df, cfg.code).rename("correct")
    _require(df, reference_column, "reference_column")
    _require(df, answer_column, "answer_column")
    pairs = list(zip(df[reference_column].tolist(), df[answer_column].tolist()))
    verdicts = pd.Series(verify_math(pairs, timeout_s=cfg.timeout_s, workers=cfg.workers),
                         index=df.index, dtype=object, name="correct")
    if cfg.method == "judge" or cfg.judge.enabled:
        if judge is None:
            raise ValueError("verify: the judge is on (method='judge' or judge.enabled) but no "
                             "judge callable was given; pass judge=<prompts -> completions> or "
                             "turn judge.enabled off")
        verdicts = judge_undecided(df, verdicts, cfg.judge, judge,
                                   reference_column=reference_column, answer_column=answer_column)
    return verdicts.rename("correct")


def _require(df: pd.DataFrame, column: str, arg: str) -> None:
    if column not in df.columns:
        raise KeyError(f"verify: column {column!r} (from {arg}) is not in the frame; columns are "
                       f"{list(df.columns)}; pass {arg}= naming it (or run data.parsing."
                       f"parse_frame first for final_answer)")
