"""curate: parse, verify, filter, decontaminate, dedupe and select the teacher's traces."""
from __future__ import annotations

from pipeline.recipe import Recipe
from pipeline.stage import StageContext, StageResult


class CurateStage:
    name = "curate"
    version = "1"
    needs = ("generate",)
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        cfg = recipe.curate.model_dump()
        cfg["verify"].pop("workers", None)  # parallelism does not change results
        cfg["verify"].get("code", {}).pop("workers", None)
        return cfg

    def run(self, ctx: StageContext) -> StageResult:
        from data.curate import curate

        traces = ctx.inputs["generate"].to_pandas()
        ctx.progress("traces", 0, len(traces))
        timings: dict[str, float] = {}
        rows = curate(traces, ctx.recipe.curate, timings=timings)
        ctx.progress("traces", len(rows), len(rows))
        kept = rows[rows["keep"]]
        extra = {"seconds_by_rule": {k: round(v, 3) for k, v in timings.items()},
                 "prompts_with_kept_trace": int(kept["prompt_id"].nunique()),
                 "teacher_pass_rate": float(rows["correct"].fillna(False).astype(bool).mean()) if len(rows) else 0.0}
        return StageResult(rows=rows, rows_in=len(traces), extra=extra)
