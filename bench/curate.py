"""bench/curate.py: rows/s of the whole curate stage against its parts called one by one.

    python bench/curate.py [--rows 2000] [--quick]

Realistic traces: the 40 real R1-Distill traces in tests/fixtures/r1traces (thousands of tokens
each), resampled into k samples per prompt with a small unique edit each (so exact dedupe does
not collapse them; near-dedupe still sees near-duplicates, as with real samples). The stage is
measured as users run it: read generate's Parquet, curate on Ray (parse, verify, filters,
decontamination, dedupe, selection on the workers), split and write kept/rejected Parquet. The
baseline calls the same parts one after another in this process (verify in-process) over the
same rows. Both produce the same reasons (checked). Prints the ratio stage/baseline last.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def realistic_traces(n_rows: int) -> pd.DataFrame:
    files = sorted((REPO / "tests" / "fixtures" / "r1traces").glob("*.jsonl"))
    src = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
    rows = []
    for i in range(n_rows):
        t = src.iloc[i % len(src)]
        k = i // len(src)
        text = t["full_response"]
        cut = text.find("\n\n", len(text) // 3)
        cut = cut if cut > 0 else len(text) // 3
        edited = text[:cut] + f"\n\nLet me re-check this once more (pass {k}).\n\n" + text[cut:]
        rows.append({"prompt_id": f"{t['item_id']}-{t['model_short_name']}", "sample_index": k,
                     "request_id": f"{t['item_id']}-{t['model_short_name']}:{k}",
                     "problem": t["problem"], "reference": str(t["ground_truth"]), "text": edited,
                     "reasoning": None, "prompt_tokens": 100,
                     "completion_tokens": int(t["total_generated_tokens"]),
                     "finish_reason": "length" if int(t["total_generated_tokens"]) >= 32768 else "stop",
                     "error": None})
    return pd.DataFrame(rows)


def run_parts(traces: pd.DataFrame, cfg) -> pd.Series:
    """The curate parts one after another in this process (verify in-process, one worker)."""
    from distill.data.curate import curate

    serial = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"workers": 1})}, deep=True)
    return curate(traces, serial)["reject_reason"]


def run_stage(traces: pd.DataFrame, recipe, root: Path) -> pd.DataFrame:
    from distill.pipeline import accounting
    from distill.pipeline.stage import StageContext
    from distill.pipeline.store import RunStore, StageOutput
    from distill.workflows.stages.curate import CurateStage

    gen_dir = root / "generate-bench"
    accounting.split_and_write(traces, gen_dir, len(traces))
    out_dir = root / "curate-bench"
    ctx = StageContext(recipe, RunStore(root), out_dir, {"generate": StageOutput("generate", gen_dir)},
                       lambda *a: None)
    CurateStage().run(ctx)   # on Ray: the workers write data/ and rejected/
    out = StageOutput("curate", out_dir)
    return pd.concat([out.to_pandas(), out.to_pandas(rejected=True)], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="200 rows, for a smoke check")
    args = ap.parse_args()
    n = 200 if args.quick else args.rows

    from distill.data.curate import CurateConfig
    from distill.workflows.recipe import load_recipe

    # The fixture traces answer MATH-500 problems, so decontamination against MATH-500 would flag
    # them all and spare the later rules; check them against the other bundled benchmarks.
    cfg = CurateConfig()
    cfg.decontam.benchmarks = ["aime24", "amc23", "gsm8k_test"]
    recipe = load_recipe(REPO / "workflows" / "recipes" / "smoke.yaml").model_copy(update={"curate": cfg})
    traces = realistic_traces(n)
    chars = traces["text"].str.len().mean()
    print(f"{n} traces, mean {chars:,.0f} characters, mean {traces['completion_tokens'].mean():,.0f} tokens")

    t0 = time.perf_counter()
    base = run_parts(traces, recipe.curate)
    t_parts = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        staged = run_stage(traces, recipe, Path(tmp))
        t_stage = time.perf_counter() - t0
    same = (staged.set_index("request_id")["reject_reason"].fillna("keep")
            == pd.Series(base.to_numpy(), index=traces["request_id"]).fillna("keep")).all()
    print(f"reasons: {base.fillna('kept').value_counts().to_dict()}")
    print(f"same verdicts stage vs parts: {bool(same)}")
    print(f"parts one by one (one process): {n / t_parts:8.1f} rows/s ({t_parts:.1f} s)")
    print(f"curate stage (Parquet in/out, on Ray): {n / t_stage:8.1f} rows/s ({t_stage:.1f} s)")
    print(f"ratio stage/parts: {t_parts / t_stage:.2f}")


if __name__ == "__main__":
    main()
