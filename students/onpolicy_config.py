"""Settings of on-policy distillation after SFT (the `onpolicy` stage):
`OnPolicyConfig(steps=40, beta=1.0, lmbda=1.0)`; a recipe turns the stage on with an `onpolicy:`
section (absent or null: off, and evaluation reads the SFT student).

Each step the current student answers `prompts_per_step` prompts (`samples_per_prompt` each),
the teacher scores every token of those answers, and the student moves towards the teacher on
them: the generalized JSD of GKD (`beta` 1: reverse KL, the on-policy distillation objective;
0: forward KL), exact over the vocabulary (`estimator: full`), over the teacher's `top_k` tokens
plus a tail bucket (`topk`), or estimated on the sampled tokens (`sampled`, reverse KL only: what
a teacher that returns log-probs of given tokens offers). `lmbda` is GKD's mixing ratio: the
share of steps on the student's own answers; the rest are on the curated teacher traces.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.pipeline.keys import RUNTIME, fingerprint
from distill.students.config import LoraConfig


class OnPolicyConfig(BaseModel):
    """On-policy distillation of the SFT student towards a teacher (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    teacher: str | None = Field(None, description="Teacher model (short name, folder or hub id); "
                                "null: teacher.model.", json_schema_extra=fingerprint("model"))
    teacher_prompt: Literal["teacher", "student"] = Field(
        "teacher", description="What the teacher reads before the student's answer: 'teacher': the "
        "prompt the generate stage sends (teacher.system_prompt and teacher.few_shot, so a teacher "
        "with worked examples the student never sees distils that context); 'student': the "
        "student's own prompt.")
    cross_tokenizer: Literal["refuse", "uld"] = Field(
        "refuse", description="A teacher whose tokenizer differs from the student's: 'refuse' "
        "(stop with an error), or 'uld': compare sorted next-token distributions (Universal Logit "
        "Distillation) where both tokenizations of the answer start a token at the same character.")
    steps: int = Field(40, ge=1, description="Optimizer steps.")
    prompts_per_step: int = Field(8, ge=1, description="Prompts the student answers per step.")
    samples_per_prompt: int = Field(1, ge=1, description="Answers sampled per prompt per step.")
    max_new_tokens: int = Field(128, ge=1, description="Longest sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Student sampling temperature.")
    beta: float = Field(1.0, ge=0, le=1, description="GKD's generalized JSD coefficient: 1 reverse "
                        "KL (on-policy distillation), 0 forward KL, 0.5 JSD.")
    lmbda: float = Field(1.0, ge=0, le=1, description="GKD's mixing ratio: share of steps on the "
                         "student's own samples; the rest use curated teacher traces (off-policy).")
    estimator: Literal["full", "topk", "sampled"] = Field(
        "full", description="full: exact over the vocabulary (a local teacher); topk: the "
        "teacher's top_k tokens plus a tail bucket; sampled: log s(y) - log t(y) on the sampled "
        "tokens (reverse KL only, beta 1).")
    top_k: int = Field(20, ge=1, description="Teacher tokens per position for estimator topk.")
    method: Literal["full", "lora"] = Field("lora", description="Train all weights, or a LoRA "
                                            "adapter on the SFT student (merged at the end).")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA shape (method lora).")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "constant", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Warmup share of all steps.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(0, description="Seed for prompt order, sampling and LoRA init.")
    held_out: int = Field(32, ge=1, description="Prompts set aside (never trained on) for the "
                          "held-out reverse KL before and after (reverse_kl_before/_after).")
    held_out_samples: int = Field(2, ge=1, description="Student answers per held-out prompt.")
    backend: Literal["local", "vllm"] = Field(
        "local", description="local: the training model samples and a transformers teacher scores "
        "in this process (CPU, small models); vllm: per round, a vLLM engine samples from the "
        "current student and a vLLM teacher returns prompt log-probs (GPU clusters).")
    rollout_steps: int = Field(4, ge=1, description="backend vllm: optimizer steps per round of "
                               "samples (policy lag; later steps are importance-weighted).")
    student_engine: dict[str, Any] = Field(default_factory=dict, description="backend vllm: vLLM "
                                           "engine arguments for the student.",
                                           json_schema_extra=fingerprint("engine_args"))
    teacher_engine: dict[str, Any] = Field(default_factory=dict, description="backend vllm: vLLM "
                                           "engine arguments for the teacher.",
                                           json_schema_extra=fingerprint("engine_args"))
    num_workers: int = Field(1, ge=1, description="Ray Train workers (backend vllm).")
    use_gpu: bool | None = Field(None, description="Ray workers take a GPU each; null: when the "
                                 "cluster has GPUs.")
    save_steps: int = Field(10, ge=1, description="Checkpoint every this many steps.",
                            json_schema_extra=RUNTIME)
    logging_steps: int = Field(5, ge=1, description="Log every this many steps.",
                               json_schema_extra=RUNTIME)

    @model_validator(mode="after")
    def _consistent(self) -> OnPolicyConfig:
        if self.estimator == "sampled" and self.beta != 1.0:
            raise ValueError("estimator sampled estimates the reverse KL only; set beta: 1.0, or "
                             "estimator: topk / full for other divergences")
        if self.backend == "vllm" and self.estimator == "full":
            raise ValueError("a vLLM teacher returns log-probs of given tokens, not whole "
                             "distributions: use estimator topk or sampled with backend vllm")
        if self.num_workers > 1 and self.backend == "local":
            raise ValueError("num_workers > 1 trains on Ray Train workers, which backend vllm "
                             "does; backend local trains in this process (num_workers: 1)")
        if self.lmbda < 1.0 and self.backend == "vllm":
            raise ValueError("lmbda < 1 (steps on curated traces) is for backend local; "
                             "backend vllm trains on the student's own samples (lmbda: 1.0)")
        if self.cross_tokenizer == "uld" and self.backend == "vllm":
            raise ValueError("cross_tokenizer uld needs whole teacher distributions: use "
                             "backend local")
        return self
