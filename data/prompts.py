"""Prompt sources: `load_prompts(cfg) -> DataFrame(prompt_id, problem, reference, ...)`.

A source is a JSON Lines / JSON / Parquet file (gzip allowed), or `bundled:NAME` for a set that
ships (PROMPT_SETS). Problems come from `problem_column`, reference answers from
`answer_column`. Ids are the `id_column` when given, else a hash of the problem text, so they are
stable across runs. `check_prompts_source` validates file and columns before any work.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import pandas as pd
from distill.data import arithmetic
from distill.data.benchmarks import BENCHMARKS, BUNDLED_DIR, load_benchmark
from distill.pipeline.errors import RecipeError

PROMPT_SETS: dict[str, Callable[[], pd.DataFrame]] = {
    "arithmetic": arithmetic.arithmetic_train,
    "arithmetic_test": arithmetic.arithmetic_test,
    "math_train": lambda: pd.read_json(BUNDLED_DIR / "prompts" / "math_train.jsonl.gz", lines=True,
                                       dtype={"id": str, "answer": str}),
    "gsm8k_train": lambda: pd.read_json(BUNDLED_DIR / "prompts" / "gsm8k_train.jsonl.gz", lines=True,
                                        dtype={"id": str, "answer": str}),
    **{name: (lambda n=name: load_benchmark(n)) for name in BENCHMARKS},
}
READERS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1] if suffixes else ""


def read_table(source: str, *, field: str = "prompts.source", base_dir: Path | None = None) -> pd.DataFrame:
    """Read a bundled set or a file; errors name the recipe field, the file and the fix."""
    if source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        if name not in PROMPT_SETS:
            raise RecipeError(f"{field}: no bundled set {name!r}", fix=f"use one of {sorted(PROMPT_SETS)}")
        return PROMPT_SETS[name]()
    path = resolve_path(source, base_dir)
    if not path.exists():
        raise RecipeError(f"{field}: file {source!r} does not exist (looked in {path.parent})",
                          fix="give an existing JSON Lines or Parquet file, or bundled:NAME "
                              f"({', '.join(sorted(PROMPT_SETS))})")
    kind = READERS.get(_suffix(path))
    if kind is None:
        raise RecipeError(f"{field}: {path} is not .jsonl, .json or .parquet",
                          fix="convert it to JSON Lines (one object per line) or Parquet")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=kind == "jsonl", dtype=False)
    except ValueError as exc:
        raise RecipeError(f"{field}: cannot read {path}: {exc}",
                          fix="check the file: JSON Lines needs one JSON object per line") from None


def source_fingerprint(source: str, base_dir: Path | None = None) -> str:
    """The content digest of a prompt or benchmark source (what stage keys hold, not its path):
    a file's bytes, or a bundled set's rows."""
    from distill.pipeline.fingerprint import file_digest

    if source.startswith("bundled:"):
        table = read_table(source)
        hashed = pd.util.hash_pandas_object(table.astype(str), index=False).to_numpy()
        return "rows:" + hashlib.sha256(hashed.tobytes() + ",".join(map(str, table.columns)).encode()).hexdigest()
    path = resolve_path(source, base_dir)
    if not path.exists():
        raise RecipeError(f"file {source!r} does not exist (looked in {path.parent})",
                          fix="give an existing JSON Lines or Parquet file, or bundled:NAME")
    return file_digest(path)


def resolve_path(source: str, base_dir: Path | None) -> Path:
    """A relative path resolves against the current directory, then the recipe's folder."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists() or base_dir is None:
        return path
    return base_dir / path


def check_columns(table: pd.DataFrame, needed: dict[str, str | None], source: str) -> None:
    for field, column in needed.items():
        if column is not None and column not in table.columns:
            raise RecipeError(f"{field}: column {column!r} is not in {source} "
                              f"(columns: {', '.join(map(str, table.columns))})",
                              fix=f"set {field} to one of those columns")


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, (list, dict)) and bool(pd.isna(value)))


def stable_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_prompts(cfg: "PromptsConfig", base_dir: Path | None = None) -> pd.DataFrame:  # noqa: F821
    """The prompt table with `prompt_id`, `problem`, `reference` and the source's other columns,
    plus `keep`/`reject_reason` for rows that cannot be used (empty problem, no reference,
    repeated id). Raises RecipeError for a missing file, missing columns or an empty set."""
    table = read_table(cfg.source, base_dir=base_dir)
    check_columns(table, {"prompts.problem_column": cfg.problem_column,
                          "prompts.answer_column": cfg.answer_column,
                          "prompts.id_column": cfg.id_column}, cfg.source)
    if table.empty:
        raise RecipeError(f"prompts.source: {cfg.source} has no rows", fix="point it at a non-empty prompt set")
    if cfg.limit:
        table = table.head(cfg.limit)
    out = table.rename(columns={c: f"source_{c}" for c in ("prompt_id", "problem", "reference")
                                if c in table.columns and c not in (cfg.problem_column, cfg.answer_column)})
    out = out.reset_index(drop=True)
    problem = table[cfg.problem_column].reset_index(drop=True)
    out["problem"] = problem.where(problem.notna(), "").astype(str)
    ref = table[cfg.answer_column].reset_index(drop=True) if cfg.answer_column else pd.Series([None] * len(out))
    out["reference"] = pd.Series([None if _missing(v) else str(v) for v in ref], dtype=object)
    ids = table[cfg.id_column].astype(str).reset_index(drop=True) if cfg.id_column else out["problem"].map(stable_id)
    out["prompt_id"] = ids
    reason = pd.Series([None] * len(out), dtype=object)
    reason[out["problem"].str.strip() == ""] = "empty_problem"
    if cfg.answer_column:
        reason[reason.isna() & out["reference"].isna()] = "missing_reference"
    reason[reason.isna() & out["prompt_id"].duplicated()] = "duplicate_prompt_id"
    out["reject_reason"] = reason
    out["keep"] = reason.isna()
    return out
