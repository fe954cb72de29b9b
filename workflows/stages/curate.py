"""curate: parse, verify, filter, decontaminate, dedupe and select the teacher's traces.

The rows stay on the Ray workers (data.curate_ray), on a laptop's local Ray as on a cluster:
they read generate's Parquet and write this stage's data/ and rejected/ parts; the driver
plans, counts and writes the manifest.
"""
from __future__ import annotations

from distill.pipeline.errors import RecipeError
from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


class CurateStage:
    name = "curate"
    version = "4"  # 4: on Ray Data, written in parts; text digest breaks order ties
    needs = ("generate",)
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        judged = recipe.curate.judge_teacher is not None
        return {"curate": recipe.curate, "seed": recipe.seed if judged else None}

    def run(self, ctx: StageContext) -> StageResult:
        from distill.data.curate_ray import curate_on_ray
        from distill.pipeline.cluster import ensure_ray

        cfg = ctx.recipe.curate
        judge = None
        if cfg.verify.method == "judge" or cfg.verify.judge.enabled:
            from distill.teachers.judge import teacher_judge

            if cfg.judge_teacher is None:
                raise RecipeError("curate.verify: the judge is on but curate.judge_teacher is not set",
                                  fix="add curate.judge_teacher (backend, model, endpoint) or turn the judge off")
            judge = teacher_judge(cfg.judge_teacher, ctx.recipe.seed)
        ensure_ray(ctx.recipe.ray.address, ctx.recipe.ray.num_cpus)
        counts, extra = curate_on_ray(ctx.inputs["generate"].path / "data", cfg, ctx.out_dir,
                                      judge=judge, progress=ctx.progress)
        return StageResult(rows=None, rows_in=counts["rows_in"], extra={**extra, "counts": counts},
                           already_written=True)
