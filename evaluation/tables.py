"""The evaluation summary as text, one wording for the CLI table, the report and the model card.

    markdown({"results": ..., "paired": ..., "protocol": ...})   # the evaluate manifest's keys
    result_rows(results), paired_rows(paired), protocol_lines(protocol)   # for other renderers
"""
from __future__ import annotations

import math

RESULT_HEADER = ("model", "benchmark", "pass@1", "95% interval", "cons@n", "questions x n")
PAIRED_HEADER = ("benchmark", "student - base pass@1", "95% interval", "excludes 0", "questions")


def _num(v: object) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def result_rows(results: dict) -> list[tuple[str, ...]]:
    """One row per (model, benchmark) of `results[model][benchmark]`, as RESULT_HEADER."""
    rows = []
    for model, by_bench in results.items():
        for bench, r in by_bench.items():
            cons_key = next((k for k in r if k.startswith("cons@")), None)
            rows.append((model, bench, _num(r["pass@1"]),
                         f"[{_num(r['ci95_low'])}, {_num(r['ci95_high'])}]",
                         f"{_num(r[cons_key])} ({cons_key})" if cons_key else "n/a",
                         f"{r['questions']} x {r['samples_per_question']}"))
    return rows


def paired_rows(paired: dict | None) -> list[tuple[str, ...]]:
    """One row per benchmark of `paired[benchmark]`, as PAIRED_HEADER."""
    return [(bench, f"{p['difference']:+.3f}", f"[{p['ci95_low']:+.3f}, {p['ci95_high']:+.3f}]",
             "yes" if p["excludes_zero"] else "no", str(p["questions"]))
            for bench, p in (paired or {}).items()]


def protocol_lines(protocol: dict | None) -> list[str]:
    """The rules behind the numbers, one line each (empty for results from before they were
    recorded)."""
    if not protocol:
        return []
    lines = [f"answers: {protocol['parsing']}", f"cons@n: {protocol['cons']}",
             f"pass@1 interval: {protocol['interval']}", f"paired: {protocol['paired']}"]
    for model, r in protocol.get("models", {}).items():
        stops = ", ".join(r["stop_tokens"] + [f"'{s}' (string)" for s in r["stop_strings"]])
        lines.append(f"{model}: {r['template']}; pre-fill {r['prefill']!r}; stops at {stops}")
    return lines


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(summary: dict) -> str:
    """Results table, the paired comparison (when the base ran) and the rules, as markdown."""
    out = _md_table(RESULT_HEADER, result_rows(summary.get("results") or {}))
    paired = paired_rows(summary.get("paired"))
    if paired:
        out += ["", "Student minus base on the same questions (paired):", ""]
        out += _md_table(PAIRED_HEADER, paired)
    rules = protocol_lines(summary.get("protocol"))
    if rules:
        out += ["", "Rules:", ""] + [f"- {line}" for line in rules]
    return "\n".join(out)
