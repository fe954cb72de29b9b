"""Teachers side by side: `teacher_table(store) -> DataFrame`, one row per teacher of a run.

    distill.workflows.compare.teacher_table(open_run("runs/compare"))

For a run whose sources have their own teachers (`prompts.sources[].teacher`; the same prompt
file under two names compares two teachers on the same prompts), from the generate and curate
stages' rows: samples, kept (curate's verdict), pass rate (kept / samples), mean completion
tokens of all samples and of the kept ones, cost, and cost per kept trace. Brought traces
(data.trace_sources) appear under their own teacher names, at cost 0.
"""
from __future__ import annotations

import pandas as pd


def teacher_table(store) -> pd.DataFrame:
    """The comparison (see the module docstring), one row per teacher, by name."""
    curate = store.stage("curate")
    rows = pd.concat([curate.to_pandas().assign(keep=True),
                      curate.to_pandas(rejected=True).assign(keep=False)], ignore_index=True)
    rows["completion_tokens"] = pd.to_numeric(rows["completion_tokens"], errors="coerce")
    rows["cost"] = pd.to_numeric(rows["cost"], errors="coerce").fillna(0.0)
    out = rows.groupby("teacher").agg(
        samples=("keep", "size"), kept=("keep", "sum"), cost=("cost", "sum"),
        mean_tokens=("completion_tokens", "mean"))
    out["kept_mean_tokens"] = rows[rows["keep"]].groupby("teacher")["completion_tokens"].mean()
    out["pass_rate"] = out["kept"] / out["samples"]
    out["cost_per_kept"] = out["cost"] / out["kept"].where(out["kept"] > 0)
    return out[["samples", "kept", "pass_rate", "mean_tokens", "kept_mean_tokens", "cost",
                "cost_per_kept"]].reset_index()
