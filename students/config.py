"""The SFT settings of one student: `TrainConfig(student="/models/qwen2.5-math-1.5b", method="full")`.

Plain data (pydantic, extra keys rejected) so a recipe hashes stably. `validate_for_machine(cfg,
has_cuda=torch.cuda.is_available())` checks what only the machine can tell (QLoRA needs CUDA, ...)
and is called before any work. Defaults follow the R1-Distill recipe where the paper states it
(max_length 32768, the `<think>` format); the rest are common SFT values.
"""
from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.pipeline.errors import RecipeError
from distill.pipeline.keys import RUNTIME, fingerprint


class LoraConfig(BaseModel):
    """LoRA adapter shape (peft.LoraConfig); used by method lora and qlora."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules to adapt: 'all-linear' or a list of module names.")


class TrainConfig(BaseModel):
    """How to fine-tune one student on the curated traces."""

    model_config = ConfigDict(extra="forbid")

    student: str = Field(description="Folder of the base model (config, weights, tokenizer).",
                         json_schema_extra=fingerprint("model"))
    method: Literal["full", "lora", "qlora"] = Field(
        "lora", description="full fine-tune, LoRA, or QLoRA (4-bit base, CUDA only).")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA shape (lora/qlora).")
    epochs: float = Field(3.0, gt=0, description="Passes over the kept traces.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; None: 2e-4 for lora/qlora, 4e-5 for full.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Warmup share of all steps.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    per_device_batch_tokens: int = Field(
        32768, ge=16, description="Token budget of one batch on one device (packed and grouped "
        "batching); must be >= max_length.")
    batch_size: int | None = Field(
        None, ge=1, description="Samples per batch for batching 'padded' only; None: "
        "per_device_batch_tokens // (longest kept trace).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    max_length: int = Field(32768, ge=8, description="Longest trace in tokens (prompt + answer).")
    overlong: Literal["drop", "truncate"] = Field(
        "drop", description="Traces longer than max_length: 'drop' (rejected with reason "
        "too_long_for_max_length) or 'truncate' (keep the first max_length tokens; the cut trace "
        "has no end-of-turn token; a prompt that alone fills max_length is still dropped).")
    batching: Literal["packed", "grouped", "padded"] = Field(
        "packed", description="packed: padding-free rows up to the token budget; grouped: "
        "length-sorted padded batches; padded: random padded batches (baseline).")
    attn_implementation: Literal["auto", "sdpa", "eager", "sdpa_varlen", "flash_attention_2"] = \
        Field("auto", description="Attention kernel; auto: flash_attention_2 for packed batches "
              "on CUDA with flash-attn installed, else sdpa_varlen for packed, sdpa otherwise.",
                  json_schema_extra=RUNTIME)
    gradient_checkpointing: bool = Field(True, description="Recompute activations (less memory).",
                                         json_schema_extra=RUNTIME)
    bf16: bool | None = Field(None, description="bf16 mixed precision; None: on when CUDA "
                              "supports bf16, off on CPU.")
    seed: int = Field(42, description="Seed for init of LoRA weights, data order and dropout.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers; >1 trains data-parallel "
                             "through Ray Train TorchTrainer.")
    use_gpu: bool | None = Field(None, description="Ray workers take a GPU each; None: when "
                                 "CUDA is visible here.")
    strategy: Literal["ddp", "fsdp", "deepspeed_zero3"] = Field(
        "ddp", description="Multi-worker strategy: ddp, or fsdp / deepspeed_zero3 (GPU clusters; "
        "shards weights, gradients and optimizer state across workers).", json_schema_extra=RUNTIME)
    think_format: Literal["r1", "plain"] = Field(
        "r1", description="r1: assistant turn is '<think>\\n{reasoning}\\n</think>\\n\\n{answer}' "
        "and the saved template forces '<think>\\n'; plain: '{reasoning}\\n\\n{answer}'.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every this many optimizer steps "
                            "(a killed run resumes from the last one).", json_schema_extra=RUNTIME)
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk.",
                                  json_schema_extra=RUNTIME)
    logging_steps: int = Field(10, ge=1, description="Log loss every this many steps.",
                               json_schema_extra=RUNTIME)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.batching != "padded" and self.per_device_batch_tokens < self.max_length:
            raise ValueError(
                f"per_device_batch_tokens ({self.per_device_batch_tokens}) is smaller than "
                f"max_length ({self.max_length}): the longest trace would not fit in a batch; "
                "raise per_device_batch_tokens or lower max_length")
        if self.batch_size is not None and self.batching != "padded":
            raise ValueError("batch_size applies to batching: padded only; packed and grouped "
                             "batches are sized by per_device_batch_tokens")
        if self.attn_implementation == "sdpa_varlen" and self.batching != "packed":
            raise ValueError("attn_implementation sdpa_varlen needs batching: packed; "
                             "use sdpa for grouped/padded batches")
        if self.strategy != "ddp" and self.num_workers < 2:
            raise ValueError(f"strategy {self.strategy} shards a model across Ray Train workers; "
                             "set num_workers >= 2, or strategy: ddp")
        if self.method == "qlora" and self.strategy != "ddp":
            raise ValueError(f"method qlora with strategy {self.strategy} is not supported; "
                             "use strategy: ddp (or method: lora)")
        return self

    def resolved_learning_rate(self) -> float:
        """learning_rate, or the method's default."""
        return self.learning_rate or (4e-5 if self.method == "full" else 2e-4)


def validate_for_machine(cfg: TrainConfig, *, has_cuda: bool) -> None:
    """Raise a RecipeError for settings the machine cannot run; call before any work.
    `has_cuda`: whether training will have CUDA GPUs (on a Ray cluster: its workers)."""
    if cfg.method == "qlora" and not has_cuda:
        raise RecipeError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit); use method: lora on CPU")
    if cfg.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise RecipeError("method qlora needs the bitsandbytes package",
                          fix="pip install 'distill[gpu]' (or bitsandbytes), or method: lora")
    if cfg.strategy != "ddp" and not has_cuda:
        raise RecipeError(f"strategy {cfg.strategy} is for CUDA GPU clusters; "
                          "use strategy: ddp on CPU")
    if cfg.strategy == "deepspeed_zero3" and importlib.util.find_spec("deepspeed") is None:
        raise RecipeError("strategy deepspeed_zero3 needs the deepspeed package",
                          fix="pip install deepspeed on the cluster image, or strategy: fsdp")
    if cfg.attn_implementation == "flash_attention_2" and not has_cuda:
        raise RecipeError("attn_implementation flash_attention_2 needs a CUDA GPU; use auto on CPU")
