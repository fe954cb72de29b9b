"""bench/curate_scale.py: the curate stage on Ray Data keeps the driver flat and costs no speed.

    python bench/curate_scale.py [--rows N] [--quick]

Synthetic R1-length traces: the 40 real R1-Distill traces in tests/fixtures/r1traces (mean
~13k characters, one cut at 32,768 tokens), 4 samples per prompt, each made unique by a line
of random words (no exact duplicates; two prompts in ten get an exact copy of a sample), each
prompt's problem made unique the same way. They are written as a generate stage writes them
(Parquet, 8,192 rows a file, row groups of 1,024) for N and 2N rows. Each measurement runs in a
fresh process:
- cluster: the stage's path (data.curate_ray on a local Ray with every CPU): the workers read,
  curate and write; the driver's peak RSS is what it holds. Ray is started and Ray Data has run
  once (its bookkeeping actors are up) before the clock starts, as in a workflow where curate
  follows generate; the worker processes that run the rules start cold (imports, math-verify's
  caches), as the in-driver path's pool does.
- in-driver: the pandas path the stage used before, on the N rows: read them all into the
  driver, curate() (verify in a process pool), split and write.
Each is run `--repeats` times, interleaved, and the fastest run of each kept (other work on a
shared machine only slows a run down). Prints absolute figures and the machine's load, then
`rss_ratio <x>` (peak driver RSS for 2N / for N, the highest seen; goal <= 1.2) and, last,
`speed_ratio <y>` (cluster rows/s / in-driver rows/s on the same N rows; goal >= 1.0).
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

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi",
         "chi", "psi", "omega"]


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    """n generate-stage rows, 4 samples per prompt, from the fixture traces."""
    files = sorted((REPO / "tests" / "fixtures" / "r1traces").glob("*.jsonl"))
    src = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for i in range(n):
        prompt, sample = divmod(i, 4)
        pid = f"p{prompt:07d}"
        if sample == 0:
            words = " ".join(rng.choice(WORDS, 24))
            problem = f"{words}. {src.iloc[prompt % len(src)]['problem']}"
        if sample == 1 and prompt % 5 == 0:     # an exact duplicate of the prompt's first sample
            rows.append({**rows[-1], "sample_index": 1, "request_id": f"{pid}:1"})
            continue
        t = src.iloc[(prompt * 7 + sample) % len(src)]
        text = t["full_response"]
        cut = text.find("\n\n", len(text) // 3)
        cut = cut if cut > 0 else len(text) // 3
        words = " ".join(rng.choice(WORDS, 12))
        text = f"{text[:cut]}\n\nChecking once more ({words}).\n\n{text[cut:]}"
        tokens = int(t["total_generated_tokens"])
        rows.append({"prompt_id": pid, "sample_index": sample, "request_id": f"{pid}:{sample}",
                     "problem": problem, "reference": str(t["ground_truth"]), "text": text,
                     "reasoning": None, "prompt_tokens": 120, "completion_tokens": tokens,
                     "finish_reason": "length" if tokens >= 32768 else "stop", "error": None})
    return pd.DataFrame(rows)


def write_generate(df: pd.DataFrame, folder: Path, rows_per_file: int | None = None) -> Path:
    """The rows as generate writes its parts: PART_ROWS (8,192) a file, store.write_parquet."""
    from distill.pipeline.store import write_parquet
    from distill.workflows.generate_ray import PART_ROWS

    rows_per_file = rows_per_file or PART_ROWS

    for start in range(0, len(df), rows_per_file):
        name = f"part-{start // rows_per_file:05d}.parquet"
        write_parquet(df.iloc[start:start + rows_per_file], folder / "data" / name)
    return folder / "data"


def config():
    from distill.data.curate import CurateConfig

    # The fixture traces answer MATH-500 problems: check them against the other benchmarks.
    return CurateConfig.model_validate(
        {"decontam": {"benchmarks": ["aime24", "amc23", "gsm8k_test"]}})


def child(mode: str, data: Path, out: Path) -> dict:
    """One measurement in this (fresh) process."""
    sys.path.insert(0, str(REPO))
    cfg = config()
    if mode == "cluster":
        import ray

        from distill.data.curate_ray import curate_on_ray
        from distill.pipeline.cluster import ensure_ray

        ensure_ray()
        ray.data.range(1).materialize()   # Ray Data's bookkeeping actors up, as after generate
        started = time.perf_counter()
        counts, _ = curate_on_ray(data, cfg, out)
        seconds, frame_mb = time.perf_counter() - started, None
    else:
        from distill.data.curate import curate
        from distill.pipeline import accounting
        from distill.pipeline.store import read_parquet_dir

        started = time.perf_counter()
        traces = read_parquet_dir(data)
        rows = curate(traces, cfg)
        counts = accounting.split_and_write(rows, out, len(traces))
        seconds = time.perf_counter() - started
        frame_mb = (traces.memory_usage(deep=True).sum() / 2**20,
                    rows.memory_usage(deep=True).sum() / 2**20)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "counts": counts,
            "frame_mb": frame_mb}


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, not ru_maxrss (Linux carries ru_maxrss over from the
    forked parent through exec, so a child would report the bench's own frame)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(mode: str, data: Path, out: Path) -> dict:
    load = os.getloadavg()
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(data), str(out)],
                          capture_output=True, text=True, check=False)
    result = out / "bench-result.json"
    if proc.returncode != 0 or not result.exists():
        raise SystemExit(f"{mode} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(result.read_text()), "load_before": load, "load_after": os.getloadavg()}


def show(name: str, r: dict) -> None:
    rows = r["counts"]["rows_in"]
    frame = (f", frame {r['frame_mb'][0]:,.0f} MB read, {r['frame_mb'][1]:,.0f} MB curated"
             if r["frame_mb"] else "")
    print(f"{name:<12} {rows:>7,} rows {r['seconds']:7.1f} s {rows / r['seconds']:7.1f} rows/s  "
          f"peak driver RSS {r['peak_rss_mb']:7,.0f} MB{frame}  kept {r['counts']['kept']:,}  "
          f"load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=12000, help="N (2N is run too)")
    ap.add_argument("--quick", action="store_true", help="N = 400, once, for a smoke check")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each (the fastest is kept)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = Path(args.child[2])
        result = child(args.child[0], Path(args.child[1]), out)
        (out / "bench-result.json").write_text(json.dumps(result))
        return
    sys.path.insert(0, str(REPO))
    n, args.repeats = (400, 1) if args.quick else (args.rows, args.repeats)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} (1 min)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        df = synthetic(2 * n)
        print(f"{n:,} and {2 * n:,} traces, mean {df['text'].str.len().mean():,.0f} characters, "
              f"mean {df['completion_tokens'].mean():,.0f} tokens", flush=True)
        small = write_generate(df.iloc[:n], tmp / "gen_n")
        large = write_generate(df, tmp / "gen_2n")
        del df
        plan = [("cluster N", "cluster", small), ("in-driver N", "pandas", small),
                ("cluster 2N", "cluster", large)]
        runs: dict[str, dict] = {}
        for rep in range(args.repeats):   # interleaved; the fastest of each is kept (others'
            for name, mode, data in plan:  # load on a shared machine only ever slows a run)
                r = measure(mode, data, tmp / f"out-{mode}-{rep}-{name[-2:].strip()}")
                show(name, r)
                peak = max(r["peak_rss_mb"], runs.get(name, r)["peak_rss_mb"])
                if name not in runs or r["seconds"] < runs[name]["seconds"]:
                    runs[name] = r
                runs[name]["peak_rss_mb"] = peak
    print("best of each:")
    for name, r in runs.items():
        show(name, r)
    same = runs["cluster N"]["counts"] == runs["in-driver N"]["counts"]
    print(f"same counts cluster vs in-driver on N: {same}")
    print(f"rss_ratio {runs['cluster 2N']['peak_rss_mb'] / runs['cluster N']['peak_rss_mb']:.3f}")
    print(f"speed_ratio {runs['in-driver N']['seconds'] / runs['cluster N']['seconds']:.3f}")


if __name__ == "__main__":
    main()
