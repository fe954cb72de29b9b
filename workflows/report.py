"""The run report: funnel (rows in/out per stage and reason), length histogram, pass rates.

`write_report(store)` writes report/funnel.png, report/lengths.png, report/pass_rates.png (pass@1
per model with its interval, and the paired student-minus-base difference) and report/summary.md
(funnel, evaluation table, paired comparison, rules) into the run directory; `funnel_rows(store)`
is the same funnel as data, `eval_summary(store)` the evaluation as data.
"""
from __future__ import annotations

from pathlib import Path

from distill.pipeline.store import RunStore

ORDER = ("prompts", "generate", "curate", "train", "evaluate", "publish")


def funnel_rows(store: RunStore) -> list[dict]:
    """One row per (stage, outcome): kept, or each reject reason, with counts."""
    rows = []
    for name in [n for n in ORDER if n in store.stage_names()] + [n for n in store.stage_names() if n not in ORDER]:
        m = store.stage(name).manifest
        rows.append({"stage": name, "outcome": "in", "rows": m.get("rows_in", 0)})
        for reason, n in sorted(m.get("rejected", {}).items(), key=lambda kv: -kv[1]):
            rows.append({"stage": name, "outcome": f"rejected: {reason}", "rows": n})
        rows.append({"stage": name, "outcome": "kept", "rows": m.get("kept", 0)})
    return rows


def _plot_funnel(store: RunStore, path: Path) -> None:
    import matplotlib.pyplot as plt

    stages = [n for n in ORDER if n in store.stage_names() and n in ("prompts", "generate", "curate", "train")]
    ms = [store.stage(n).manifest for n in stages]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.bar(stages, [m["rows_in"] for m in ms], color="#c8d6e5", label="in")
    a.bar(stages, [m["kept"] for m in ms], color="#1e6fa8", label="kept")
    a.set_title("rows in and kept per stage"); a.legend()
    reasons = {}
    for n, m in zip(stages, ms):
        for r, c in m["rejected"].items():
            reasons[f"{n}: {r}"] = c
    items = sorted(reasons.items(), key=lambda kv: kv[1])
    b.barh([k for k, _ in items] or ["none"], [v for _, v in items] or [0], color="#c0392b")
    b.set_title("rejected rows by stage and reason")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def _plot_lengths(store: RunStore, path: Path) -> bool:
    import matplotlib.pyplot as plt
    import pandas as pd

    if "curate" not in store.stage_names():
        return False
    cur = store.stage("curate")
    kept, rej = cur.to_pandas(), cur.to_pandas(rejected=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = 40
    allv = pd.concat([kept.get("completion_tokens", pd.Series(dtype=float)),
                      rej.get("completion_tokens", pd.Series(dtype=float))])
    if allv.empty:
        return False
    ax.hist([kept["completion_tokens"], rej["completion_tokens"]], bins=bins, stacked=True,
            label=["kept", "rejected"], color=["#1e6fa8", "#c0392b"])
    ax.set_xlabel("completion tokens"); ax.set_ylabel("traces"); ax.legend()
    ax.set_title("teacher trace lengths")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
    return True


def _plot_pass_rates(summary: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np

    results, paired = summary.get("results") or {}, summary.get("paired") or {}
    if not results:
        return False
    models = list(results)
    benches = sorted({b for r in results.values() for b in r})
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(12 if paired else 7, 4), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(models)
    for i, mdl in enumerate(models):
        vals = [results[mdl].get(b, {}).get("pass@1", np.nan) for b in benches]
        lo = [v - results[mdl].get(b, {}).get("ci95_low", v) for v, b in zip(vals, benches)]
        hi = [results[mdl].get(b, {}).get("ci95_high", v) - v for v, b in zip(vals, benches)]
        ax.bar(np.arange(len(benches)) + i * width, vals, width, yerr=[lo, hi], capsize=4, label=mdl)
    ax.set_xticks(np.arange(len(benches)) + width * (len(models) - 1) / 2, benches)
    ax.set_ylabel("pass@1 (95% interval)"); ax.set_ylim(0, 1); ax.legend()
    if paired:
        _plot_paired(axes[0][1], paired)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
    return True


def _plot_paired(ax, paired: dict) -> None:
    """Student minus base per benchmark with its paired 95% interval; 0 marked."""
    benches = sorted(paired)
    d = [paired[b]["difference"] for b in benches]
    err = [[v - paired[b]["ci95_low"] for v, b in zip(d, benches)],
           [paired[b]["ci95_high"] - v for v, b in zip(d, benches)]]
    ax.errorbar(range(len(benches)), d, yerr=err, fmt="o", capsize=6, color="#1e6fa8")
    ax.axhline(0, color="#c0392b", linewidth=1)
    ax.set_xticks(range(len(benches)), benches); ax.set_xlim(-0.5, len(benches) - 0.5)
    ax.set_ylabel("student - base pass@1 (paired 95% interval)")


def eval_summary(store: RunStore) -> dict:
    """The evaluate manifest's results, paired and protocol ({} when it has not run)."""
    if "evaluate" not in store.stage_names():
        return {}
    m = store.stage("evaluate").manifest
    return {k: m.get(k, {}) for k in ("results", "paired", "protocol")}


def write_report(store: RunStore) -> list[Path]:
    """Write the plots and summary.md; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    out = store.root / "report"
    out.mkdir(exist_ok=True)
    written = [out / "funnel.png"]
    _plot_funnel(store, written[0])
    if _plot_lengths(store, out / "lengths.png"):
        written.append(out / "lengths.png")
    evaluation = eval_summary(store)
    if _plot_pass_rates(evaluation, out / "pass_rates.png"):
        written.append(out / "pass_rates.png")
    lines = ["| stage | outcome | rows |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['outcome']} | {r['rows']} |" for r in funnel_rows(store)]
    text = "# Funnel\n\n" + "\n".join(lines) + "\n"
    if evaluation.get("results"):
        from distill.evaluation.tables import markdown

        text += "\n# Evaluation\n\n" + markdown(evaluation) + "\n"
    (out / "summary.md").write_text(text)
    written.append(out / "summary.md")
    return written
