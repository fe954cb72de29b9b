"""Several prompt sources in one recipe: `prompts.sources: [...]`, each tagged on its rows.

    prompts:
      sources:
        - {name: math, source: bundled:math_train, id_column: id, limit: 600000}
        - name: r1_traces
          source: bundled:r1_distill_qwen7b_math500
          answer_column: ground_truth
          traces: {response_column: full_response, teacher_column: model_short_name}
          kind: math

Each source is read as a single `prompts.source` is (data.prompts.load_prompts: its own
columns, `limit` as its cap, `traces` for a trace set, data.trace_sources), and its rows get
`source` (the name) and `kind` (math, code, general) columns, which every later stage keeps.
Prompt ids are `<name>/<id>`, so two sources may hold the same problem or the same ids without
clashing. `teacher` gives a source its own teacher (several teachers in one run; the same file
under two names with two teachers compares them on the same prompts). `weight` (on every
source, or none) says how the train stage mixes the curated sources
(data.mixing).

The single `prompts.source` form still works as before (no `source` or `kind` column).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.data.trace_sources import TraceSourceConfig
from distill.pipeline.keys import fingerprint
from distill.teachers.config import TeacherConfig

KINDS = ("math", "code", "general")


class SourceConfig(BaseModel):
    """One prompt (or trace) source of `prompts.sources`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Short name: the `source` tag of its rows and the prefix of its prompt ids.")
    source: str = Field(description="A JSON Lines or Parquet file, or `bundled:NAME` for a set that ships.",
                        json_schema_extra=fingerprint("prompt_source"))
    problem_column: str = Field("problem", description="Column with the problem text.")
    answer_column: str | None = Field("answer", description="Column with the reference answer (null: none).")
    id_column: str | None = Field(None, description="Column with a stable id; null: a hash of the problem.")
    limit: int | None = Field(None, ge=1, description="Cap: use only the first N rows of this source.")
    traces: TraceSourceConfig | None = Field(None, description=(
        "The source already holds answers (data.trace_sources); null: prompts for the teacher."))
    kind: Literal["math", "code", "general"] = Field("math", description="Task kind, kept on every row (`kind`).")
    teacher: TeacherConfig | None = Field(None, description=(
        "This source's own teacher (e.g. DeepSeek-V3 for non-reasoning prompts); null: the "
        "recipe's `teacher`. Its rows are tagged with its model (the `teacher` column)."))
    weight: float | None = Field(None, gt=0, description=(
        "Share of this source in the training mix, relative to the other sources' weights "
        "(data.mixing: the train stage keeps the most rows that follow these shares); null on "
        "every source: every curated row is trained on."))

    @field_validator("name")
    @classmethod
    def _a_short_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError("a source name is letters, digits, '_', '.' or '-' (it prefixes prompt "
                             f"ids: NAME/id), got {name!r}")
        return name


def check_names(sources: list[SourceConfig]) -> list[SourceConfig]:
    """ValueError for two sources with one name (their rows could not be told apart), or
    weights on some sources but not all."""
    weighted = [s.name for s in sources if s.weight is not None]
    if weighted and len(weighted) != len(sources):
        raise ValueError(f"weights are set on {weighted} but not on the other sources: give every "
                         "source a weight (their shares of the training mix), or none")
    seen: set[str] = set()
    for s in sources:
        if s.name in seen:
            raise ValueError(f"two sources are named {s.name!r}: give each its own name")
        seen.add(s.name)
    return sources


def load_sources(sources: list[SourceConfig], base_dir: Path | None = None) -> pd.DataFrame:
    """Every source's prompt table (data.prompts.load_prompts), tagged `source` and `kind`, with
    prompt ids `<name>/<id>`, one after the other."""
    from distill.data.prompts import _storable, load_prompts

    tables = []
    for i, s in enumerate(sources):
        table = load_prompts(s, base_dir, field=f"prompts.sources[{i}]")
        table = table.rename(columns={c: f"source_{c}" for c in ("source", "kind") if c in table.columns})
        table["prompt_id"] = s.name + "/" + table["prompt_id"].astype(str)
        table["source"] = s.name
        table["kind"] = s.kind
        tables.append(table)
    return _storable(pd.concat(tables, ignore_index=True))
