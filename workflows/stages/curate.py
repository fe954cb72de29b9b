"""curate: parse, verify, filter, decontaminate, dedupe and select the teacher's traces."""
from __future__ import annotations

from distill.pipeline.errors import RecipeError
from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


class CurateStage:
    name = "curate"
    version = "3"  # 3: parse_timeout (a per-row parse budget)
    needs = ("generate",)
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        judged = recipe.curate.judge_teacher is not None
        return {"curate": recipe.curate, "seed": recipe.seed if judged else None}

    def run(self, ctx: StageContext) -> StageResult:
        from distill.data.curate import curate

        cfg = ctx.recipe.curate
        judge = None
        if cfg.verify.method == "judge" or cfg.verify.judge.enabled:
            from distill.teachers.judge import teacher_judge

            if cfg.judge_teacher is None:
                raise RecipeError("curate.verify: the judge is on but curate.judge_teacher is not set",
                                  fix="add curate.judge_teacher (backend, model, endpoint) or turn the judge off")
            judge = teacher_judge(cfg.judge_teacher, ctx.recipe.seed)
        traces = ctx.inputs["generate"].to_pandas()
        ctx.progress("traces", 0, len(traces))
        timings: dict[str, float] = {}
        rows = curate(traces, cfg, judge=judge, timings=timings)
        ctx.progress("traces", len(rows), len(rows))
        kept = rows[rows["keep"]]
        extra = {"seconds_by_rule": {k: round(v, 3) for k, v in timings.items()},
                 "prompts_with_kept_trace": int(kept["prompt_id"].nunique()),
                 "teacher_pass_rate": float(rows["correct"].fillna(False).astype(bool).mean()) if len(rows) else 0.0}
        return StageResult(rows=rows, rows_in=len(traces), extra=extra)
