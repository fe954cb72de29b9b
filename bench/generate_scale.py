"""bench/generate_scale.py: the generate stage's output is assembled on the workers; the driver stays flat.

    python bench/generate_scale.py [--rows N] [--repeats R]

A trace cache of N synthetic R1-length answers (bench/curate_scale.synthetic: the real
R1-Distill traces in tests/fixtures/r1traces, mean ~13k characters), in shards of 256 rows as the
teacher writes them, and the requests they answer; then 2N. Each measurement runs in a fresh
process:
- cluster: what the stage does now (workflows.generate_ray.assemble_on_ray on a local Ray with
  every CPU): the driver reads the cache's key and error columns and plans; workers read the
  answers and write data/ and rejected/.
- in-driver: what the stage did before (trace_cache.rows, then the runner's split_and_write):
  every answer read into the driver, merged with the requests and written from there.
Prints each run's peak driver RSS and seconds and the machine's load, then `rss_ratio <x>`
(cluster peak RSS for 2N / for N; flat is 1.0) and, last, `driver_rss_saving <y>` (in-driver
peak RSS / cluster peak RSS at 2N).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


class Teacher:  # the fields assemble_on_ray reads from a TeacherConfig
    model, cost_per_million_input, cost_per_million_output = "synthetic", 0.5, 2.0


def build(n: int, folder: Path) -> None:
    """folder/requests.parquet (the plan, no messages) and folder/cache/shards/*.parquet."""
    from curate_scale import synthetic

    from distill.workflows.trace_cache import ANSWER_COLUMNS, TraceCache

    rows = synthetic(n)
    rows["request_key"] = rows["request_id"].map(lambda r: f"k-{r}")
    rows[["prompt_id", "problem", "reference", "sample_index", "request_id",
          "request_key"]].to_parquet(folder / "requests.parquet")
    cache = TraceCache(folder / "cache")
    for start in range(0, n, 256):
        cache.write(rows.iloc[start:start + 256][ANSWER_COLUMNS])


def child(mode: str, folder: Path, out: Path) -> dict:
    from distill.pipeline.accounting import split_and_write
    from distill.workflows.trace_cache import TraceCache

    requests = pd.read_parquet(folder / "requests.parquet")
    cache = TraceCache(folder / "cache")
    started = time.monotonic()
    if mode == "cluster":
        from distill.pipeline.cluster import ensure_ray
        from distill.workflows.generate_ray import assemble_on_ray

        ensure_ray()
        started = time.monotonic()
        counts, _ = assemble_on_ray(requests, cache, out, Teacher())
    else:   # the old path: every answer in this process
        parts = [pd.read_parquet(p) for p in sorted((folder / "cache" / "shards").glob("*.parquet"))]
        answers = pd.concat(parts, ignore_index=True).drop(columns=["request_id"])
        traces = requests.merge(answers, on="request_key", how="left", validate="one_to_one")
        traces = traces.sort_values(["prompt_id", "sample_index"], kind="stable", ignore_index=True)
        traces["teacher"] = Teacher.model
        traces["cost"] = (traces["prompt_tokens"] * 0.5 + traces["completion_tokens"] * 2.0) / 1e6
        reason = traces["error"].map(lambda e: None if e is None or pd.isna(e) else "teacher_error")
        traces["reject_reason"], traces["keep"] = reason, reason.isna()
        counts = split_and_write(traces, out, len(requests))
    return {"mode": mode, "rows": counts["rows_in"], "seconds": round(time.monotonic() - started, 1),
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> int:
    """This process's peak RSS (VmHWM: per address space, so not the parent's peak that
    ru_maxrss carries across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure(mode: str, folder: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=folder) as out:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(folder),
                               "--out", out], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--child"), ap.add_argument("--dir"), ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.dir), Path(args.out))))
        return
    best: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.rows, 2 * args.rows):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            build(n, folder)
            for _ in range(args.repeats):
                for mode in ("cluster", "in-driver"):
                    r = measure(mode, folder)
                    print(json.dumps(r), flush=True)
                    key = (mode, n)
                    best[key] = min(best.get(key, r), r, key=lambda x: x["peak_rss_mb"])
    print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    n = args.rows
    print(f"rss_ratio {best[('cluster', 2 * n)]['peak_rss_mb'] / best[('cluster', n)]['peak_rss_mb']:.2f}")
    print(f"driver_rss_saving {best[('in-driver', 2 * n)]['peak_rss_mb'] / best[('cluster', 2 * n)]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
