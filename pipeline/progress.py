"""Progress for long stages: a rich bar on a terminal, a line every few seconds in logs."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ProgressFn = Callable[[str, int, "int | None"], None]


@contextmanager
def stage_progress(console: Console, stage: str, every_s: float = 10.0) -> Iterator[ProgressFn]:
    """Yield `update(description, done, total)`; renders live on a TTY, else logs sparsely."""
    if console.is_terminal:
        with Progress(TextColumn(f"[bold]{stage}[/] {{task.description}}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                      transient=True) as bar:
            tasks: dict[str, int] = {}

            def update(desc: str, done: int, total: int | None) -> None:
                if desc not in tasks:
                    tasks[desc] = bar.add_task(desc, total=total)
                bar.update(tasks[desc], completed=done, total=total)

            yield update
        return
    last = [0.0]

    def log(desc: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or (total is not None and done >= total):
            last[0] = now
            of = f"/{total}" if total is not None else ""
            console.print(f"  {stage}: {desc} {done}{of}", highlight=False)

    yield log
