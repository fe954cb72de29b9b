"""math-verify, read the way its own graders read answers, safe to call from any thread.

    from distill.data.mathverify import WholeText, verify_one, group_equivalent
    verify_one("\\frac{1}{2}", "0.5")                      # True: answers read as \\boxed{...}
    verify_one("55", WholeText("42 + 13 = 55, so we get 55"))   # True: math-verify extracts 55
    group_equivalent(["0.5", "\\frac{1}{2}", "1/2", "3"])  # [0, 0, 0, 1]

What math-verify is given (`math_input`) decides the verdict, so there is one rule:
- an answer (a reference answer, the content of a `\\boxed{}`, a "final answer is" phrase) is
  given as the `\\boxed{answer}` it stands for; math-verify reads a box's content as LaTeX
  (`\\frac{14}{3}`, `6 - 5i`, `\\left( 3, \\frac{\\pi}{2} \\right)`). Text already holding a
  `\\boxed` is given as is (a full solution: math-verify takes its box).
- a `WholeText` (an answer part with nothing extracted from it, verified whole as lighteval
  does for models that do not box) is given as is: math-verify's own extraction finds the
  answer in it (`so we get 55` -> 55, `18 km/h` -> 18).
So a verdict equals `verify(parse(math_input(gold)), parse(math_input(pred)))` on the same
strings. Verdicts are True, False, or None (undecided): a side is missing or unreadable, a side
is only raw text (math-verify kept no math object) and the texts differ, or the item ran past
its timeout.

math-verify times out with `signal.alarm`, which works only in a process's main thread, so each
item runs under our own alarm, and `map_main_thread` runs a batch here when this is the main
thread and the batch is small, else in a process pool (forkserver where available, else spawn).
"""
from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

# A pool takes 2-4 s to start (forkserver importing sympy) and one process verifies about 120
# long answer texts a second here, so below this many items in-process is as fast or faster.
IN_PROCESS_MAX = 256
T, R = TypeVar("T"), TypeVar("R")


@dataclass(frozen=True)
class WholeText:
    """A whole answer text, for math-verify to find the answer in (nothing was extracted)."""

    text: str


Answer = str | WholeText


def math_input(answer: Answer) -> str:
    """The string math-verify parses for `answer` (see the module docstring)."""
    if isinstance(answer, WholeText):
        return answer.text
    s = str(answer).strip()
    return s if "\\boxed" in s else f"\\boxed{{{s}}}"


def present(v: object) -> bool:
    """A usable answer: not None/NaN and not blank."""
    if isinstance(v, WholeText):
        v = v.text
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v).strip() != ""


class _ItemTimeout(BaseException):
    """Raised by our alarm; a BaseException so math-verify's `except Exception` lets it out."""


def _on_alarm(signum, frame):
    raise _ItemTimeout


@contextmanager
def _alarm(timeout_s: float):
    """Raise _ItemTimeout in this (main) thread after timeout_s seconds."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _parse(answer: Answer) -> list:
    """math-verify's parse with its own timeout off (our alarm covers the item)."""
    import math_verify.grader
    import math_verify.parser
    from math_verify import parse

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # we pass None on purpose: skip the warning
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    return parse(math_input(answer), parsing_timeout=None)


def _is_math(parsed: list) -> bool:
    """math-verify parsed a math object (not just its raw-text fallback)."""
    from sympy import Basic, MatrixBase

    return any(isinstance(x, (Basic, MatrixBase)) for x in parsed)


def _verdict(gold: list, pred: list) -> bool | None:
    from math_verify import verify

    if not gold or not pred:
        return None
    if verify(gold, pred, timeout_seconds=None):
        return True
    return False if _is_math(gold) and _is_math(pred) else None  # a side only fell back to text


def _load() -> None:
    """Import math-verify (and sympy) before an alarm starts: the first import in a process
    takes seconds (more on a busy machine), which must not count against an item's timeout."""
    import math_verify.grader
    import math_verify.parser  # noqa: F401


def verify_one(gold: Answer | None, pred: Answer | None, timeout_s: float = 5.0) -> bool | None:
    """One verdict, in this process; must run in the main thread (it sets SIGALRM)."""
    if not (present(gold) and present(pred)):
        return None
    _load()
    try:
        with _alarm(timeout_s):
            return _verdict(_parse(gold), _parse(pred))
    except _ItemTimeout:
        return None


def verify_pair(pair: tuple[Answer | None, Answer | None], timeout_s: float = 5.0) -> bool | None:
    """verify_one over a (gold, pred) pair (a picklable item function for map_main_thread)."""
    return verify_one(pair[0], pair[1], timeout_s)


def group_equivalent(answers: Sequence[Answer | None], timeout_s: float = 5.0) -> list[int | None]:
    """Group ids (0, 1, ... in order of first appearance), one per answer; None for a missing one.

    An answer joins the first group whose first member it equals (the same math_input text, or
    math-verify's True with the member as gold), else opens the next group. An unreadable or
    timed-out comparison is "not equal". Each answer is parsed once, each comparison under its
    own alarm; must run in the main thread."""
    _load()
    reps: list[tuple[str, list]] = []
    out: list[int | None] = []
    for answer in answers:
        if not present(answer):
            out.append(None)
            continue
        key = math_input(answer)
        try:
            with _alarm(timeout_s):
                parsed = _parse(answer)
        except _ItemTimeout:
            parsed = []
        gid = next((i for i, (k, rep) in enumerate(reps) if k == key or _equal(rep, parsed, timeout_s)),
                   None)
        if gid is None:
            reps.append((key, parsed))
            gid = len(reps) - 1
        out.append(gid)
    return out


def _equal(rep: list, parsed: list, timeout_s: float) -> bool:
    try:
        with _alarm(timeout_s):
            return _verdict(rep, parsed) is True
    except _ItemTimeout:
        return False


def _apply_chunk(args: tuple[Callable, list]) -> list:
    fn, chunk = args
    return [fn(x) for x in chunk]


def _pool_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["math_verify", "sympy"])
        return ctx
    return mp.get_context("spawn")


def map_main_thread(fn: Callable[[T], R], items: Sequence[T], *, workers: int = 0,
                    in_process_max: int = IN_PROCESS_MAX) -> list[R]:
    """[fn(x) for x in items], each call in some process's main thread (fn may set SIGALRM).

    Here when this is the main thread and `workers == 1` or there are fewer than
    `in_process_max` items; else in a pool of `workers` processes (0: os.cpu_count()), in
    chunks. `fn` must pickle (a module-level function or a functools.partial of one). Inside a
    Ray Data function UDF pass workers=1 (Ray already runs one task per CPU)."""
    items = list(items)
    n_workers = workers or os.cpu_count() or 1
    main = threading.current_thread() is threading.main_thread()
    if main and (n_workers == 1 or len(items) < in_process_max):
        return _apply_chunk((fn, items))
    if not items:
        return []
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, min(256, math.ceil(len(items) / (n_workers * 4))))
    chunks = [(fn, items[i:i + size]) for i in range(0, len(items), size)]
    with ProcessPoolExecutor(max_workers=min(n_workers, len(chunks)),
                             mp_context=_pool_context()) as pool:
        return [v for chunk in pool.map(_apply_chunk, chunks) for v in chunk]
