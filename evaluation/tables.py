"""The evaluation summary as text, one wording for the CLI table, the report and the model card.

    markdown({"results": ..., "paired": ..., "protocol": ...})   # the evaluate manifest's keys
    result_rows(results), paired_rows(paired), protocol_lines(protocol)   # for other renderers
    verdicts(paired)          # what the paired comparison lets a person conclude, per benchmark
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


def verdict(bench: str, p: dict) -> str:
    """What the paired comparison on `bench` lets a person conclude, in one sentence."""
    diff, lo, hi, q = p["difference"], p["ci95_low"], p["ci95_high"], p["questions"]
    numbers = f"{diff:+.3f} pass@1 (paired 95% interval [{lo:+.3f}, {hi:+.3f}], {q} questions)"
    if p["excludes_zero"]:
        side = "better" if diff > 0 else "worse"
        return f"{bench}: the student is {side} than its base: {numbers}."
    text = (f"{bench}: no difference the evaluation can detect: {numbers}; the interval "
            "includes 0, so the difference is within noise")
    half = (hi - lo) / 2
    if abs(diff) > 1e-9 and half > 0:  # the interval narrows about as 1/sqrt(questions)
        needed = math.ceil(q * (half / abs(diff)) ** 2)
        text += (f"; a real difference of this size would need about {needed:,} questions "
                 "(raise the benchmark's limit)")
    return text + "."


def verdicts(paired: dict | None) -> list[str]:
    """verdict() for every benchmark of the paired comparison."""
    return [verdict(bench, p) for bench, p in (paired or {}).items()]


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


def markdown(summary: dict, *, verdict: bool = True) -> str:
    """Results table, the paired comparison (when the base ran) with its `verdict`, and the
    rules, as markdown."""
    out = _md_table(RESULT_HEADER, result_rows(summary.get("results") or {}))
    paired = paired_rows(summary.get("paired"))
    if paired:
        out += ["", "Student minus base on the same questions (paired):", ""]
        out += _md_table(PAIRED_HEADER, paired)
        if verdict:
            out += ["", "Verdict:", ""] + [f"- {line}" for line in verdicts(summary.get("paired"))]
    rules = protocol_lines(summary.get("protocol"))
    if rules:
        out += ["", "Rules:", ""] + [f"- {line}" for line in rules]
    return "\n".join(out)
