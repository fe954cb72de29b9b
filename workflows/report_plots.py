"""The report's charts as PNG bytes (matplotlib, Agg): one function per chart, None when there is
nothing to draw. `report_html` embeds them as data URIs; `report` also writes them as files."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

KEPT, REJECTED, BASE, GRID = "#1e6fa8", "#c0392b", "#9aa5b1", "#e5e9ee"
REASON_COLOURS = ["#c0392b", "#e67e22", "#8e44ad", "#16a085", "#7f8c8d", "#d35400", "#2c3e50"]


def _figure(width: float = 7.0, height: float = 3.6, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.color": GRID, "axes.axisbelow": True})
    fig, axes = plt.subplots(1, cols, figsize=(width, height), squeeze=False)
    return fig, axes[0]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def funnel(rows: list[dict]) -> bytes | None:
    """Rows in and kept per stage; rejected rows by stage and reason."""
    stages = [r["stage"] for r in rows if r["outcome"] == "in" and r["rows"]
              and r["stage"] not in ("evaluate", "publish")]
    if not stages:
        return None
    count = {(r["stage"], r["outcome"]): r["rows"] for r in rows}
    reasons = sorted(((f"{r['stage']}: {r['outcome'][10:]}", r["rows"]) for r in rows
                      if r["outcome"].startswith("rejected: ") and r["stage"] in stages),
                     key=lambda kv: kv[1])
    fig, axes = _figure(10 if reasons else 7, 3.8, cols=2 if reasons else 1)
    a = axes[0]
    a.bar(stages, [count[(s, "in")] for s in stages], color="#c8d6e5", label="in")
    a.bar(stages, [count[(s, "kept")] for s in stages], color=KEPT, label="kept")
    a.set_title("rows in and kept per stage")
    a.legend()
    if reasons:
        b = axes[1]
        b.barh([k for k, _ in reasons], [v for _, v in reasons], color=REJECTED)
        for i, (_, v) in enumerate(reasons):
            b.text(v, i, f" {v:,}", va="center", fontsize=8)
        b.set_title("rejected rows by stage and reason")
    return _png(fig)


def lengths(traces: pd.DataFrame) -> bytes | None:
    """Completion tokens of kept traces and of rejected ones by reason (the five most common)."""
    if traces.empty or "completion_tokens" not in traces:
        return None
    fig, (ax,) = _figure()
    top = [o for o in traces["outcome"].value_counts().index if o != "kept"][:5]
    groups = [("kept", traces[traces["outcome"] == "kept"])]
    groups += [(o, traces[traces["outcome"] == o]) for o in top]
    rest = traces[~traces["outcome"].isin(["kept", *top])]
    if len(rest):
        groups.append(("other rejected", rest))
    values = [g["completion_tokens"].to_numpy() for _, g in groups]
    bins = np.histogram_bin_edges(np.concatenate(values), bins=30)
    colours = [KEPT] + REASON_COLOURS[:len(groups) - 1]
    ax.hist(values, bins=bins, stacked=True, color=colours,
            label=[f"{name} ({len(g):,})" for name, g in groups])
    ax.set_xlabel("completion tokens per trace")
    ax.set_ylabel("traces")
    ax.set_title("teacher trace lengths: kept and rejected by reason")
    ax.legend(fontsize=8)
    return _png(fig)


def pass_rates(per_prompt: pd.DataFrame | None) -> bytes | None:
    """Histogram of the teacher's pass rate per prompt; mean rate by group where there is one."""
    if per_prompt is None or per_prompt.empty:
        return None
    grouped = "group" in per_prompt and per_prompt["group"].notna().any()
    fig, axes = _figure(10 if grouped else 7, 3.6, cols=2 if grouped else 1)
    ax = axes[0]
    ax.hist(per_prompt["rate"], bins=np.linspace(0, 1, 11), color=KEPT, edgecolor="white")
    ax.set_xlabel("share of a prompt's samples that were correct")
    ax.set_ylabel("prompts")
    ax.set_title(f"teacher pass rate per prompt ({len(per_prompt):,} prompts)")
    if grouped:
        by = per_prompt.groupby("group")["rate"].agg(["mean", "size"]).sort_index()
        axes[1].bar([str(g) for g in by.index], by["mean"], color=KEPT)
        axes[1].set_ylim(0, 1)
        axes[1].set_title(f"mean pass rate by {per_prompt.attrs.get('group', 'group')}")
        axes[1].tick_params(axis="x", rotation=30)
    return _png(fig)


def loss(history: list[dict]) -> bytes | None:
    if not history:
        return None
    fig, (ax,) = _figure(7, 3.2)
    from matplotlib.ticker import MaxNLocator

    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", ms=3,
            color=KEPT)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    return _png(fig)


def evaluation(summary: dict) -> bytes | None:
    """pass@1 per model and benchmark with its interval; student minus base (paired interval)."""
    results, paired = summary.get("results") or {}, summary.get("paired") or {}
    if not results:
        return None
    models, benches = list(results), sorted({b for r in results.values() for b in r})
    fig, axes = _figure(10 if paired else 7, 3.6, cols=2 if paired else 1)
    ax, width = axes[0], 0.8 / len(models)
    for i, mdl in enumerate(models):
        r = [results[mdl].get(b, {}) for b in benches]
        vals = np.array([x.get("pass@1", np.nan) for x in r])
        err = [vals - [x.get("ci95_low", np.nan) for x in r],
               [x.get("ci95_high", np.nan) for x in r] - vals]
        ax.bar(np.arange(len(benches)) + i * width, vals, width, yerr=err, capsize=4, label=mdl,
               color=KEPT if mdl == "student" else BASE)
    ax.set_xticks(np.arange(len(benches)) + width * (len(models) - 1) / 2, benches)
    ax.set_ylabel("pass@1 (95% interval)")
    ax.set_ylim(0, 1)
    ax.legend()
    if paired:
        b = sorted(paired)
        d = np.array([paired[k]["difference"] for k in b])
        err = [d - [paired[k]["ci95_low"] for k in b], [paired[k]["ci95_high"] for k in b] - d]
        axes[1].errorbar(range(len(b)), d, yerr=err, fmt="o", capsize=6, color=KEPT)
        axes[1].axhline(0, color=REJECTED, linewidth=1)
        axes[1].set_xticks(range(len(b)), b)
        axes[1].set_xlim(-0.5, len(b) - 0.5)
        axes[1].set_ylabel("student - base pass@1 (paired 95% interval)")
    return _png(fig)


CHARTS = {"funnel": lambda d: funnel(d["funnel"]), "lengths": lambda d: lengths(d["traces"]),
          "teacher_pass_rates": lambda d: pass_rates(d["pass_rates"]),
          "loss": lambda d: loss(d["training"].get("loss", [])),
          "pass_rates": lambda d: evaluation(d["evaluation"])}
