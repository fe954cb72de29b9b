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

GB = 1e9
CPU_TRAIN_TOKENS_S, GPU_TRAIN_TOKENS_S = 200.0, 3000.0   # assumed defaults (plan_config)
DEFAULT_ENGINE_START_S = 60.0
PUBLISH_BYTES_S = 100e6   # assumed local copy speed of the published folders


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
    """plan.calibration_prompts, else enough prompts for four engine batches (16 to 256)."""
    if recipe.plan.calibration_prompts:
        return recipe.plan.calibration_prompts
    t = recipe.teacher
    return max(16, min(256, math.ceil(4 * t.batch_size / max(1, t.sampling.n))))


def _limited(recipe, n: int):
    limit = min(n, recipe.prompts.limit or n)
    return recipe.model_copy(update={"prompts": recipe.prompts.model_copy(update={"limit": limit})},
                             deep=True)


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
    else:
        raise DistillError(f"the calibration's answers came from the trace cache in {root}, so "
                           "the teacher's speed was not measured",
                           fix=f"remove {root} and run `distill plan` again")
    return measure(store, timing, recipe)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def teacher_rate(events: list, samples: int, seconds: float) -> tuple[float | None, float, str]:
    """(output tokens/s, engine start s, how) from generate's progress events [(t, done, tokens)]:
    the slope between the first and the last batch that finished; the start is what is left of
    the time before the first batch."""
    done = [(t, d, k) for t, d, k in events if d > 0 and k is not None]
    if len(done) >= 2 and done[-1][0] - done[0][0] > 1e-3 and done[-1][2] > done[0][2]:
        (t0, _, k0), (t1, _, k1) = done[0], done[-1]
        rate = (k1 - k0) / (t1 - t0)
        start = max(0.0, t0 - k0 / rate)
        return rate, start, (f"slope between the first and last of {len(done)} finished batches; "
                             f"engine start = time before the first batch less its tokens/rate")
    tokens = done[-1][2] if done else 0
    return (tokens / seconds if seconds and tokens else None), 0.0, (
        "one batch finished: tokens / generate seconds, engine start included (a slow bound)")


def measure(store, timing: dict, recipe) -> dict:
    """The calibration run's figures (each with its source)."""
    import pandas as pd

    gen, cur, pro = (store.stage(n) for n in ("generate", "curate", "prompts"))
    g, c = gen.manifest, cur.manifest
    samples = g["rows_in"]
    prompts = pro.manifest["kept"]
    rate, start, how = teacher_rate(timing["events"], samples, timing["seconds"])
    kept = cur.to_pandas()
    per_prompt = kept.groupby("prompt_id").size() if len(kept) else pd.Series(dtype=float)
    counts = [int(per_prompt.get(p, 0)) for p in pro.to_pandas()["prompt_id"]]
    mean = sum(counts) / max(1, len(counts))
    sd = (sum((x - mean) ** 2 for x in counts) / max(1, len(counts) - 1)) ** 0.5
    cache = store.root / g.get("trace_cache", "cache")
    out = {
        "calibration": {"prompts": prompts, "samples": samples, "run_dir": str(store.root),
                        "generate_seconds": timing["seconds"], "curate_seconds": c["seconds"],
                        "kept": c["kept"], "rejected": c["rejected"]},
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


# --- the plan: figures scaled to the full prompt set -----------------------------------------

def _gpus_per_engine(engine: dict) -> int:
    return int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))


def _on_gpu(device: str) -> bool:
    from distill.pipeline.cluster import vllm_is_cpu_build

    return device == "cuda" or (device == "auto" and not vllm_is_cpu_build())


def weights_bytes(model: str) -> int:
    """Bytes of the model's weight files (safetensors / bin), measured on disk."""
    from distill.engines.models import resolve_model

    folder = Path(resolve_model(model))
    return sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".gguf"))


def eval_samples(recipe, base_dir: Path | None) -> int:
    """Answers one evaluated model writes (questions x samples over the benchmarks)."""
    from distill.evaluation.evaluate import benchmark_requests

    cfg = recipe.evaluate
    if not cfg.enabled or not cfg.benchmarks:
        return 0
    return len(benchmark_requests(cfg, base_dir))


def _row(stage: str, state: str, work: str, seconds: float | None, gpus: float, price: float,
         tokens_cost: float = 0.0, disk: float = 0.0, sources: str = "") -> dict:
    hours = None if seconds is None else seconds / 3600
    gpu_h = None if hours is None else hours * gpus
    cost = (0.0 if gpu_h is None else gpu_h * price) + tokens_cost
    return {"stage": stage, "state": state, "work": work, "seconds": seconds, "gpus": gpus,
            "gpu_hours": gpu_h, "cost": cost, "disk_gb": disk / GB, "sources": sources}


def make_plan(recipe, stats: dict, prompts: int, *, base_dir: Path | None = None,
              prompts_seconds: float = 0.0, stage_names: list[str] | None = None) -> dict:
    """The plan's table for `prompts` prompts from `stats` (calibrate / given_stats): one row per
    stage of the workflow (work, wall seconds, GPUs, GPU-hours, money, disk) and the totals."""
    from distill.workflows.distill import STAGES

    v = {k: (s["value"] if isinstance(s, dict) and "value" in s else s) for k, s in stats.items()}
    t, tr, p = recipe.teacher, recipe.train, recipe.plan
    price = p.gpu_hour_price
    samples = prompts * t.sampling.n
    completion = samples * v["completion_tokens"]
    prompt_tok = samples * v["prompt_tokens"]
    start = v["engine_start_s"] or 0.0
    rows: dict[str, dict] = {}

    rows["prompts"] = _row("prompts", "on", f"{prompts:,} prompts", prompts_seconds, 0, price,
                           sources="measured (the full set through the prompts stage)")

    gen_gpus = _gpus_per_engine(t.engine) * t.concurrency if t.backend == "vllm" and _on_gpu(t.device) else 0
    token_cost = (prompt_tok * t.cost_per_million_input + completion * t.cost_per_million_output) / 1e6
    rate = v["teacher_tokens_per_s"]
    replicas = t.concurrency if t.backend == "vllm" else 1
    gen_s = None if not rate else start + completion / (rate * replicas)
    rows["generate"] = _row(
        "generate", "on", f"{samples:,} samples, {completion:,.0f} output + {prompt_tok:,.0f} "
        f"prompt tokens", gen_s, gen_gpus, price, token_cost,
        samples * v["generate_bytes_per_sample"],
        f"tokens/sample {stats['completion_tokens']['source']}; rate "
        f"{stats['teacher_tokens_per_s']['source']} x {replicas} replica(s) (assumed linear); "
        f"token prices from teacher.cost_per_million_*")

    kept = prompts * v["kept_per_prompt"]
    half = 1.96 * prompts * stats.get("kept_per_prompt_se", 0.0)
    rows["curate"] = _row("curate", "on", f"{samples:,} traces -> {kept:,.0f} kept "
                          f"(95% interval {max(0, kept - half):,.0f}-{kept + half:,.0f})",
                          samples * v["curate_s_per_sample"], 0, price, 0.0,
                          samples * v["curate_bytes_per_sample"],
                          f"kept/prompt {stats['kept_per_prompt']['source']}; CPU only")

    train_gpu = tr.use_gpu if tr.use_gpu is not None else _on_gpu(t.device)
    tps = p.train_tokens_per_s_per_gpu or (GPU_TRAIN_TOKENS_S if train_gpu else CPU_TRAIN_TOKENS_S)
    per_row = v["train_tokens_per_row"] or (v["prompt_tokens"] + v["completion_tokens"])
    train_tokens = kept * per_row * tr.epochs
    if tr.max_steps:
        train_tokens = min(train_tokens, tr.max_steps * tr.per_device_batch_tokens
                           * tr.num_workers * tr.gradient_accumulation_steps)
    train_s = start + train_tokens / (tps * tr.num_workers)
    weights = weights_bytes(tr.student)
    ckpt = weights * (3 if tr.method == "full" else 0.05) * tr.save_total_limit
    rows["train"] = _row("train", "on", f"{train_tokens:,.0f} tokens ({tr.epochs:g} epochs x "
                         f"{per_row:,.0f} tokens/row)", train_s,
                         tr.num_workers if train_gpu else 0, price, 0.0, weights + ckpt,
                         f"tokens/row {stats['train_tokens_per_row']['source']}; "
                         f"{tps:,.0f} tokens/s per worker "
                         f"{'stated (plan.train_tokens_per_s_per_gpu)' if p.train_tokens_per_s_per_gpu else 'assumed'}; "
                         "weights measured, checkpoints assumed (full: 3x weights, LoRA: 5%)")

    if recipe.onpolicy is not None:
        rows["onpolicy"] = _row("onpolicy", "on", "not modelled", None, 0, price,
                                sources="on-policy rounds are not estimated by the plan")
    else:
        rows["onpolicy"] = _row("onpolicy", "off", "", 0.0, 0, price)

    ev = recipe.evaluate
    models = 1 + ev.compare_base + (recipe.onpolicy is not None and ev.compare_sft)
    answers = eval_samples(recipe, base_dir) * models
    ev_tokens_each = min(v["completion_tokens"], ev.sampling.max_tokens)
    ev_rate = p.eval_tokens_per_s or rate
    ev_s = 0.0 if not answers else (None if not ev_rate else
                                    models * start + answers * ev_tokens_each / (ev_rate * ev.concurrency))
    rows["evaluate"] = _row(
        "evaluate", "on" if answers else "off", f"{answers:,} answers ({models} models)", ev_s,
        _gpus_per_engine(ev.engine) * ev.concurrency if _on_gpu(t.device) else 0, price, 0.0,
        answers * v["generate_bytes_per_sample"] * ev_tokens_each / max(1, v["completion_tokens"]),
        "assumed: answers as long as the teacher's (capped at evaluate max_tokens), at "
        + ("plan.eval_tokens_per_s" if p.eval_tokens_per_s else "the teacher's measured rate")
        + ", one engine start per model")

    pub = recipe.publish.enabled
    rows["publish"] = _row("publish", "on" if pub else "off", "merged student + SFT set",
                           (weights / PUBLISH_BYTES_S) if pub else 0.0, 0, price, 0.0,
                           (weights + kept / max(1, samples) * samples
                            * v["curate_bytes_per_sample"]) if pub else 0.0,
                           "weights measured; copy at 100 MB/s assumed; upload not included")

    names = stage_names or [s.name for s in STAGES]
    for name in names:  # stages this module does not model yet still get a row
        rows.setdefault(name, _row(name, "on", "not modelled", None, 0, price))
    table = [rows[n] for n in names]
    known = [r for r in table if r["seconds"] is not None]
    total = {"seconds": sum(r["seconds"] for r in known),
             "gpu_hours": sum(r["gpu_hours"] or 0 for r in table),
             "cost": sum(r["cost"] for r in table), "disk_gb": sum(r["disk_gb"] for r in table),
             "unmodelled": [r["stage"] for r in table if r["seconds"] is None]}
    return {"recipe": recipe.name, "prompts": prompts, "samples": samples,
            "kept_rows": kept, "kept_rows_ci95": [max(0.0, kept - half), kept + half],
            "stats": stats, "stages": table, "total": total,
            "gpu_hour_price": price}


def _dur(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


HEADER = ("stage", "state", "work", "wall time", "GPUs", "GPU-hours", "cost", "disk GB", "from")


def table_rows(plan: dict) -> list[tuple[str, ...]]:
    """The plan's table as text cells (HEADER), the total last."""
    out = []
    for r in plan["stages"]:
        gh = "?" if r["gpu_hours"] is None else f"{r['gpu_hours']:.2f}"
        out.append((r["stage"], r["state"], r["work"], _dur(r["seconds"]), f"{r['gpus']:g}", gh,
                    f"{r['cost']:.2f}", f"{r['disk_gb']:.3f}", r["sources"]))
    t = plan["total"]
    left = f" (without {', '.join(t['unmodelled'])})" if t["unmodelled"] else ""
    out.append(("total", "", f"to the published student{left}", _dur(t["seconds"]), "",
                f"{t['gpu_hours']:.2f}", f"{t['cost']:.2f}", f"{t['disk_gb']:.3f}", ""))
    return out


def stats_lines(plan: dict) -> list[str]:
    """What the plan measured or was given, one line each."""
    lines = []
    cal = plan["stats"].get("calibration")
    if cal:
        lines.append(f"calibration: {cal['prompts']} prompts, {cal['samples']} samples through "
                     f"the real stages in {cal['run_dir']} (generate {cal['generate_seconds']:.0f} s, "
                     f"curate {cal['curate_seconds']:.0f} s, kept {cal['kept']})")
    for key, s in plan["stats"].items():
        if isinstance(s, dict) and "source" in s:
            val = "n/a" if s["value"] is None else f"{s['value']:,.3f}"
            lines.append(f"{key}: {val} ({s['source']}{'; ' + s['note'] if s['note'] else ''})")
    return lines


def markdown(plan: dict) -> str:
    cells = table_rows(plan)
    lines = [f"# Plan: {plan['recipe']}", "",
             f"{plan['prompts']:,} prompts, {plan['samples']:,} teacher samples, about "
             f"{plan['kept_rows']:,.0f} kept rows (95% interval {plan['kept_rows_ci95'][0]:,.0f}-"
             f"{plan['kept_rows_ci95'][1]:,.0f}); GPU-hour price {plan['gpu_hour_price']:g}.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    lines += ["", "## Figures behind it", ""] + [f"- {x}" for x in stats_lines(plan)]
    return "\n".join(lines) + "\n"


def write_plan(plan: dict, plan_dir: Path) -> tuple[Path, Path]:
    from distill.pipeline.store import write_atomic, write_json

    plan_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan_dir / "plan.json", plan)
    write_atomic(plan_dir / "plan.md", markdown(plan))
    return plan_dir / "plan.json", plan_dir / "plan.md"


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
