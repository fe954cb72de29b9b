"""The recipe's `plan:` section: what `distill plan` assumes where it does not measure.

    plan:
      gpu_hour_price: 2.5                 # one GPU-hour, in the currency of teacher.cost_per_*
      train_tokens_per_s_per_gpu: 3000    # stated training speed (not measured by the plan)
      calibration_prompts: 64             # prompts through the real teacher (null: automatic)
      given: {completion_tokens: 6000, prompt_tokens: 200, teacher_tokens_per_s: 2500,
              kept_per_prompt: 1.2}       # measured elsewhere: no calibration run

Nothing here changes any stage's result, so every field is RUNTIME (no stage key reads it).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.pipeline.keys import RUNTIME


class GivenStats(BaseModel):
    """Token statistics the user measured elsewhere; when all four are set the plan makes no
    calibration run (each is labelled 'given' in the table)."""

    model_config = ConfigDict(extra="forbid")
    prompt_tokens: float | None = Field(None, ge=0, json_schema_extra=RUNTIME,
                                        description="Mean prompt tokens per teacher request.")
    completion_tokens: float | None = Field(None, ge=0, json_schema_extra=RUNTIME,
                                            description="Mean completion tokens per sample.")
    teacher_tokens_per_s: float | None = Field(None, gt=0, json_schema_extra=RUNTIME, description=(
        "Output tokens per second of one teacher engine replica on the recipe's hardware."))
    kept_per_prompt: float | None = Field(None, ge=0, json_schema_extra=RUNTIME,
                                          description="Curated rows kept per prompt.")
    engine_start_s: float | None = Field(None, ge=0, json_schema_extra=RUNTIME,
                                         description="Seconds for an engine to load (null: 60).")


class PlanConfig(BaseModel):
    """Prices and stated speeds for `distill plan` (workflows.plan); results are unaffected."""

    model_config = ConfigDict(extra="forbid")
    calibration_prompts: int | None = Field(None, ge=1, json_schema_extra=RUNTIME, description=(
        "Prompts sent through the real prompts/generate/curate stages to measure the teacher; "
        "null: enough for two waves of engine batches (16 to 256)."))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=RUNTIME, description=(
        "The hardware priced: cuda (GPUs), cpu; auto: teacher.device as it resolves on this "
        "machine (so plan on the cluster, or say cuda when planning from a laptop)."))
    gpu_hour_price: float = Field(0.0, ge=0, json_schema_extra=RUNTIME, description=(
        "Price of one GPU-hour (same currency as teacher.cost_per_million_*); 0: not priced."))
    train_tokens_per_s_per_gpu: float | None = Field(None, gt=0, json_schema_extra=RUNTIME,
                                                     description=(
        "Training tokens per second per worker, as stated by you; null: 200 on CPU (SmolLM2-135M "
        "LoRA measured here), 3000 on a GPU (a typical 7B full fine-tune on an H100)."))
    eval_tokens_per_s: float | None = Field(None, gt=0, json_schema_extra=RUNTIME, description=(
        "Output tokens per second of one evaluation engine; null: the teacher's measured rate."))
    given: GivenStats = Field(default_factory=GivenStats, description="Statistics measured elsewhere (skip calibration).")
