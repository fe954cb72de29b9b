"""`distill plan RECIPE.yaml`: what a run will cost before it runs.

    distill plan workflows/recipes/quickstart.yaml [--run-dir DIR] [--set plan.gpu_hour_price=2.5]

A calibration run sends the first `plan.calibration_prompts` prompts through the recipe's real
stages up to curation (prompts, [select_prompts,] generate, curate: the real teacher, the real
rules) in `RUN_DIR/plan/calibration/`, a run of its own; the full prompt set goes through the
prompts stage alone (`RUN_DIR/plan/prompts/`). From them the plan measures tokens per request
and per sample, the teacher's output tokens/s (the slope between its first and last finished
batch, so the engine start is counted once, apart), the kept rows per prompt and the bytes per
row on disk, then scales by the full prompt count. What it cannot measure without training or
evaluating it takes from the recipe's `plan:` section or a stated default, and says so: every
figure carries its source (measured, given, assumed). `make_plan` is the arithmetic alone.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from distill.pipeline.errors import DistillError
from distill.workflows.plan_table import (  # noqa: F401
    HEADER,
    make_plan,
    markdown,
    stats_lines,
    table_rows,
    write_plan,
)

DEFAULT_ENGINE_START_S = 60.0


def fig(value: Any, source: str, note: str = "") -> dict:
    """One figure of the plan with where it came from: measured, given or assumed."""
    return {"value": value, "source": source, "note": note}


# --- calibration: the real stages on a few prompts ------------------------------------------

class _Timed:
    """A stage whose progress calls are recorded as (seconds since start, done, tokens)."""

    def __init__(self, stage: Any, events: list):
        self._stage, self.events = stage, events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)

    def run(self, ctx):
        start, inner = time.monotonic(), ctx.progress

        def progress(desc, done, total=None, **kw):
            self.events.append([round(time.monotonic() - start, 3), int(done), kw.get("tokens")])
            return inner(desc, done, total, **kw)

        ctx.progress = progress
        return self._stage.run(ctx)


def calibration_size(recipe) -> int:
    """plan.calibration_prompts, else enough prompts for two waves of engine batches (16 to 256)."""
    if recipe.plan.calibration_prompts:
        return recipe.plan.calibration_prompts
    t = recipe.teacher
    batches = 2 * max(2, concurrent_batches(recipe))
    return max(16, min(256, math.ceil(batches * t.batch_size / max(1, t.sampling.n))))


def _limited(recipe, n: int):
    """The recipe with its first n prompts (several `sources`: n split evenly among them)."""
    p = recipe.prompts
    sources = getattr(p, "sources", None)
    if sources:
        each = max(1, math.ceil(n / len(sources)))
        cut = [s.model_copy(update={"limit": min(each, s.limit or each)}) for s in sources]
        return recipe.model_copy(update={"prompts": p.model_copy(update={"sources": cut})}, deep=True)
    limit = min(n, p.limit or n)
    return recipe.model_copy(update={"prompts": p.model_copy(update={"limit": limit})}, deep=True)


def _run(stages: list, recipe, root: Path, recipe_path: Path | None, console) -> Any:
    from distill.pipeline.runner import run_stages
    from distill.pipeline.store import RunStore
    from distill.workflows.fingerprints import resolvers

    store = RunStore(root)
    base = recipe_path.parent if recipe_path else None
    run_stages(stages, recipe, store, console=console, recipe_path=recipe_path,
               resolvers=resolvers(base))
    return store


def count_prompts(recipe, plan_dir: Path, recipe_path: Path | None, console) -> dict:
    """The full prompt set through the real prompts stage: prompts kept, rejected, seconds."""
    from distill.workflows.distill import STAGES

    stages = [s for s in STAGES if s.name == "prompts"]
    m = _run(stages, recipe, plan_dir / "prompts", recipe_path, console).stage("prompts").manifest
    return {"kept": m["kept"], "rejected": m["rejected"], "seconds": m["seconds"]}


def calibrate(recipe, plan_dir: Path, recipe_path: Path | None, console) -> dict:
    """Run the stages before train on a `limit`ed copy of the recipe; return what they measured."""
    from distill.workflows.distill import STAGES

    n = calibration_size(recipe)
    small = _limited(recipe, n)
    names = [s.name for s in STAGES]
    events: list = []
    stages = [_Timed(s, events) if s.name == "generate" else s
              for s in STAGES[:names.index("train")]]
    root = plan_dir / "calibration"
    store = _run(stages, small, root, recipe_path, console)
    gen = store.stage("generate")
    timing_file = root / "timing.json"
    if events and gen.manifest.get("generated_rows", 1) > 0:
        timing = {"generate_key": gen.manifest["key"], "events": events,
                  "seconds": gen.manifest["seconds"]}
        timing_file.write_text(json.dumps(timing))
    elif timing_file.exists() and json.loads(timing_file.read_text())["generate_key"] == gen.manifest["key"]:
        timing = json.loads(timing_file.read_text())
    elif (timing := shard_timing(store, gen.manifest)) is not None:
        timing_file.write_text(json.dumps(timing))
    else:
        raise DistillError(f"the calibration's answers came from the trace cache in {root}, so "
                           "the teacher's speed was not measured",
                           fix=f"remove {root} and run `distill plan` again")
    return measure(store, timing, recipe)


def shard_timing(store, manifest: dict) -> dict | None:
    """generate's progress events rebuilt from its trace-cache shards (written as batches
    finished: their write times, rows and tokens) when this process did not see them (a plan
    stopped after generate, or answers from the cache): from the manifest of the generate run
    here that asked the teacher for every row; None when there is none."""
    from datetime import datetime

    import pandas as pd

    if manifest.get("generated_rows") != manifest.get("rows_in"):  # answered from the cache:
        made = [m for m in (json.loads(f.read_text()) for f in store.root.glob("generate-*/manifest.json"))
                if m.get("trace_cache") == manifest.get("trace_cache")
                and m.get("generated_rows") == m.get("rows_in") == manifest.get("rows_in")]
        if not made:      # the timing of the stage run that asked the teacher, if one is here
            return None
        manifest = max(made, key=lambda m: m["finished_at"])
    folder = store.root / manifest.get("trace_cache", "") / "shards"
    if not folder.is_dir():
        return None
    start = datetime.fromisoformat(manifest["finished_at"]).timestamp() - manifest["seconds"]
    shards = sorted(folder.glob("*.parquet"), key=lambda f: f.stat().st_mtime)
    events, done, tokens = [[0.0, 0, 0]], 0, 0
    for f in shards:
        frame = pd.read_parquet(f, columns=["completion_tokens"])
        done, tokens = done + len(frame), tokens + int(frame["completion_tokens"].sum())
        events.append([round(f.stat().st_mtime - start, 3), done, tokens])
    if done != manifest["rows_in"]:
        return None
    return {"generate_key": manifest["key"], "events": events, "seconds": manifest["seconds"],
            "from": "trace-cache shard write times"}


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def concurrent_batches(recipe) -> int:
    """Batches the teacher works on at once (teacher.max_concurrent_batches; vLLM's default is
    2 on CPU, 8 on GPU); an HTTP teacher's batches come back one by one."""
    from distill.engines.vllm import resolved_device

    t = recipe.teacher
    if t.backend != "vllm":
        return 1
    return t.max_concurrent_batches or (2 if resolved_device(t.device) == "cpu" else 8)


def teacher_rate(events: list, seconds: float, concurrent: int = 1) -> tuple[float | None, float, str]:
    """(output tokens/s, engine start s, how) from generate's progress events [(t, done, tokens)].

    An engine works on `concurrent` batches at once, so they finish in waves; the rate is the
    tokens finished after the first wave over the time after it (a slope from the first finished
    batch would count the first wave's partners as made in no time), and the engine start is
    what is left of the first wave's time. With one wave: tokens / seconds, start included."""
    done = [(t, d, k) for t, d, k in events if d > 0 and k is not None]
    c = max(1, concurrent)
    if len(done) > c and done[-1][0] - done[c - 1][0] > 1e-3 and done[-1][2] > done[c - 1][2]:
        (t0, _, k0), (t1, _, k1) = done[c - 1], done[-1]
        rate = (k1 - k0) / (t1 - t0)
        start = max(0.0, t0 - k0 / rate)
        return rate, start, (f"tokens after the first wave of {c} batches over its time "
                             f"({len(done)} batches); engine start = the first wave's time less "
                             "its tokens at that rate")
    tokens = done[-1][2] if done else 0
    return (tokens / seconds if seconds and tokens else None), 0.0, (
        "one wave of batches: tokens / generate seconds, engine start included (a slow bound)")


def measure(store, timing: dict, recipe) -> dict:
    """The calibration run's figures (each with its source)."""
    import pandas as pd

    gen, cur, pro = (store.stage(n) for n in ("generate", "curate", "prompts"))
    g, c = gen.manifest, cur.manifest
    samples = g["rows_in"]
    prompts = pro.manifest["kept"]
    rate, start, how = teacher_rate(timing["events"], timing["seconds"], concurrent_batches(recipe))
    kept = cur.to_pandas()
    per_prompt = kept.groupby("prompt_id").size() if len(kept) else pd.Series(dtype=float)
    counts = [int(per_prompt.get(p, 0)) for p in pro.to_pandas()["prompt_id"]]
    mean = sum(counts) / max(1, len(counts))
    sd = (sum((x - mean) ** 2 for x in counts) / max(1, len(counts) - 1)) ** 0.5
    cache = store.root / g.get("trace_cache", "cache")
    sel = store.stage("select_prompts").manifest if "select_prompts" in store.stage_names() else {}
    selected = (fig(sel["kept"] / max(1, sel["rows_in"]), "measured",
                    f"select_prompts kept {sel['kept']} of {sel['rows_in']} calibration prompts")
                if sel.get("enabled") else fig(1.0, "measured", "select_prompts off"))
    out = {
        "calibration": {"prompts": prompts, "samples": samples, "run_dir": str(store.root),
                        "generate_seconds": timing["seconds"], "curate_seconds": c["seconds"],
                        "kept": c["kept"], "rejected": c["rejected"]},
        "selected_share": selected,
        "select_s_per_prompt": fig(sel.get("seconds", 0.0) / max(1, prompts), "measured",
                                   "select_prompts seconds per prompt, engine start included"),
        "prompt_tokens": fig(g["prompt_tokens"] / max(1, samples), "measured", "per request"),
        "completion_tokens": fig(g["completion_tokens"] / max(1, samples), "measured", "per sample"),
        "length_share": fig(g.get("finish_reasons", {}).get("length", 0) / max(1, samples),
                            "measured", "samples cut at max_tokens"),
        "teacher_tokens_per_s": fig(rate, "measured", how + " (one replica, this machine)"),
        "engine_start_s": fig(start, "measured", "from the first finished batch"),
        "kept_per_prompt": fig(mean, "measured", f"sd {sd:.3f} over {len(counts)} prompts"),
        "kept_per_prompt_se": sd / max(1, len(counts)) ** 0.5,
        "curate_s_per_sample": fig(c["seconds"] / max(1, samples), "measured",
                                   "includes curate's fixed start (Ray tasks): high for big runs"),
        "generate_bytes_per_sample": fig((_folder_bytes(gen.path) + _folder_bytes(cache))
                                         / max(1, samples), "measured", "stage Parquet + trace cache"),
        "curate_bytes_per_sample": fig(_folder_bytes(cur.path) / max(1, samples), "measured"),
        "train_tokens_per_row": train_tokens_per_row(kept, recipe),
    }
    return out


def train_tokens_per_row(kept, recipe) -> dict:
    """Mean tokens of a kept row as the student's trainer sees it (its tokenizer and chat format)."""
    if not len(kept):
        return fig(None, "measured", "no row kept in the calibration")
    from transformers import AutoTokenizer

    from distill.engines.models import resolve_model
    from distill.students.chat import build_examples
    from distill.workflows.stages.train import sft_rows

    rows = sft_rows(kept, recipe)
    tok = AutoTokenizer.from_pretrained(resolve_model(recipe.train.student))
    ex = build_examples(tok, rows["prompt"].tolist(), rows["reasoning"].tolist(),
                        rows["answer_text"].tolist(), think_format=recipe.train.think_format,
                        max_length=10**9)
    return fig(sum(len(e["input_ids"]) for e in ex) / len(ex), "measured",
               "student tokenizer and chat format, kept calibration rows")


def given_stats(recipe) -> dict | None:
    """The plan's figures from `plan.given` when it names all four (no calibration run)."""
    g = recipe.plan.given
    need = (g.prompt_tokens, g.completion_tokens, g.teacher_tokens_per_s, g.kept_per_prompt)
    if any(v is None for v in need):
        return None
    return {"calibration": None,
            "selected_share": fig(1.0, "assumed", "select_prompts keeps every prompt"),
            "select_s_per_prompt": fig(0.0, "assumed", "not measured"),
            "prompt_tokens": fig(g.prompt_tokens, "given"),
            "completion_tokens": fig(g.completion_tokens, "given"),
            "length_share": fig(None, "given"),
            "teacher_tokens_per_s": fig(g.teacher_tokens_per_s, "given"),
            "engine_start_s": fig(g.engine_start_s if g.engine_start_s is not None
                                  else DEFAULT_ENGINE_START_S,
                                  "given" if g.engine_start_s is not None else "assumed"),
            "kept_per_prompt": fig(g.kept_per_prompt, "given"), "kept_per_prompt_se": 0.0,
            "curate_s_per_sample": fig(0.01, "assumed", "100 samples/s per CPU"),
            "generate_bytes_per_sample": fig(4.5 * g.completion_tokens + 2000, "assumed",
                                             "4.5 bytes per token + 2 KB per row"),
            "curate_bytes_per_sample": fig(4.5 * g.completion_tokens + 2000, "assumed"),
            "train_tokens_per_row": fig(g.prompt_tokens + g.completion_tokens, "assumed",
                                        "prompt + completion tokens")}


def plan_run(recipe, recipe_path: Path | None, run_dir: Path, console) -> dict:
    """Calibrate (unless plan.given says it all), count the prompts, make and write the plan."""
    plan_dir = run_dir / "plan"
    base = recipe_path.parent if recipe_path else None
    counted = count_prompts(recipe, plan_dir, recipe_path, console)
    stats = given_stats(recipe) or calibrate(recipe, plan_dir, recipe_path, console)
    plan = make_plan(recipe, stats, counted["kept"], base_dir=base,
                     prompts_seconds=counted["seconds"])
    plan["files"] = [str(p) for p in write_plan(plan, plan_dir)]
    return plan
