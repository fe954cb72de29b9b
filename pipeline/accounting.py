"""Row accounting: the one place rows are dropped. `split_and_write(rows, out_dir) -> counts`.

Stages flag rows with `keep` (bool) and `reject_reason` (str, None when kept). Kept rows go to
data/, rejected rows to rejected/ with their reason, and the counts feed the manifest and the
funnel: rows_in == kept + sum(rejected.values()) always holds, or this raises.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def split_and_write(rows: pd.DataFrame, out_dir: Path, rows_in: int) -> dict:
    """Write kept rows to out_dir/data and rejected rows to out_dir/rejected; return counts."""
    if "keep" not in rows:
        rows = flag(rows, pd.Series([None] * len(rows), index=rows.index, dtype=object))
    counts = count(rows)
    total = counts["kept"] + sum(counts["rejected"].values())
    if total != rows_in:
        raise AssertionError(f"row accounting broken in {out_dir.name}: {rows_in} in, "
                             f"{counts['kept']} kept + {total - counts['kept']} rejected")
    write_parquet(rows[rows["keep"]].drop(columns=["keep", "reject_reason"]),
                  out_dir / "data" / "part-00000.parquet")
    write_parquet(rows[~rows["keep"]].drop(columns=["keep"]), out_dir / "rejected" / "part-00000.parquet")
    return {"rows_in": rows_in, **counts}
