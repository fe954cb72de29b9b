"""Row accounting: the one place rows are dropped. `split_and_write(rows, out_dir) -> counts`.

    counts = split_and_write(frame, out_dir, rows_in)                      # pandas, in this process
    counts = split_and_write_ray(ds, out_dir, rows_in, part_column="part", parts=8)  # on workers

Stages flag rows with `keep` (bool) and `reject_reason` (str, None when kept). Kept rows go to
data/, rejected rows to rejected/ with their reason, and the counts feed the manifest and the
funnel: rows_in == kept + sum(rejected.values()) always holds, or this raises. On Ray each
part is split and written by a worker, and the counts are those of the parts written, checked
against the rows the Parquet files hold.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from distill.pipeline.cluster import writer_identity
from distill.pipeline.partition import by_part
from distill.pipeline.store import write_parquet


def combine_reasons(*reasons: pd.Series) -> pd.Series:
    """The first non-null reason per row across rule outputs applied in order. Later series may
    cover only some rows (a rule run over the survivors): they align on the first one's index."""
    out = pd.Series([None] * len(reasons[0]), index=reasons[0].index, dtype=object)
    for series in reasons:
        series = series.reindex(out.index)
        fill = out.isna() & series.notna()
        out[fill] = series[fill]
    return out


def flag(rows: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    """Add `reject_reason` and `keep` columns (reasons: None where the row is kept)."""
    rows = rows.copy()
    rows["reject_reason"] = reasons.astype(object).where(reasons.notna(), None)
    rows["keep"] = rows["reject_reason"].isna()
    return rows


def count(rows: pd.DataFrame) -> dict:
    rejected = rows.loc[~rows["keep"], "reject_reason"].value_counts().to_dict()
    return {"kept": int(rows["keep"].sum()), "rejected": {str(k): int(v) for k, v in rejected.items()}}


def check_counts(counts: dict, rows_in: int, where: str) -> None:
    """Raise unless rows_in == kept + rejected (the accounting invariant)."""
    total = counts["kept"] + sum(counts["rejected"].values())
    if total != rows_in:
        raise AssertionError(f"row accounting broken in {where}: {rows_in} in, "
                             f"{counts['kept']} kept + {total - counts['kept']} rejected")


def write_split(rows: pd.DataFrame, out_dir: Path, name: str = "part-00000",
                types: dict | None = None) -> dict:
    """Write flagged rows' kept part to out_dir/data/<name>.parquet (without keep and
    reject_reason) and the rejected part to out_dir/rejected/<name>.parquet; return count(rows).
    `types`: Arrow types for columns (store.write_parquet), so all parts of a stage agree."""
    write_parquet(rows[rows["keep"]].drop(columns=["keep", "reject_reason"]),
                  out_dir / "data" / f"{name}.parquet", types)
    write_parquet(rows[~rows["keep"]].drop(columns=["keep"]),
                  out_dir / "rejected" / f"{name}.parquet", types)
    return count(rows)


def split_and_write(rows: pd.DataFrame, out_dir: Path, rows_in: int) -> dict:
    """Write kept rows to out_dir/data and rejected rows to out_dir/rejected; return counts."""
    if "keep" not in rows:
        rows = flag(rows, pd.Series([None] * len(rows), index=rows.index, dtype=object))
    check_counts(count(rows), rows_in, out_dir.name)
    return {"rows_in": rows_in, **write_split(rows, out_dir, types=frame_types(rows))}


def frame_types(rows: pd.DataFrame) -> dict:
    """{column: pyarrow type} inferred from the whole frame (null-typed columns left out), so
    its kept and rejected files agree even where one of them is empty."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(rows, preserve_index=False)
    return {f.name: f.type for f in schema if not pa.types.is_null(f.type)}


def parquet_files(folder: Path) -> list[Path]:
    """The finished Parquet files in `folder` (temporary and hidden files skipped)."""
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def parquet_footers(folder: Path) -> list[tuple[Path, Any]]:
    """(path, pyarrow FileMetaData) of each Parquet file in `folder`, from its footer (nothing
    else is read); a file that is not Parquet is named in the error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.pipeline.errors import DistillError

    footers = []
    for path in parquet_files(folder):
        try:
            footers.append((path, pq.read_metadata(path)))
        except (pa.ArrowInvalid, OSError) as e:
            raise DistillError(f"{path}: not a readable Parquet file ({e})",
                               fix="remove or replace that file (a stage writes only whole "
                               "files, so one cut short was written by something else), "
                               "then run again") from None
    return footers


def parquet_rows(folder: Path) -> int:
    """Rows in the Parquet files in `folder`, from their footers (nothing else is read)."""
    return sum(meta.num_rows for _, meta in parquet_footers(folder))


def parquet_schema(folder: Path, footers: list[tuple[Path, Any]] | None = None) -> Any:
    """The pyarrow schema of the Parquet files in `folder`, unified over them (a column null in
    some files and text in others is text; a column some files lack is kept), from their
    footers (`footers`: parquet_footers(folder), when the caller has read them already)."""
    import pyarrow as pa

    footers = parquet_footers(folder) if footers is None else footers
    schemas = [meta.schema.to_arrow_schema() for _, meta in footers]
    if not schemas:
        return pa.schema([])
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.schema(list(schema))   # without the writers' pandas metadata


def parquet_types(folder: Path) -> dict:
    """{column: pyarrow type} of parquet_schema(folder), null-typed columns left out."""
    import pyarrow as pa

    plain = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    return {f.name: plain.get(f.type, f.type) for f in parquet_schema(folder)
            if not pa.types.is_null(f.type)}


PART_NAME = "part-{:05d}"


def as_frame(batch: Any) -> pd.DataFrame:
    """A Ray Data batch (a pyarrow Table, or a DataFrame of Arrow-backed columns) as the
    DataFrame `pd.read_parquet` gives for the same rows (numpy and str dtypes), so rules and
    files see the same types on Ray as in one process."""
    import pyarrow as pa

    if isinstance(batch, pd.DataFrame):
        if not any(isinstance(t, pd.ArrowDtype) for t in batch.dtypes):
            return batch
        batch = pa.Table.from_pandas(batch, preserve_index=False)
    return batch.to_pandas(ignore_metadata=True)


def _write_part(part: Any, *, out_dir: str, part_column: str,
                finish: Callable[[pd.DataFrame], pd.DataFrame] | None,
                stats: Callable[[pd.DataFrame], dict] | None, types: dict) -> pd.DataFrame:
    """One part, on a worker: finish it, split it, write it; one line of what was written."""
    part = as_frame(part)
    number = int(part[part_column].iloc[0])
    rows = part.drop(columns=[part_column])
    rows = finish(rows) if finish is not None else rows
    if "keep" not in rows:
        rows = flag(rows, pd.Series([None] * len(rows), index=rows.index, dtype=object))
    counts = write_split(rows, Path(out_dir), PART_NAME.format(number), types)
    return pd.DataFrame({"part": [number], "rows": [len(part)], "counts": [json.dumps(counts)],
                         "stats": [json.dumps(stats(rows) if stats is not None else {})],
                         "writer": [json.dumps(writer_identity())]})


def split_and_write_ray(ds: Any, out_dir: Path, rows_in: int, *, part_column: str, parts: int,
                        finish: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                        stats: Callable[[pd.DataFrame], dict] | None = None,
                        types: dict | None = None, num_cpus: float = 0.5,
                        aligned: bool = False) -> tuple[dict, dict]:
    """The Ray Data form of split_and_write: (counts, totals).

    Rows with equal `part_column` values (ints 0..parts-1) meet in one task (pipeline.partition:
    a hash shuffle; the tasks are named write_part(<finish's name>)), where
    `finish(rows) -> flagged rows` runs (rules over whole groups, e.g. a prompt's samples) and
    the part is split and written as data/ and rejected/ part-<number>.parquet: a retried task
    rewrites the same files. `types` ({column: pyarrow type}, e.g. parquet_types of the input
    plus what `finish` adds) gives every part the same column types, whatever its rows hold.
    `stats(rows) -> {name: number}` is summed over parts (totals); totals["writers"] lists who
    wrote each part ({part, node, pid, host}: pipeline.cluster.writer_identity). The counts are
    those of the parts written, checked against rows_in and against the rows the Parquet files
    hold; the driver holds one line per part, never the rows. `aligned`: each block of `ds`
    holds the rows of one part already (no shuffle; checked)."""
    import pyarrow as pa

    types = {**(types or {}), "reject_reason": pa.string(), "keep": pa.bool_()}
    lines = by_part(ds, part_column, max(1, parts), partial(
        _write_part, out_dir=str(out_dir), part_column=part_column, finish=finish, stats=stats,
        types=types), num_cpus=num_cpus, aligned=aligned,
        name=f"write_part({getattr(getattr(finish, 'func', finish), '__name__', 'finish')})"
        if finish else "write_part")
    written = pd.concat(lines, ignore_index=True) if lines else pd.DataFrame()
    counts: dict = {"kept": 0, "rejected": {}}
    totals: dict = {}
    lines = written.to_dict("records") if len(written) else []
    for line, extra in ((w["counts"], w["stats"]) for w in lines):
        part = json.loads(line)
        counts["kept"] += part["kept"]
        for reason, n in part["rejected"].items():
            counts["rejected"][reason] = counts["rejected"].get(reason, 0) + n
        for name, value in json.loads(extra).items():
            totals[name] = totals.get(name, 0) + value
    counts["rejected"] = dict(sorted(counts["rejected"].items(), key=lambda kv: (-kv[1], kv[0])))
    totals["writers"] = sorted(({"part": int(w["part"]), **json.loads(w["writer"])} for w in lines),
                               key=lambda w: w["part"])
    check_counts(counts, rows_in, out_dir.name)
    names = {PART_NAME.format(int(w["part"])) for w in lines}
    if not names:   # no rows: empty files, as the pandas form writes
        write_split(flag(pd.DataFrame(), pd.Series([], dtype=object)), out_dir)
        names = {PART_NAME.format(0)}
    _check_files(out_dir, names, counts)
    return {"rows_in": rows_in, **counts}, totals


def _check_files(out_dir: Path, names: set[str], counts: dict) -> None:
    """The data/ and rejected/ files are exactly the parts written, holding the rows counted;
    temporary files of killed attempts are removed."""
    rejected = sum(counts["rejected"].values())
    for folder, expected in (("data", counts["kept"]), ("rejected", rejected)):
        for tmp in (out_dir / folder).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        found = {f.stem for f in parquet_files(out_dir / folder)}
        held = parquet_rows(out_dir / folder)
        if found != names or held != expected:
            raise AssertionError(f"row accounting broken in {out_dir.name}/{folder}: parts "
                                 f"{sorted(found ^ names)[:5]} differ, files hold {held} rows, "
                                 f"{expected} were written")
