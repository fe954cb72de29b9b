"""The stage contract and its key: a stage reads its inputs' Parquet and writes its own.

A stage declares `name`, `version`, the upstream stages it `needs`, and `config(recipe)`: the
recipe sections and values it reads. Its key (pipeline.keys) hashes the parts of those that
change results, by content for files and models, with its inputs' keys; fields declared RUNTIME
(batch sizes, threads, resources) never invalidate finished work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd
from pydantic import BaseModel

from distill.pipeline.store import RunStore, StageOutput


@dataclass
class StageResult:
    """What a stage returns. `rows` carries `keep`/`reject_reason` when the stage filters; the
    runner splits it (pipeline.accounting). `rows_in` counts the units the stage consumed."""

    rows: pd.DataFrame | None
    rows_in: int
    extra: dict[str, Any] = field(default_factory=dict)
    already_written: bool = False  # the stage wrote data/ and rejected/ itself (e.g. shards)


@dataclass
class StageContext:
    recipe: BaseModel
    store: RunStore
    out_dir: Path
    inputs: dict[str, StageOutput]
    progress: Callable[[str, int, int | None], None]  # (description, done, total)
    recipe_path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)  # this stage's key payload (resolved)


class Stage(Protocol):
    name: str
    version: str
    needs: tuple[str, ...]
    resumable: bool  # keep a partial out_dir across crashes (generate's shards)

    def config(self, recipe: BaseModel) -> dict[str, Any]: ...

    def run(self, ctx: StageContext) -> StageResult: ...

    # Optional: `stale(recipe, manifest) -> str | None`, a reason to make a finished output
    # again although its key matches (e.g. generate retrying failed requests).
