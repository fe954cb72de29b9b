"""train: fine-tune the student on the curated traces (students.sft); resumes from checkpoints.

Rows longer than `train.max_length` are rejected here with their reason (or truncated, by the
recipe's rule), so the funnel counts them.
"""
from __future__ import annotations

import pandas as pd

from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


def sft_rows(curated: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """The SFT table: the user message exactly as the teacher saw it, the reasoning and answer."""
    from distill.teachers.templates import render_user_message

    rows = curated.copy()
    rows["row_id"] = rows["request_id"]
    rows["prompt"] = [render_user_message(recipe.teacher.template, p) for p in rows["problem"]]
    rows["reasoning"] = rows["reasoning"].fillna("")
    rows["answer_text"] = rows["answer_text"].fillna("")
    return rows


class TrainStage:
    name = "train"
    version = "1"
    needs = ("curate",)
    resumable = True  # Trainer checkpoints under checkpoints/ survive a crash

    def config(self, recipe: Recipe) -> dict:
        return {"train": recipe.train, "prompt_template": recipe.teacher.template}

    def run(self, ctx: StageContext) -> StageResult:
        from distill.engines.models import resolve_model
        from distill.students.sft import train_student

        recipe = ctx.recipe
        rows = sft_rows(ctx.inputs["curate"].to_pandas(), recipe)
        cfg = recipe.train.model_copy(update={"student": resolve_model(recipe.train.student)})

        last = {}

        def progress(log: dict) -> None:  # every step; the loss where it was logged
            last.update({k: log[k] for k in ("loss",) if k in log})
            ctx.progress("optimizer steps", int(log.get("step", 0)), log.get("max_steps"),
                         loss=last.get("loss"))

        result = train_student(rows, cfg, ctx.out_dir, progress=progress)
        reasons = rows["row_id"].map(dict(zip(result.rejected["row_id"], result.rejected["reject_reason"])))
        rows["reject_reason"] = reasons.where(reasons.notna(), None)
        rows["keep"] = rows["reject_reason"].isna()
        extra = {"model_dir": "model", "adapter_dir": "adapter" if result.adapter_dir else None,
                 "student_base": recipe.train.student, "method": cfg.method,
                 "metrics": {k: v for k, v in result.metrics.items()}}
        return StageResult(rows=rows, rows_in=len(rows), extra=extra)
