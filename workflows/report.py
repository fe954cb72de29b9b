"""The run report: `write_report(store)` -> report/index.html, report/summary.md and the charts.

    distill report runs/quickstart [--open]        # `distill run` writes it at the end too

index.html is one self-contained page (charts embedded as data URIs, no script, no network):
the verdict of the paired comparison, the funnel by stage and reason, the teacher's tokens, time
and cost, trace lengths of kept and rejected traces, the teacher's pass rate per prompt (and by
level or source), the training loss, student vs base per benchmark with intervals and the paired
difference, and example traces per outcome with the reasoning collapsed. summary.md has the same
content for terminals; the charts are also written as PNG files beside them.
"""
from __future__ import annotations

import json
from pathlib import Path

from distill.pipeline.store import RunStore
from distill.workflows.report_data import ORDER, eval_summary, funnel_rows, report_data

__all__ = ["ORDER", "eval_summary", "funnel_rows", "report_blocks", "write_report"]


def _n(value: object, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _funnel(data: dict) -> list[tuple]:
    rows = []
    for stage in [s for s in data["stages"] if s not in ("evaluate", "publish")]:
        mine = [r for r in data["funnel"] if r["stage"] == stage]
        count = {r["outcome"]: r["rows"] for r in mine}
        if not count.get("in"):
            continue  # a stage that was off
        reasons = ", ".join(f"{r['outcome'][10:]} {r['rows']:,}" for r in mine
                            if r["outcome"].startswith("rejected: "))
        rows.append((stage, _n(count.get("in")), _n(count.get("kept")), reasons or "none"))
    return [("h2", "Funnel"), ("p", "Every row is accounted for: kept, or rejected with a reason."),
            ("img", "funnel", "rows in and kept per stage; rejected rows by stage and reason"),
            ("table", ("stage", "in", "kept", "rejected by reason"), rows)]


def _teacher(t: dict) -> list[tuple]:
    if not t:
        return []
    rows = [("samples", f"{t['samples']:,} ({t['prompts']} prompts x {t['samples_per_prompt']})"),
            ("asked now / from the trace cache", f"{t['generated_now']:,} / {t['from_cache']:,}"),
            ("prompt tokens", _n(t["prompt_tokens"])),
            ("completion tokens", _n(t["completion_tokens"])),
            ("time (stage, engine start included)", f"{t['seconds']:,.0f} s"),
            ("output tokens per second", _n(t["tokens_per_second"], 1)),
            ("cost", f"{t['cost']:,.4f}"),
            ("finish reasons", ", ".join(f"{k} {v:,}" for k, v in t["finish_reasons"].items())),
            ("seed reproduces the samples", "yes" if t["reproducible"] else "no")]
    return [("h2", "Teacher"), ("table", ("", "value"), rows)]


def _lengths(traces) -> list[tuple]:
    if traces.empty:
        return []
    stats = traces.groupby("outcome")["completion_tokens"].describe(percentiles=[0.5, 0.9])
    order = ["kept", *[o for o in stats.sort_values("count", ascending=False).index if o != "kept"]]
    rows = [(o, _n(int(stats.loc[o, "count"])), _n(stats.loc[o, "50%"]), _n(stats.loc[o, "90%"]),
             _n(stats.loc[o, "max"])) for o in order if o in stats.index]
    return [("h2", "Trace lengths"),
            ("img", "lengths", "completion tokens of kept and rejected traces"),
            ("table", ("outcome", "traces", "median tokens", "90th percentile", "max"), rows)]


def _pass_rates(per) -> list[tuple]:
    if per is None:
        return [("h2", "Teacher pass rate"),
                ("p", "The traces were not verified (curate.verify.method none), so there is no "
                      "pass rate.")]
    rate = per["rate"]
    buckets = [("never correct", rate == 0), ("some samples correct", (rate > 0) & (rate < 1)),
               ("always correct", rate == 1)]
    out = [("h2", "Teacher pass rate"),
           ("p", f"Share of each prompt's samples that were verified correct: {rate.mean():.3f} on "
                 f"average over {len(per):,} prompts ({int(per['correct'].sum()):,} of "
                 f"{int(per['samples'].sum()):,} samples)."),
           ("img", "teacher_pass_rates", "teacher pass rate per prompt"),
           ("table", ("prompts", "count"), [(name, _n(int(mask.sum()))) for name, mask in buckets])]
    if "group" in per:
        by = per.groupby("group")["rate"].agg(["size", "mean"]).sort_index()
        out.append(("table", (per.attrs.get("group", "group"), "prompts", "mean pass rate"),
                    [(g, _n(int(r["size"])), f"{r['mean']:.3f}") for g, r in by.iterrows()]))
    return out


def _training(t: dict) -> list[tuple]:
    if not t:
        return []
    history = t["loss"]
    out = [("h2", "Training"),
           ("table", ("", "value"), [("method", t["method"] or "n/a"), ("rows trained on", _n(t["rows"])),
                                     ("optimizer steps", _n(t["steps"])),
                                     ("tokens per second", _n(t["tokens_per_second"], 1)),
                                     ("time", f"{_n(t['seconds'])} s")])]
    if not history:
        return out + [("p", "No loss was logged (fewer optimizer steps than train.logging_steps).")]
    step = max(1, -(-len(history) // 8))
    shown = history[::step] + ([history[-1]] if (len(history) - 1) % step else [])
    return out + [("img", "loss", "training loss per optimizer step"),
                  ("table", ("step", "loss"), [(h["step"], f"{h['loss']:.4f}") for h in shown])]


def _evaluation(summary: dict) -> list[tuple]:
    from distill.evaluation.tables import (
        PAIRED_HEADER,
        RESULT_HEADER,
        paired_rows,
        protocol_lines,
        result_rows,
    )

    if not summary.get("results"):
        return []
    out = [("h2", "Evaluation"),
           ("img", "pass_rates", "pass@1 with 95% intervals; student minus base"),
           ("table", RESULT_HEADER, result_rows(summary["results"]))]
    if summary.get("paired"):
        out += [("p", "Student minus base on the same questions (paired):"),
                ("table", PAIRED_HEADER, paired_rows(summary["paired"]))]
    rules = protocol_lines(summary.get("protocol"))
    return out + ([("p", "The rules behind these numbers:"), ("list", rules)] if rules else [])


def report_blocks(data: dict, name: str) -> list[tuple]:
    """The report's content as blocks (workflows.report_html) from report_data()."""
    from distill.evaluation.tables import verdicts

    blocks: list[tuple] = [("h1", f"distill run report: {name}"),
                           ("meta", f"run directory {data['run']}; stages done: "
                                    f"{', '.join(data['stages'])}")]
    blocks += [("verdict", line) for line in verdicts(data["evaluation"].get("paired"))]
    blocks += _funnel(data) + _teacher(data["teacher"]) + _lengths(data["traces"])
    blocks += _pass_rates(data["pass_rates"]) + _training(data["training"])
    blocks += _evaluation(data["evaluation"])
    if data["examples"]:
        blocks += [("h2", "Example traces"),
                   ("p", "A few traces per outcome, in (prompt, sample) order; open a reasoning "
                         "to read it."),
                   ("examples", data["examples"])]
    return blocks


def write_report(store: RunStore) -> list[Path]:
    """Write report/index.html, report/summary.md and the chart PNGs; returns the files written
    (index.html first)."""
    from distill.pipeline.store import write_atomic
    from distill.workflows.report_html import to_html, to_markdown
    from distill.workflows.report_plots import CHARTS

    out = store.root / "report"
    out.mkdir(exist_ok=True)
    data = report_data(store)
    images = {name: png for name, chart in CHARTS.items() if (png := chart(data)) is not None}
    index = store.root / "run.json"
    name = json.loads(index.read_text()).get("recipe") if index.exists() else None
    name = name or store.root.name
    blocks = report_blocks(data, name)
    blocks = [b for b in blocks if b[0] != "img" or b[1] in images]
    written = [out / "index.html", out / "summary.md"]
    write_atomic(written[0], to_html(blocks, images, f"distill report: {name}"))
    write_atomic(written[1], to_markdown(blocks))
    for chart, png in images.items():
        write_atomic(out / f"{chart}.png", png)
        written.append(out / f"{chart}.png")
    return written
