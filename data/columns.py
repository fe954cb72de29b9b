"""Column checks for the curation rules: `require_columns(df, ["prompt_id"], "select_samples",
fix="...")` raises the one user-facing error (DistillError) naming the rule, the missing column,
the columns there are, and the fix, instead of a KeyError deep inside a rule."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from distill.pipeline.errors import DistillError


def require_columns(df: pd.DataFrame, columns: Iterable[str | None], who: str, *,
                    fix: str) -> None:
    """Raise DistillError when any of `columns` (None entries skipped) is not in df."""
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise DistillError(f"{who}: column {names} is not in the data (columns: "
                           f"{list(df.columns)})", fix=fix)
