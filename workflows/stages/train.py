"""train: fine-tune the student on the curated traces (students.sft); resumes from checkpoints.

The rows stay on the Ray workers: the curated Parquet is read with Ray Data, each Ray Train
worker (or the one local process) reads its own part of it (students.sft_shard), and this
stage's data/ and rejected/ parts are written by Ray tasks; the driver holds the ids of the rows
training rejected. Rows longer than `train.max_length` are rejected here with their reason (or
truncated, by the recipe's rule), so the funnel counts them.
"""
from __future__ import annotations

import math

import pandas as pd

from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe

PART = "_train_part"
ROWS_PER_PART = 50_000


def sft_rows(curated: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """The SFT table: the user message exactly as the teacher saw it, the reasoning and answer."""
    return _sft_batch(curated, recipe.teacher.template)


def _sft_batch(curated: pd.DataFrame, template) -> pd.DataFrame:
    from distill.teachers.templates import render_user_message

    rows = curated.copy()
    rows["row_id"] = rows["request_id"]
    rows["prompt"] = [render_user_message(template, p) for p in rows["problem"]]
    rows["reasoning"] = rows["reasoning"].fillna("")
    rows["answer_text"] = rows["answer_text"].fillna("")
    return rows


def _flag(rows: pd.DataFrame, rejected, parts: int) -> pd.DataFrame:
    """keep / reject_reason from training's rejected ids, and the part each row is written in."""
    import numpy as np
    import ray
    import xxhash

    reasons = ray.get(rejected) if isinstance(rejected, ray.ObjectRef) else rejected
    rows = rows.copy()
    rows["reject_reason"] = pd.Series([reasons.get(r) for r in rows["row_id"]], index=rows.index,
                                      dtype=object)
    rows["keep"] = rows["reject_reason"].isna()
    rows[PART] = np.array([xxhash.xxh3_64_intdigest(str(r).encode()) % parts
                           for r in rows["row_id"]], dtype=np.int64)
    return rows


class TrainStage:
    name = "train"
    version = "2"  # 2: rows read and written on the Ray workers, parts by row_id
    needs = ("curate",)
    resumable = True  # Trainer checkpoints under checkpoints/ survive a crash

    def config(self, recipe: Recipe) -> dict:
        return {"train": recipe.train, "prompt_template": recipe.teacher.template}

    def run(self, ctx: StageContext) -> StageResult:
        import pyarrow as pa

        from distill.engines.models import resolve_model
        from distill.pipeline.accounting import parquet_rows, parquet_types, split_and_write_ray
        from distill.pipeline.cluster import ensure_ray
        from distill.students.sft import train_student

        recipe = ctx.recipe
        ray = ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
        source = ctx.inputs["curate"].path / "data"
        rows_in = parquet_rows(source)
        rows = ray.data.read_parquet(str(source)).map_batches(
            _sft_batch, batch_format="pandas", fn_kwargs={"template": recipe.teacher.template})
        cfg = recipe.train.model_copy(update={"student": resolve_model(recipe.train.student)})

        last = {}

        def progress(log: dict) -> None:  # every step; the loss where it was logged
            last.update({k: log[k] for k in ("loss",) if k in log})
            ctx.progress("optimizer steps", int(log.get("step", 0)), log.get("max_steps"),
                         loss=last.get("loss"))

        result = train_student(rows, cfg, ctx.out_dir, progress=progress)
        parts = max(1, math.ceil(rows_in / ROWS_PER_PART))
        rejected = ray.put(dict(zip(result.rejected["row_id"], result.rejected["reject_reason"])))
        flagged = rows.map_batches(_flag, batch_format="pandas",
                                   fn_kwargs={"rejected": rejected, "parts": parts})
        types = {**parquet_types(source), "row_id": pa.string(), "prompt": pa.string()}
        counts, _ = split_and_write_ray(flagged, ctx.out_dir, rows_in, part_column=PART,
                                        parts=parts, types=types)
        extra = {"model_dir": "model", "adapter_dir": "adapter" if result.adapter_dir else None,
                 "student_base": recipe.train.student, "method": cfg.method,
                 "metrics": dict(result.metrics), "counts": {"rows_in": rows_in, **counts}}
        return StageResult(rows=None, rows_in=rows_in, extra=extra, already_written=True)
