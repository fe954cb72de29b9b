"""How far `distill plan` was from the run it planned: predicted vs actual, per figure.

    python bench/plan_vs_run.py runs/quickstart/plan/plan.json runs/quickstart

Reads the plan (plan.json) and the finished run's manifests, and prints, for the generate time,
the kept rows, the tokens and the other stage times, the plan's figure, the run's and the error
(plan / actual - 1). Machine load at both times is not recorded by either: say it beside the
numbers (a busy 2-core machine makes the teacher several times slower).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def manifests(run_dir: Path) -> dict[str, dict]:
    index = json.loads((run_dir / "run.json").read_text())
    return {name: json.loads((run_dir / folder / "manifest.json").read_text())
            for name, folder in index["stages"].items()}


def compare(plan: dict, run: dict[str, dict]) -> list[tuple[str, float, float]]:
    """(figure, planned, actual) for what both hold."""
    stages = {r["stage"]: r for r in plan["stages"]}
    gen, cur = run["generate"], run["curate"]
    samples = gen["rows_in"]
    stats = {k: v["value"] for k, v in plan["stats"].items() if isinstance(v, dict) and "value" in v}
    out = [("generate seconds", stages["generate"]["seconds"], gen["seconds"]),
           ("kept rows", plan["kept_rows"], cur["kept"]),
           ("teacher samples", plan["samples"], samples),
           ("completion tokens / sample", stats["completion_tokens"], gen["completion_tokens"] / samples),
           ("prompt tokens / request", stats["prompt_tokens"], gen["prompt_tokens"] / samples),
           ("curate seconds", stages["curate"]["seconds"], cur["seconds"])]
    if "train" in run:
        real = run["train"].get("metrics", {}).get("real_tokens")
        planned = float(stages["train"]["work"].split(" tokens")[0].replace(",", ""))
        if real:
            out.append(("train tokens", planned, real))
        out.append(("train seconds", stages["train"]["seconds"], run["train"]["seconds"]))
    if "evaluate" in run and stages["evaluate"]["seconds"]:
        out.append(("evaluate seconds", stages["evaluate"]["seconds"], run["evaluate"]["seconds"]))
    return out


def main(plan_file: str, run_dir: str) -> None:
    plan = json.loads(Path(plan_file).read_text())
    rows = compare(plan, manifests(Path(run_dir)))
    print(f"{'figure':<28} {'plan':>12} {'actual':>12} {'error':>8}")
    for name, planned, actual in rows:
        err = planned / actual - 1 if actual else float("nan")
        print(f"{name:<28} {planned:>12,.1f} {actual:>12,.1f} {err:>+8.0%}")
    lo, hi = plan["kept_rows_ci95"]
    kept = next(a for n, _, a in rows if n == "kept rows")
    print(f"kept rows: actual {kept} {'inside' if lo <= kept <= hi else 'outside'} the plan's 95% "
          f"interval [{lo:,.0f}, {hi:,.0f}]")


if __name__ == "__main__":
    main(*sys.argv[1:3])
