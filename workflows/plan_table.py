"""The plan's arithmetic and its table: `make_plan(recipe, stats, prompts) -> plan`.

`stats` are the figures workflows.plan measured (calibrate) or was given (given_stats), each
{"value", "source", "note"}; the plan scales them to `prompts` prompts, stage by stage: wall
seconds, GPUs, GPU-hours, money (GPU-hours x plan.gpu_hour_price + the teacher's token prices),
disk, with the source of each row's figures in words. `table_rows` / `markdown` render it.
"""
from __future__ import annotations

from pathlib import Path

GB = 1e9
CPU_TRAIN_TOKENS_S, GPU_TRAIN_TOKENS_S = 200.0, 3000.0   # assumed defaults (plan_config)
PUBLISH_BYTES_S = 100e6   # assumed local copy speed of the published folders


# --- the plan: figures scaled to the full prompt set -----------------------------------------

def _gpus_per_engine(engine: dict) -> int:
    return int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))


def _on_gpu(device: str, planned: str = "auto") -> bool:
    """Whether the priced hardware has GPUs: plan.device, else the engine's device here."""
    from distill.pipeline.cluster import vllm_is_cpu_build

    if planned != "auto":
        return planned == "cuda"
    return device == "cuda" or (device == "auto" and not vllm_is_cpu_build())


def weights_bytes(model: str) -> int | None:
    """Bytes of the model's weight files (safetensors / bin), measured on disk; None when the
    model is not on this machine (a hub id not downloaded yet)."""
    from distill.engines.models import resolve_model

    try:
        folder = Path(resolve_model(model))
    except Exception:  # noqa: BLE001 - not here: the plan says so instead of guessing
        return None
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
    selected = prompts * v.get("selected_share", 1.0) if recipe.select_prompts else prompts
    samples = round(selected * t.sampling.n)
    completion = samples * v["completion_tokens"]
    prompt_tok = samples * v["prompt_tokens"]
    start = v["engine_start_s"] or 0.0
    rows: dict[str, dict] = {}

    rows["prompts"] = _row("prompts", "on", f"{prompts:,} prompts", prompts_seconds, 0, price,
                           sources="measured (the full set through the prompts stage)")

    sp = recipe.select_prompts
    rows["select_prompts"] = _row(
        "select_prompts", "on" if sp else "off",
        f"{prompts * sp.samples:,} reference answers -> {selected:,.0f} prompts kept" if sp else "",
        prompts * v.get("select_s_per_prompt", 0.0) if sp else 0.0,
        _gpus_per_engine(sp.engine) * sp.concurrency if sp and _on_gpu(t.device, p.device) else 0, price,
        sources=(f"kept share {stats['selected_share']['source']}; seconds per prompt measured "
                 "(engine start included)") if sp else "")

    gen_gpus = _gpus_per_engine(t.engine) * t.concurrency if t.backend == "vllm" and _on_gpu(t.device, p.device) else 0
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

    train_gpu = tr.use_gpu if tr.use_gpu is not None else _on_gpu(t.device, p.device)
    tps = p.train_tokens_per_s_per_gpu or (GPU_TRAIN_TOKENS_S if train_gpu else CPU_TRAIN_TOKENS_S)
    per_row = v["train_tokens_per_row"] or (v["prompt_tokens"] + v["completion_tokens"])
    train_tokens = kept * per_row * tr.epochs
    if tr.max_steps:
        train_tokens = min(train_tokens, tr.max_steps * tr.per_device_batch_tokens
                           * tr.num_workers * tr.gradient_accumulation_steps)
    train_s = train_tokens / (tps * tr.num_workers)   # model loading not included
    found = weights_bytes(tr.student)
    weights = found or 0
    weights_note = "weights measured" if found else "weights not on this machine (counted 0)"
    ckpt = weights * (3 if tr.method == "full" else 0.05) * tr.save_total_limit
    rows["train"] = _row("train", "on", f"{train_tokens:,.0f} tokens ({tr.epochs:g} epochs x "
                         f"{per_row:,.0f} tokens/row)", train_s,
                         tr.num_workers if train_gpu else 0, price, 0.0, weights + ckpt,
                         f"tokens/row {stats['train_tokens_per_row']['source']}; "
                         f"{tps:,.0f} tokens/s per worker (model loading not included) "
                         f"{'stated (plan.train_tokens_per_s_per_gpu)' if p.train_tokens_per_s_per_gpu else 'assumed'}; "
                         f"{weights_note}, checkpoints assumed (full: 3x weights, LoRA: 5%)")

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
        _gpus_per_engine(ev.engine) * ev.concurrency if _on_gpu(t.device, p.device) else 0, price, 0.0,
        answers * v["generate_bytes_per_sample"] * ev_tokens_each / max(1, v["completion_tokens"]),
        "assumed: answers as long as the teacher's (capped at evaluate max_tokens), at "
        + ("plan.eval_tokens_per_s" if p.eval_tokens_per_s else "the teacher's rate")
        + ", one engine start per model")

    pub = recipe.publish.enabled
    rows["publish"] = _row("publish", "on" if pub else "off", "merged student + SFT set",
                           (weights / PUBLISH_BYTES_S) if pub else 0.0, 0, price, 0.0,
                           (weights + kept / max(1, samples) * samples
                            * v["curate_bytes_per_sample"]) if pub else 0.0,
                           f"{weights_note}; copy at 100 MB/s assumed; upload not included")

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
    summary = (f"{plan['prompts']:,} prompts, {plan['samples']:,} teacher samples, about "
             f"{plan['kept_rows']:,.0f} kept rows (95% interval {plan['kept_rows_ci95'][0]:,.0f}-"
             f"{plan['kept_rows_ci95'][1]:,.0f}); GPU-hour price {plan['gpu_hour_price']:g}.")
    lines = [f"# Plan: {plan['recipe']}", "", summary, "",
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


