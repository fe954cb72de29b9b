"""Fine-tune one student on curated traces: `train_student(rows, cfg, out_dir) -> TrainResult`.

    result = train_student(kept_df, TrainConfig(student=folder, method="lora"), Path("runs/sft"))
    AutoModelForCausalLM.from_pretrained(result.model_dir)     # merged full model + tokenizer

Rows become examples in students.sft_data (rows longer than max_length are rejected with
reason too_long_for_max_length, or truncated) and are returned in `rejected`. Training is
transformers' Trainer (it already does gradient accumulation, schedules, checkpoint/resume, DDP/FSDP/DeepSpeed)
over batches planned once by students.packing; its dataset items are whole batches, so the
Trainer's own shuffling shuffles batch order. Checkpoints go to out_dir/checkpoints every
save_steps; a re-run with the same inputs resumes from the last complete one (a SIGKILL during
a save leaves an incomplete folder, which is deleted). With num_workers > 1 the same
`run_training` runs on each Ray Train worker (students.ray_train).

The model comes from students.loading, checkpoints are checked by students.checkpoints, and the
outputs are written by students.export: out_dir/model (loadable with from_pretrained; for LoRA the adapter merged into the base),
out_dir/adapter (LoRA/QLoRA only), both with the tokenizer and the chat template
(the R1 template forcing `<think>\\n` for think_format r1), and generation stopping at the
end-of-turn token.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from distill.students.checkpoints import last_checkpoint, tokens_at
from distill.students.config import TrainConfig, validate_for_machine
from distill.students.export import save_outputs
from distill.students.loading import load_model, load_tokenizer, resolve_bf16
from distill.students.packing import batch_tokens, collate, plan_batches
from distill.students.sft_data import BatchDataset, check_rows, prepare_examples

Progress = Callable[[dict], None]


@dataclass
class TrainResult:
    """What train_student produced; metrics: loss_history, real_tokens, tokens_per_second,
    padding_fraction, seconds, global_step, resumed_from_step, rows_kept, rows_rejected."""

    model_dir: Path
    adapter_dir: Path | None
    kept_row_ids: list
    rejected: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)


def train_student(rows: pd.DataFrame, cfg: TrainConfig, out_dir: Path, *,
                  progress: Progress | None = None) -> TrainResult:
    """Tokenize, drop/truncate overlong rows, train (locally or on Ray workers), save."""
    import torch

    check_rows(rows)
    # on a Ray cluster the workers may have GPUs the driver lacks: use_gpu says so
    validate_for_machine(cfg, has_cuda=torch.cuda.is_available() or bool(cfg.use_gpu))
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(cfg)
    prepared = prepare_examples(rows, cfg, tokenizer)
    data = prepared.data
    if cfg.num_workers > 1:
        from distill.students.ray_train import train_with_ray

        metrics = train_with_ray(data, cfg, out_dir, progress=progress)
    else:
        metrics = run_training(data, cfg, out_dir, progress=progress)
    metrics.update(rows_kept=len(data), rows_rejected=len(prepared.rejected),
                   rows_truncated=prepared.truncated)
    return TrainResult(model_dir=out_dir / "model",
                       adapter_dir=out_dir / "adapter" if cfg.method != "full" else None,
                       kept_row_ids=prepared.kept_row_ids, rejected=prepared.rejected,
                       metrics=metrics)


def training_args(cfg: TrainConfig, ckpt_dir: Path, **extra: Any):
    """transformers TrainingArguments for this config (strategy-specific ones in `extra`)."""
    import torch
    from transformers import TrainingArguments

    sharded = cfg.strategy != "ddp"
    return TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=1,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, learning_rate=cfg.resolved_learning_rate(),
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, bf16=resolve_bf16(cfg),
        gradient_checkpointing=cfg.gradient_checkpointing and not sharded,
        gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), ddp_find_unused_parameters=False, **extra)


def _progress_callback(fn: Progress | None):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # steps live, between loss logs
            if fn is not None and state.is_world_process_zero:
                fn({"step": state.global_step, "max_steps": state.max_steps})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if fn is not None and state.is_world_process_zero and logs:
                fn({"step": state.global_step, "max_steps": state.max_steps, **logs})

    return ProgressCallback()


def run_training(data: list[dict], cfg: TrainConfig, out_dir: Path, *,
                 progress: Progress | None = None, extra_args: dict | None = None,
                 callbacks: list | None = None) -> dict[str, Any]:
    """Train on tokenized examples in this process (or this Ray worker) and save on rank 0."""
    from transformers import PrinterCallback, Trainer, set_seed

    set_seed(cfg.seed)
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    lengths = [len(d["input_ids"]) for d in data]
    plan = plan_batches(lengths, mode=cfg.batching, token_budget=cfg.per_device_batch_tokens,
                        batch_size=cfg.batch_size, seed=cfg.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = Trainer(
        model=model, args=training_args(cfg, out_dir / "checkpoints", **(extra_args or {})),
        train_dataset=BatchDataset(data, plan), processing_class=tokenizer,
        data_collator=lambda items: collate(cfg.batching, items[0], pad_id=pad_id),
        callbacks=[_progress_callback(progress), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)  # progress goes to `progress`, not stdout
    resume = last_checkpoint(out_dir / "checkpoints", clean=trainer.is_world_process_zero())
    tokens_before = tokens_at(resume) if resume else 0  # rotation may delete it later
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    save_outputs(trainer, tokenizer, cfg, out_dir)
    state = trainer.state
    real = state.num_input_tokens_seen - tokens_before
    padded = [batch_tokens(cfg.batching, [lengths[i] for i in b]) for b in plan]
    return {
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in state.log_history
                         if "loss" in h],
        "global_step": state.global_step,
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "real_tokens": int(real), "seconds": seconds, "tokens_per_second": real / seconds,
        "padding_fraction": sum(p for _, p in padded) / sum(r + p for r, p in padded),
        "batches_per_epoch": len(plan), "attn_implementation": model.config._attn_implementation,
    }
