"""Decide whether each answer is correct: math by math-verify, code by tests, optionally a judge.

    from distill.data.verify import VerifyConfig, verify_math, verify_frame
    verify_math([("\\frac{1}{2}", "0.5"), ("2", "The answer is $\\boxed{3}$")])  # [True, False]
    df["correct"] = verify_frame(df, VerifyConfig(), reference_column="answer")

Verdicts are True, False, or None when the pair could not be decided (data.mathverify says
exactly what math-verify is given): an extracted answer (`\\frac{14}{3}`, what `data.parsing`
takes from `\\boxed{}`) is read as `\\boxed{answer}`; an answer that is the row's whole answer
text (curate's `answer_fallback`) is given as is, so math-verify finds the answer in it.

math-verify times out with `signal.alarm`, which works only in a process's main thread, so
batches run through data.mathverify.map_main_thread (one alarm per item, a process pool off
the main thread or for big batches). A judge (any teacher: prompts -> completions) can decide
what the rules left undecided (`judge_prompt` builds its prompt, `parse_verdict` its YES/NO).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.data.majority import MajorityReferenceConfig
from distill.data.mathverify import (
    IN_PROCESS_MAX,
    Answer,
    WholeText,
    map_main_thread,
    present,
    verify_one,
    verify_pair,
)
from distill.data.verify_code import CodeVerifyConfig  # light: pandas, pydantic and the stdlib
from distill.pipeline.keys import RUNTIME

__all__ = ["IN_PROCESS_MAX", "JudgeConfig", "VerifyConfig", "WholeText", "judge_prompt",
           "judge_undecided", "parse_verdict", "verify_frame", "verify_math", "verify_one"]

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
    majority_reference: MajorityReferenceConfig = Field(
        default_factory=MajorityReferenceConfig, description="A prompt without a reference "
        "answer takes its samples' majority answer (data.majority); off by default.")


def verify_math(pairs: Sequence[tuple[Answer | None, Answer | None]], *, timeout_s: float = 5.0,
                workers: int = 0, in_process_max: int = IN_PROCESS_MAX) -> list[bool | None]:
    """Verdicts for (gold, answer) pairs, in order; wrap a whole answer text in WholeText.

    Inside a Ray Data function UDF, pass workers=1 (Ray already runs one task per CPU, and each
    call would start its own pool); from a thread other than the main one a pool is always used.
    """
    return map_main_thread(partial(verify_pair, timeout_s=timeout_s), list(pairs),
                           workers=workers, in_process_max=in_process_max)


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
    asked &= df[answer_column].map(present) & df[reference_column].map(present)
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
                 answer_column: str = "final_answer", text_column: str | None = "answer_text",
                 judge: Callable[[list[str]], list[str]] | None = None) -> pd.Series:
    """The `correct` column (True/False/None per row, same index) for `df`.

    A row whose answer equals its `text_column` value (the whole answer text, as curate's
    `answer_fallback` puts it) is verified as a WholeText; other answers as extracted answers.
    """
    if cfg.method == "none":
        return pd.Series([None] * len(df), index=df.index, dtype=object, name="correct")
    if cfg.method == "code":
        from distill.data.verify_code import verify_code_frame

        return verify_code_frame(df, cfg.code).rename("correct")
    _require(df, reference_column, "reference_column")
    _require(df, answer_column, "answer_column")
    answers = df[answer_column].tolist()
    if text_column is not None and text_column in df.columns:
        answers = [WholeText(a) if isinstance(a, str) and a == t else a
                   for a, t in zip(answers, df[text_column].tolist())]
    pairs = list(zip(df[reference_column].tolist(), answers))
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
