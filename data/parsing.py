"""Split a teacher's output into reasoning and answer, and pull out the final answer.

    from distill.data.parsing import parse_trace, parse_frame, extract_final_answer
    t = parse_trace("<think>2+2 is 4</think>The answer is $\\boxed{4}$.")
    t.reasoning, t.think_closed, t.final_answer   # '2+2 is 4', True, '4'
    df = parse_frame(df, text_column="text")   # adds reasoning, answer_text, think_closed,
                                               # n_think_blocks, final_answer

Shapes handled (`think_required=True`, the default, for reasoning teachers such as R1):

- `<think>R</think>A`: reasoning R, answer A.
- reasoning in a separate field (DeepSeek API `reasoning_content`, vLLM reasoning parser):
  `parse_trace(content, reasoning=...)`; the text is the answer. These servers put everything in
  the reasoning field when the output stops inside it, so think_closed is "the answer is
  non-empty".
- `R</think>A` (no opening tag): R1-Distill chat templates pre-fill `<think>\\n`, so the output
  starts mid-reasoning.
- `<think>R` or `R` with no `</think>` at all: the output stopped inside the reasoning
  (truncated, e.g. at 32,768 tokens): reasoning R, answer "", think_closed False.
- several blocks `<think>R1</think>x<think>R2</think>A`: everything before the last `</think>`
  is reasoning (tags removed, blocks joined by a blank line), A is the answer; a block opened
  after the last `</think>` and never closed makes the trace unclosed.
- `<think></think>A`: empty reasoning, closed.

With `think_required=False` (plain, non-reasoning teachers such as V3) a text without any tag
is a plain answer: reasoning "", think_closed True, n_think_blocks 0.

The final answer is taken from the answer part only (`extract_final_answer`): the last
`\\boxed{...}`/`\\fbox{...}` (nested braces), `\\boxed 5`, then "The final answer is X",
then "Final Answer: X". None when the answer part is empty or has none of these.

Time is linear in the text, whatever it holds (a looping teacher's 350 KB of unclosed
`\\boxed{` included): braces are matched in one pass, and no pattern backtracks over a run.
A budget bounds a row anyway, as verification's does: `parse_trace(..., budget_s=)` raises
ParseTimeout when it runs past it (checked between steps, each linear), and
`parse_frame(..., timeout_s=)` turns that into the row's `parse_error` "parse_timeout".
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import pandas as pd

from distill.data.columns import require_columns

OPEN, CLOSE = "<think>", "</think>"
PARSE_TIMEOUT = "parse_timeout"

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # a backslash escapes the next character
_BARE_BOX_RE = re.compile(r"[^\s$]+")
_FINAL_IS_RE = re.compile(r"final answer is[:\s]*(.+)", re.IGNORECASE)
_FINAL_COLON_RE = re.compile(r"final answer\W*?:[\s*]*(.+)", re.IGNORECASE)
_HOPE = "i hope it is correct"


class ParseTimeout(Exception):
    """One text took longer than its budget to parse."""


class _Clock:
    """`check()` raises ParseTimeout once `budget_s` has passed (never when it is None)."""

    def __init__(self, budget_s: float | None):
        self.end = None if budget_s is None else time.monotonic() + budget_s

    def check(self) -> None:
        if self.end is not None and time.monotonic() >= self.end:
            raise ParseTimeout


@dataclass(frozen=True)
class ParsedTrace:
    """One output split into its parts (see the module docstring for each shape)."""

    reasoning: str
    answer: str
    think_closed: bool
    n_think_blocks: int
    final_answer: str | None


def parse_trace(text: str, reasoning: str | None = None, *, think_required: bool = True,
                budget_s: float | None = None) -> ParsedTrace:
    """Split `text` (and a separate `reasoning` field when the server returns one); raises
    ParseTimeout past `budget_s` seconds (None: no budget)."""
    clock = _Clock(budget_s)
    text = text or ""
    if reasoning is not None and reasoning.strip():
        answer = _strip_stray_close(text).strip()
        return _done(reasoning.strip(), answer, bool(answer), 1, clock)
    last_close = text.rfind(CLOSE)
    if last_close < 0:
        if OPEN in text:
            head, _, tail = text.partition(OPEN)
            return _done(_join_blocks([head, tail]), "", False, text.count(OPEN), clock)
        if think_required:
            return _done(text.strip(), "", False, 1 if text.strip() else 0, clock)
        return _done("", text.strip(), True, 0, clock)
    before, answer = text[:last_close], text[last_close + len(CLOSE):]
    n_blocks = text.count(CLOSE)
    if OPEN in answer:  # a new block opened after the last close and never closed
        return _done(_join_blocks([before, answer]), "", False, n_blocks + 1, clock)
    return _done(_join_blocks([before]), answer.strip(), True, n_blocks, clock)


def _join_blocks(parts: list[str]) -> str:
    pieces = []
    for part in parts:
        pieces += re.split(r"</?think>", part)
    return "\n\n".join(p.strip() for p in pieces if p.strip())


def _strip_stray_close(text: str) -> str:
    return text[text.rfind(CLOSE) + len(CLOSE):] if CLOSE in text else text


def _done(reasoning: str, answer: str, closed: bool, n_blocks: int, clock: _Clock) -> ParsedTrace:
    clock.check()
    final = _final_answer(answer, clock) if answer else None
    return ParsedTrace(reasoning, answer, closed, n_blocks, final)


def extract_final_answer(text: str, *, budget_s: float | None = None) -> str | None:
    """The final answer in `text`: last boxed, else "final answer is X", else "Final Answer: X"
    (ParseTimeout past `budget_s` seconds)."""
    return _final_answer(text, _Clock(budget_s))


def _final_answer(text: str, clock: _Clock) -> str | None:
    if not text:
        return None
    boxed = _last_boxed(text, clock)
    if boxed is not None:
        return boxed
    for pattern in (_FINAL_IS_RE, _FINAL_COLON_RE):
        last = None
        for m in pattern.finditer(text):
            clock.check()
            last = _clean_phrase(m.group(1)) or last
        if last:
            return last
    return None


def _last_boxed(text: str, clock: _Clock) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed X`, or None.
    Braces are matched by at most two passes: from the last `{` box to the end (usually all
    it takes), then, if an earlier box is needed, once from the first box."""
    boxes = list(_BOX_RE.finditer(text))
    closing: dict[int, int] = {}
    scanned = len(text)  # braces from here on are matched in `closing`
    for m in reversed(boxes):
        clock.check()
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            if i < scanned:
                scanned = i if scanned == len(text) else boxes[0].end()
                closing = _match_braces(text, scanned, clock)
            j = closing.get(i)  # None: unbalanced, cut off mid-answer
            content = text[i + 1:j].strip() if j is not None else None
        else:
            content = _bare_box(text, i)
        if content:
            return content
    return None


def _match_braces(text: str, start: int, clock: _Clock) -> dict[int, int]:
    """{position of each `{` from `start`: position of its `}`}, for those that close. A box's
    `{` follows a letter or a blank, never an escaping backslash, so any start gives it the
    same match as a scan from the box itself."""
    stack: list[int] = []
    closing: dict[int, int] = {}
    for n, m in enumerate(_BRACE_RE.finditer(text, start)):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            closing[stack.pop()] = m.start()
        if n % 4096 == 0:
            clock.check()
    return closing


def _bare_box(text: str, i: int) -> str | None:
    """The `\\boxed 5` form: the word after the space; None for `\\boxedx` (not a box)."""
    if i == len(text) or text[i - 1] not in " \t":
        return None
    m = _BARE_BOX_RE.match(text, i)
    return m.group(0).rstrip(".,;") or None if m else None


def _clean_phrase(s: str) -> str:
    s = _drop_hope(s.strip().splitlines()[0] if s.strip() else "")
    s = s.strip().strip("*").strip().rstrip(".").strip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$").strip()
    elif s.startswith("\\(") and s.endswith("\\)"):
        s = s[2:-2].strip()
    return s.rstrip(".").strip()


def _drop_hope(s: str) -> str:
    """`s` without a closing "[.] I hope it is correct[.]" (from the end: no regex backtracking)."""
    t = s.rstrip()
    t = t.removesuffix(".")
    if t[-len(_HOPE):].lower() != _HOPE:
        return s
    t = t[:-len(_HOPE)].rstrip()
    return t.removesuffix(".")


PARSED_COLUMNS = ("reasoning", "answer_text", "think_closed", "n_think_blocks", "final_answer")
_TIMED_OUT = ParsedTrace("", "", False, 0, None)


def parse_frame(df: pd.DataFrame, *, text_column: str = "text",
                reasoning_column: str | None = None, think_required: bool = True,
                timeout_s: float | None = None) -> pd.DataFrame:
    """A copy of `df` with the PARSED_COLUMNS added (replacing columns of those names); with
    `timeout_s` (seconds per row) also `parse_error`: "parse_timeout" for a row past it (its
    parts left empty), else None."""
    _require(df, text_column, "text_column")
    if reasoning_column is not None:
        _require(df, reasoning_column, "reasoning_column")
    texts = [_as_str(t) for t in df[text_column].tolist()]
    if reasoning_column is None:
        reasonings: list[str | None] = [None] * len(texts)
    else:
        reasonings = [_as_str(r) if _present(r) else None for r in df[reasoning_column].tolist()]
    parsed = [_parse_row(t, r, think_required, timeout_s) for t, r in zip(texts, reasonings)]
    out = df.copy()
    out["reasoning"] = pd.Series([p.reasoning for p in parsed], index=df.index, dtype=object)
    out["answer_text"] = pd.Series([p.answer for p in parsed], index=df.index, dtype=object)
    out["think_closed"] = pd.Series([p.think_closed for p in parsed], index=df.index, dtype=bool)
    out["n_think_blocks"] = pd.Series([p.n_think_blocks for p in parsed], index=df.index,
                                      dtype="int64")
    out["final_answer"] = pd.Series([p.final_answer for p in parsed], index=df.index,
                                    dtype=object)
    if timeout_s is not None:
        out["parse_error"] = pd.Series([PARSE_TIMEOUT if p is _TIMED_OUT else None
                                        for p in parsed], index=df.index, dtype=object)
    return out


def _parse_row(text: str, reasoning: str | None, think_required: bool,
               timeout_s: float | None) -> ParsedTrace:
    try:
        return parse_trace(text, reasoning, think_required=think_required, budget_s=timeout_s)
    except ParseTimeout:
        return _TIMED_OUT


def _require(df: pd.DataFrame, column: str, arg: str) -> None:
    require_columns(df, [column], f"parse_frame ({arg}=)",
                    fix=f"pass {arg}= naming the teacher output column")


def _present(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _as_str(v: object) -> str:
    return v if isinstance(v, str) else ("" if not _present(v) else str(v))
