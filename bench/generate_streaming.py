"""When do the teacher's results reach disk? Seconds to each result block and the throughput, by
how many batches one engine works on at once (EngineSpec.max_concurrent_batches).

    python bench/generate_streaming.py [--requests 256] [--batch 64] [--concurrent 8 2]

The quickstart's teacher (SmolLM2-135M-Instruct on vLLM, its template, worked examples and
sampling) on the quickstart's prompts; each setting in a fresh process (its own Ray and engine),
one after the other. Prints, per setting: seconds from the start of generation to the first and
to each following block of results, the total, and output tokens per second over the whole run
(engine start included, the same for every setting).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "workflows" / "recipes" / "quickstart.yaml"


def one(requests: int, batch: int, concurrent: int) -> dict:
    """Generate `requests` samples with `concurrent` batches of `batch` rows in the engine."""
    import pandas as pd

    from distill.data.prompts import load_prompts
    from distill.engines.models import resolve_model
    from distill.engines.vllm import EngineSpec, VLLMGenerator, render_prompts
    from distill.pipeline.cluster import ensure_ray
    from distill.workflows.recipe import load_recipe
    from distill.workflows.stages.generate import build_requests

    recipe = load_recipe(RECIPE)
    t = recipe.teacher
    prompts = load_prompts(recipe.prompts, RECIPE.parent).head(-(-requests // t.sampling.n))
    reqs = build_requests(prompts, recipe).head(requests)
    model = resolve_model(t.model)
    ensure_ray(None, None)
    frame = pd.DataFrame({"request_id": reqs["request_id"],
                          "prompt": render_prompts(model, list(reqs["messages"]))})
    spec = EngineSpec(model=model, sampling=t.sampling, seed=0, engine=t.engine, batch_size=batch,
                      max_concurrent_batches=concurrent)
    started, arrivals, tokens = time.monotonic(), [], 0
    for out in VLLMGenerator(spec).generate(frame, block_rows=batch):
        arrivals.append((round(time.monotonic() - started, 1), len(out)))
        tokens += int(out["completion_tokens"].sum())
    total = time.monotonic() - started
    return {"concurrent": concurrent, "batch": batch, "requests": requests,
            "seconds": round(total, 1),
            "first_block_s": arrivals[0][0] if arrivals else None, "blocks": arrivals,
            "tokens": tokens, "tok_per_s": round(tokens / total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concurrent", type=int, nargs="+", default=[8, 2])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one(args.requests, args.batch, args.one)), flush=True)
        return
    for c in args.concurrent:
        proc = subprocess.run([sys.executable, __file__, "--requests", str(args.requests),
                               "--batch", str(args.batch), "--one", str(c)],
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"concurrent {c}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(line[7:])
        print(f"concurrent batches {c} x {r['batch']} rows: first results after "
              f"{r['first_block_s']} s, "
              f"all {r['requests']} after {r['seconds']} s; {r['tokens']:,} tokens, "
              f"{r['tok_per_s']} tok/s (engine start included)")
        print(f"  blocks (seconds, rows): {r['blocks']}", flush=True)


if __name__ == "__main__":
    main()
