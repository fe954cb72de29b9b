"""Progress for long stages: a live bar with rate and ETA on a terminal, plain lines in logs.

    with stage_progress(console, "generate") as progress:
        progress("samples", done, total, tokens=completion_tokens_so_far)   # tokens/s shown
        progress("optimizer steps", step, max_steps, loss=0.93)             # latest loss shown

Rates count from a step's first report, so work resumed from a cache does not inflate them.
When output is not a terminal (cluster job logs), one line is printed when a step starts, each
`every_pct` percent, at least every `every_s` seconds, and when it ends.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ProgressFn = Callable[..., None]  # (description, done, total, *, tokens=None, loss=None)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class _Step:
    """Rate, ETA and the extra figures of one progress step (a description)."""

    done0: int
    started: float = field(default_factory=lambda: time.monotonic())
    tokens0: int | None = None
    last_line: float = 0.0
    last_pct: float = -1.0

    def figures(self, done: int, total: int | None, tokens: int | None, loss: float | None) -> str:
        elapsed = time.monotonic() - self.started
        parts = []
        if elapsed > 0.5 and done > self.done0:
            rate = (done - self.done0) / elapsed
            parts.append(f"{rate:,.1f}/s" if rate >= 1 else f"{1 / rate:,.0f} s each")
            if total and done < total:
                parts.append(f"ETA {_duration((total - done) / rate)}")
            elif total:
                parts.append(f"in {_duration(elapsed)}")
        if tokens is not None:
            self.tokens0 = tokens if self.tokens0 is None else self.tokens0
            if elapsed > 0.5:
                parts.append(f"{(tokens - self.tokens0) / elapsed:,.0f} tok/s")
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        return " · ".join(parts)


@contextmanager
def stage_progress(console: Console, stage: str, every_pct: float = 5.0,
                   every_s: float = 60.0) -> Iterator[ProgressFn]:
    """Yield `update(description, done, total, *, tokens=None, loss=None)` for one stage."""
    steps: dict[str, _Step] = {}

    def step(desc: str, done: int) -> _Step:
        return steps.setdefault(desc, _Step(done0=done))

    if console.is_terminal:
        with Progress(TextColumn(f"[bold]{stage}[/] {{task.description}}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("{task.fields[figures]}"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def update(desc: str, done: int, total: int | None, *, tokens: int | None = None,
                       loss: float | None = None) -> None:
                figures = step(desc, done).figures(done, total, tokens, loss)
                if desc not in tasks:
                    tasks[desc] = bar.add_task(desc, total=total, figures=figures)
                bar.update(tasks[desc], completed=done, total=total, figures=figures)

            yield update
        return

    def log(desc: str, done: int, total: int | None, *, tokens: int | None = None,
            loss: float | None = None) -> None:
        s, now = step(desc, done), time.monotonic()
        figures = s.figures(done, total, tokens, loss)
        pct = 100.0 * done / total if total else None
        finished = total is not None and done >= total
        if finished and s.last_pct >= 100:
            return  # the end was said already
        due = (s.last_pct < 0 or finished or now - s.last_line >= every_s
               or (pct is not None and pct >= s.last_pct + every_pct))
        if not due:
            return
        s.last_line = now
        s.last_pct = pct // every_pct * every_pct if pct is not None else max(s.last_pct, 0)
        of = f"/{total:,} ({pct:.0f}%)" if total else ""
        console.print(f"  {stage}: {desc} {done:,}{of}" + (f" · {figures}" if figures else ""),
                      highlight=False)

    yield log
