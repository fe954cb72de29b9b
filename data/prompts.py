"""Prompt sources: `load_prompts(cfg) -> DataFrame(prompt_id, problem, reference, ...)`.

A source is a JSON Lines / JSON / Parquet file (gzip allowed), or `bundled:NAME` for a set that
ships (PROMPT_SETS). Problems come from `problem_column`, reference answers from
`answer_column`. Ids are the `id_column` when given, else a hash of the problem text, so they are
stable across runs. `check_prompts_source` validates file and columns before any work.

Types: a problem must be text; a number, list or dict is not turned into a string but rejected
(`problem_not_text`), and so is a list or dict reference (`reference_not_text`). Numeric
reference answers are fine: they become their text (42 -> "42"; a whole float such as 2.0,
which is how pandas reads integers in a column with gaps, -> "2"; 2.5 -> "2.5").
"""
from __future__ import annotations

import gzip
import hashlib
import json
import numbers
import re
from pathlib import Path
from typing import Callable

import numpy as np
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
    # Trace sets (bring your own traces, data.trace_sources): real R1-Distill answers to MATH-500.
    **{f"r1_distill_{m}_math500": (lambda m=m: pd.read_json(
        BUNDLED_DIR / "traces" / f"r1_distill_{m}_math500.jsonl.gz", lines=True, dtype=False))
       for m in ("qwen7b", "llama8b")},
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
    table = _read_file(path, kind, field)
    if len(table) == 0:
        raise RecipeError(f"{field}: the file {path} is empty (no rows)",
                          fix="fill it (one JSON object per line, or Parquet rows), or point "
                              f"{field} at another file")
    return table


def _read_file(path: Path, kind: str, field: str) -> pd.DataFrame:
    """The file's rows; a RecipeError naming the line (JSON) or the column and row (Parquet text
    that is not UTF-8) that cannot be read."""
    import pyarrow as pa

    try:
        if kind != "parquet":
            return pd.read_json(path, lines=kind == "jsonl", dtype=False)
        table = pd.read_parquet(path)
    except (ValueError, TypeError, OSError, pa.ArrowException) as exc:
        if kind == "parquet":
            why, fix = str(exc), "check that it is a whole Parquet file (write it again)"
        else:
            why, fix = _json_problem(path, kind, exc)
        raise RecipeError(f"{field}: cannot read {path}: {why}", fix=fix) from None
    bad = _bad_utf8(table)
    if bad:
        raise RecipeError(f"{field}: cannot read {path}: {bad} holds text that is not valid UTF-8",
                          fix="re-encode that column as UTF-8 (or drop the bad rows) and write "
                              "the file again")
    return table


def _json_problem(path: Path, kind: str, exc: Exception) -> tuple[str, str]:
    """(where and what, the fix) for a JSON / JSON Lines file pandas could not read: the first
    bad line by number, not pandas' byte position."""
    fix = "fix that line: each line holds one JSON object, in UTF-8"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc), "give a JSON Lines or Parquet file"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = raw.count(b"\n", 0, bad.start) + 1
        return f"line {line}: not UTF-8 text", "save the file as UTF-8"
    except OSError as bad:
        return bad.strerror or str(bad), "give a readable, whole file"
    for number, line in enumerate(text.splitlines() if kind == "jsonl" else [text], 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as bad:
            at = number if kind == "jsonl" else bad.lineno
            return f"line {at}, column {bad.colno}: {bad.msg}", fix
        if kind == "jsonl" and not isinstance(value, dict):
            got = type(value).__name__
            return f"line {number}: a JSON object ({{...}}) is needed, not {got}", fix
    return str(exc), "check the file: JSON Lines needs one JSON object per line"


def _bad_utf8(table: pd.DataFrame) -> str | None:
    """"column 'x', row N" of the first text that is not UTF-8, or None. (Parquet text stays
    Arrow data that pandas decodes only when a value is used, so it must be checked here.)"""
    import pyarrow as pa

    for name in table.columns:
        values = table[name].array
        if not hasattr(values, "__arrow_array__"):
            continue
        arrow = values.__arrow_array__()
        offset = 0
        for chunk in arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid as bad:
                found = re.search(r"index (\d+)", str(bad))
                return f"column {name!r}" + (f", row {offset + int(found[1])}" if found else "")
            offset += len(chunk)
    return None


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
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _as_text(values: pd.Series, numbers_ok: bool) -> tuple[list[str | None], list[bool]]:
    """Each value as text (None when missing) and whether it may be used as text: a string, or
    a number when `numbers_ok`. Anything else (list, dict, bool, a number when not allowed) is
    shown as JSON, for the rejected rows, and flagged."""
    texts: list[str | None] = []
    ok: list[bool] = []
    for v in values:
        number = isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_))
        if _missing(v) or isinstance(v, str):
            texts.append(None if _missing(v) else v)
            ok.append(True)
        elif number and numbers_ok:
            whole = isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real)
                                                        and float(v).is_integer())
            texts.append(str(int(v)) if whole else str(v))
            ok.append(True)
        else:
            texts.append(_json_text(v))
            ok.append(False)
    return texts, ok


def _json_text(value: object) -> str:
    return json.dumps(value.tolist() if hasattr(value, "tolist") else value, default=str,
                      ensure_ascii=False)


def _storable(table: pd.DataFrame) -> pd.DataFrame:
    """The source's columns as Parquet can hold them: a column that mixes types (JSON allows
    2 and "2" in one column) becomes text, each value as JSON, None kept; others stay."""
    import pyarrow as pa

    for name in table.columns[table.dtypes == object]:
        try:
            pa.array(table[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table[name] = pd.Series([None if _missing(v) else v if isinstance(v, str) else
                                     _json_text(v) for v in table[name]], dtype=object)
    return table


def stable_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _repeated_ids(out: pd.DataFrame, eligible: pd.Series) -> pd.Series:
    """Rows whose prompt id an earlier-by-content eligible row already holds: of the rows sharing
    an id, the one with the smallest (problem, reference) digest stays, whatever the file order."""
    content = [stable_id(f"{p}\0{r}") for p, r in zip(out["problem"], out["reference"])]
    order = pd.DataFrame({"id": out["prompt_id"], "content": content, "ok": eligible.to_numpy()})
    ranked = order[order["ok"]].sort_values(["id", "content"], kind="stable")
    repeated = pd.Series(False, index=out.index)
    repeated[ranked.index[ranked["id"].duplicated()]] = True
    return repeated


def load_prompts(cfg: "PromptsConfig", base_dir: Path | None = None,  # noqa: F821
                 field: str = "prompts") -> pd.DataFrame:
    """The prompt table with `prompt_id`, `problem`, `reference` and the source's other columns,
    plus `keep`/`reject_reason` for rows that cannot be used (a problem that is not text or is
    empty, a reference that is missing or not text, a repeated id). Raises RecipeError for a
    missing, empty or unreadable file, or missing columns (naming `field`.<key>). With
    `prompts.sources`, every source's rows, tagged (data.sources)."""
    if getattr(cfg, "sources", None):
        from distill.data.sources import load_sources

        return load_sources(cfg.sources, base_dir)
    table = read_table(cfg.source, field=f"{field}.source", base_dir=base_dir)
    if cfg.limit:
        table = table.head(cfg.limit)
    traces = getattr(cfg, "traces", None)
    if traces is not None:  # a trace source: the rows bring their answers (data.trace_sources)
        from distill.data.trace_sources import expand_traces

        table = expand_traces(table, traces, cfg.problem_column, cfg.source, field=f"{field}.traces")
    check_columns(table, {f"{field}.problem_column": cfg.problem_column,
                          f"{field}.answer_column": cfg.answer_column,
                          f"{field}.id_column": cfg.id_column}, cfg.source)
    if table.empty:
        raise RecipeError(f"{field}.source: {cfg.source} has no rows", fix="point it at a non-empty prompt set")
    out = table.rename(columns={c: f"source_{c}" for c in ("prompt_id", "problem", "reference")
                                if c in table.columns and c not in (cfg.problem_column, cfg.answer_column)})
    out = out.reset_index(drop=True)
    problems, problem_ok = _as_text(table[cfg.problem_column], numbers_ok=False)
    out["problem"] = pd.Series([t or "" for t in problems], dtype=object)
    ref = table[cfg.answer_column] if cfg.answer_column else pd.Series([None] * len(out))
    references, reference_ok = _as_text(ref, numbers_ok=True)
    out["reference"] = pd.Series(references, dtype=object)
    ids = table[cfg.id_column].astype(str).reset_index(drop=True) if cfg.id_column else out["problem"].map(stable_id)
    out["prompt_id"] = ids
    reason = pd.Series([None] * len(out), dtype=object)
    if traces is not None:  # a trace source's reasons first (no user turn, before empty_problem)
        from distill.data.trace_sources import REJECT, number_samples

        reason = out.pop(REJECT).astype(object)
    reason[reason.isna() & ~pd.Series(problem_ok)] = "problem_not_text"
    reason[reason.isna() & (out["problem"].str.strip() == "")] = "empty_problem"
    if cfg.answer_column:
        reason[reason.isna() & ~pd.Series(reference_ok)] = "reference_not_text"
        reason[reason.isna() & out["reference"].isna()] = "missing_reference"
    if traces is not None:
        out["sample_index"] = number_samples(out)
        reason[reason.isna() & out[["prompt_id", "sample_index"]].duplicated()] = "duplicate_sample"
    else:
        reason[reason.isna() & _repeated_ids(out, reason.isna())] = "duplicate_prompt_id"
    out["reject_reason"] = reason
    out["keep"] = reason.isna()
    return _storable(out)
