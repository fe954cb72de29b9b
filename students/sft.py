"""Fine-tune one student on curated traces: `train_student(rows, cfg, out_dir) -> TrainResult`.

    result = train_student(kept_df, TrainConfig(student=folder, method="lora"), Path("runs/sft"))
    AutoModelForCausalLM.from_pretrained(result.model_dir)     # merged full model + tokenizer

`rows` is a pandas frame or a Ray Dataset (the train stage reads the curated Parquet with Ray
Data). Each Ray Train worker reads its own part of a Dataset (students.sft_shard: every row on
exactly one worker, by row_id), so the driver never holds the rows; one local process reads its
single part with the same code. Rows become examples in students.sft_data on the worker that
holds them (rows longer than max_length are rejected with reason too_long_for_max_length, or
truncated) and are returned in `rejected`. Training is
transformers' Trainer (it already does gradient accumulation, schedules, checkpoint/resume, DDP/FSDP/DeepSpeed)
over batches planned once by students.packing; its dataset items are whole batches, so the
Trainer's own shuffling shuffles batch order. Checkpoints go to out_dir/checkpoints every
save_steps; a re-run with the same inputs resumes from the last complete one (a SIGKILL during
a save leaves an incomplete folder, which is deleted). With num_workers > 1 the same
`train_rows` runs on each Ray Train worker (students.ray_train) over its own rows, batches
planned by each worker over its rows in row_id order: the same rows give the same batches and
weights whatever the file order.

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
from distill.students.sft_data import (
    REQUIRED_COLUMNS,
    BatchDataset,
    all_overlong,
    check_rows,
    prepare_examples,
)

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
    worker_row_ids: list[list] = field(default_factory=list)  # the rows each worker trained on


def train_student(rows: Any, cfg: TrainConfig, out_dir: Path, *,
                  progress: Progress | None = None) -> TrainResult:
    """Tokenize, drop/truncate overlong rows, train (locally or on Ray workers), save. `rows`: a
    pandas frame or a Ray Dataset (the curated Parquet read by Ray Data). A Dataset, and any run
    on several workers, goes through students.sft_shard: each worker reads and tokenizes its own
    part; a frame on one worker trains in this process directly."""
    import torch

    # on a Ray cluster the workers may have GPUs the driver lacks: use_gpu says so
    validate_for_machine(cfg, has_cuda=torch.cuda.is_available() or bool(cfg.use_gpu))
    out_dir = Path(out_dir)
    if isinstance(rows, pd.DataFrame):
        check_rows(rows)
        if cfg.num_workers == 1:
            return _result(cfg, out_dir, [train_rows(rows, cfg, out_dir, progress=progress)])
        import ray

        from distill.pipeline.cluster import ensure_ray

        ensure_ray()
        rows = ray.data.from_pandas(rows)
    from distill.students.sft_shard import exact_blocks, read_shard

    rows = exact_blocks(rows, cfg.num_workers)
    if rows.count() == 0:
        check_rows(pd.DataFrame(columns=list(REQUIRED_COLUMNS)))  # "no rows to train on"
    if cfg.num_workers > 1:
        from distill.students.ray_train import train_with_ray

        workers = train_with_ray(None, cfg, out_dir, progress=progress, dataset=rows,
                                 run="distill.students.sft:train_rows")
    else:  # the same reading code as a Ray Train worker's, in this process
        workers = [train_rows(read_shard(rows.iterator()), cfg, out_dir, progress=progress)]
    return _result(cfg, out_dir, workers)


def _result(cfg: TrainConfig, out_dir: Path, workers: list[dict]) -> TrainResult:
    """One TrainResult from every worker's metrics (rank 0's training figures, rows summed)."""
    metrics = {k: v for k, v in workers[0].items() if k not in _PER_WORKER}
    real = sum(w["plan_tokens"][0] for w in workers)
    pad = sum(w["plan_tokens"][1] for w in workers)
    rejected = pd.DataFrame([r for w in workers for r in w["rejected"]],
                            columns=["row_id", "reject_reason"])
    metrics.update(padding_fraction=pad / (real + pad), rows_kept=sum(len(w["row_ids"]) for w in workers),
                   rows_rejected=len(rejected),
                   rows_truncated=sum(w["rows_truncated"] for w in workers),
                   rows_per_worker=[len(w["row_ids"]) for w in workers])
    return TrainResult(model_dir=out_dir / "model",
                       adapter_dir=out_dir / "adapter" if cfg.method != "full" else None,
                       kept_row_ids=[r for w in workers for r in w["row_ids"]], rejected=rejected,
                       metrics=metrics, worker_row_ids=[w["row_ids"] for w in workers])


_PER_WORKER = ("row_ids", "rejected", "rows_truncated", "plan_tokens")


def over_workers(n: int, op: str = "sum") -> int:
    """n summed (or "max") over the Ray Train workers (torch.distributed); n in one process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return n
    t = torch.tensor([n], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return int(t.item())


def train_rows(rows: pd.DataFrame, cfg: TrainConfig, out_dir: Path, *,
               progress: Progress | None = None, extra_args: dict | None = None) -> dict[str, Any]:
    """Train on this worker's own rows (all rows in a single process): tokenize them, plan their
    batches, train data parallel with the other workers. Returns the training metrics and this
    worker's row_ids, rejected rows (row_id, reason), truncated count and plan tokens."""
    rows = rows.sort_values("row_id", kind="stable") if len(rows) else rows  # not file order
    prepared = prepare_examples(rows, cfg, load_tokenizer(cfg), allow_empty=True)
    if over_workers(len(prepared.data)) == 0:
        raise all_overlong(over_workers(len(rows)), cfg)
    metrics = run_training(prepared.data, cfg, out_dir, progress=progress, extra_args=extra_args,
                           own_rows=True)
    metrics.update(row_ids=list(prepared.kept_row_ids), rows_truncated=prepared.truncated,
                   rejected=list(zip(prepared.rejected["row_id"], prepared.rejected["reject_reason"])))
    return metrics


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


def _own_rows_trainer():
    """A Trainer whose every worker iterates all of its own dataset: accelerate's dataloader
    sharding (each rank takes every world_size-th batch) is made a pass-through, the way
    transformers does it for its rank-aware BatchRebalanceSampler. Shuffling stays accelerate's
    seeded, per-epoch, resumable sampler."""
    from accelerate.data_loader import BatchSamplerShard
    from transformers import Trainer

    class OwnRowsTrainer(Trainer):
        def get_train_dataloader(self):
            loader = super().get_train_dataloader()
            shard = getattr(loader, "batch_sampler", None)
            if isinstance(shard, BatchSamplerShard):
                shard.num_processes, shard.process_index = 1, 0
            return loader

    return OwnRowsTrainer


def run_training(data: list[dict], cfg: TrainConfig, out_dir: Path, *,
                 progress: Progress | None = None, extra_args: dict | None = None,
                 callbacks: list | None = None, own_rows: bool = False) -> dict[str, Any]:
    """Train on tokenized examples in this process (or this Ray worker) and save on rank 0.
    `own_rows`: `data` is this worker's own share (students.sft_shard), not the same list on
    every worker. Each worker then plans its own batches; workers with fewer batches than the
    most add empty ones (one pad token, no label: no loss, no gradient; the gradient is averaged
    over the labelled tokens of all workers) so every worker takes the same number of steps."""
    from transformers import PrinterCallback, Trainer, set_seed

    set_seed(cfg.seed)
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    lengths = [len(d["input_ids"]) for d in data]
    plan = plan_batches(lengths, mode=cfg.batching, token_budget=cfg.per_device_batch_tokens,
                        batch_size=cfg.batch_size, seed=cfg.seed) if data else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    served, plan_served, trainer_class = data, plan, Trainer
    if own_rows:
        trainer_class = _own_rows_trainer()
        idle = over_workers(len(plan), "max") - len(plan)
        if idle:
            served = [*data, {"input_ids": [pad_id], "labels": [-100]}]
            plan_served = plan + [[len(data)]] * idle
    trainer = trainer_class(
        model=model, args=training_args(cfg, out_dir / "checkpoints", **(extra_args or {})),
        train_dataset=BatchDataset(served, plan_served), processing_class=tokenizer,
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
    plan_real, plan_pad = sum(r for r, _ in padded), sum(p for _, p in padded)
    return {
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in state.log_history
                         if "loss" in h],
        "global_step": state.global_step,
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "real_tokens": int(real), "seconds": seconds, "tokens_per_second": real / seconds,
        "padding_fraction": plan_pad / max(1, plan_real + plan_pad), "plan_tokens": [plan_real, plan_pad],
        "batches_per_epoch": len(plan_served), "attn_implementation": model.config._attn_implementation,
    }
