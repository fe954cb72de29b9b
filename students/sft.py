"""Fine-tune one student on curated traces: `train_student(rows, cfg, out_dir) -> TrainResult`.

    result = train_student(kept_df, TrainConfig(student=folder, method="lora"), Path("runs/sft"))
    AutoModelForCausalLM.from_pretrained(result.model_dir)     # merged full model + tokenizer

`rows` needs columns row_id, prompt, reasoning, answer_text. Each row becomes one chat example
(students.chat); rows longer than max_length are dropped with reason too_long_for_max_length
(or truncated, `overlong: truncate`) and returned in `rejected`. Training is transformers'
Trainer (it already does gradient accumulation, schedules, checkpoint/resume, DDP/FSDP/DeepSpeed)
over batches planned once by students.packing; its dataset items are whole batches, so the
Trainer's own shuffling shuffles batch order. Checkpoints go to out_dir/checkpoints every
save_steps; a re-run with the same inputs resumes from the last complete one (a SIGKILL during
a save leaves an incomplete folder, which is deleted). With num_workers > 1 the same
`run_training` runs on each Ray Train worker (students.ray_train).

Outputs: out_dir/model (loadable with from_pretrained; for LoRA the adapter merged into the base),
out_dir/adapter (LoRA/QLoRA only), both with the tokenizer and the chat template
(the R1 template forcing `<think>\\n` for think_format r1), and generation stopping at the
end-of-turn token.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from distill.pipeline.errors import DistillError
from distill.students.chat import (
    build_examples,
    ensure_chat_template,
    fix_eos,
    r1_generation_template,
)
from distill.students.config import TrainConfig, validate_for_machine
from distill.students.packing import batch_tokens, collate, plan_batches, prepare_for_packing

REQUIRED_COLUMNS = ("row_id", "prompt", "reasoning", "answer_text")
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


def load_tokenizer(cfg: TrainConfig):
    """The student's tokenizer with a chat template (ChatML if it had none), R1 variant for r1."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.student)
    ensure_chat_template(tokenizer)
    if cfg.think_format == "r1":
        tokenizer.chat_template = r1_generation_template(tokenizer.chat_template)
    return tokenizer


def resolve_attention(cfg: TrainConfig, has_cuda: bool) -> str:
    """The attention kernel for this config and machine (see students.packing)."""
    import importlib.util

    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    if cfg.batching != "packed":
        return "sdpa"
    if has_cuda and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa_varlen"


def resolve_bf16(cfg: TrainConfig) -> bool:
    import torch

    if cfg.bf16 is not None:
        return cfg.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_model(cfg: TrainConfig, tokenizer, *, adapter: bool = True):
    """The base model ready to train: attention kernel, use_cache off (packing), EOS fixed,
    embeddings resized if the tokenizer grew, and a LoRA adapter for lora/qlora."""
    import torch
    from distill.students.packing import register_varlen_attention
    from transformers import AutoModelForCausalLM

    register_varlen_attention()
    bf16 = resolve_bf16(cfg)
    kwargs: dict[str, Any] = {"attn_implementation": resolve_attention(cfg, torch.cuda.is_available()),
                              "dtype": torch.bfloat16 if bf16 and cfg.method != "full" else torch.float32}
    if cfg.method == "qlora" and adapter:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForCausalLM.from_pretrained(cfg.student, **kwargs)
    grew = len(tokenizer) > model.get_input_embeddings().weight.shape[0]
    if grew:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    fix_eos(tokenizer, model)
    prepare_for_packing(model)
    if cfg.method == "full" or not adapter:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
                      modules_to_save=["embed_tokens", "lm_head"] if grew else None)
    return get_peft_model(model, lora)


def _check_rows(rows: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise DistillError(f"train_student: rows lack columns {missing} (have {list(rows.columns)})",
                           fix="pass the curated SFT set (row_id, prompt, reasoning, answer_text)")
    if rows.empty:
        raise DistillError("train_student: no rows to train on",
                           fix="check the curation funnel: every trace was rejected")


def train_student(rows: pd.DataFrame, cfg: TrainConfig, out_dir: Path, *,
                  progress: Progress | None = None) -> TrainResult:
    """Tokenize, drop/truncate overlong rows, train (locally or on Ray workers), save."""
    import torch

    _check_rows(rows)
    # on a Ray cluster the workers may have GPUs the driver lacks: use_gpu says so
    validate_for_machine(cfg, has_cuda=torch.cuda.is_available() or bool(cfg.use_gpu))
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(cfg)
    examples = build_examples(tokenizer, rows["prompt"].tolist(), rows["reasoning"].tolist(),
                              rows["answer_text"].tolist(), think_format=cfg.think_format,
                              max_length=cfg.max_length, overlong=cfg.overlong)
    reasons = [e["reject_reason"] for e in examples]
    kept = [i for i, r in enumerate(reasons) if r is None]
    rejected = pd.DataFrame({"row_id": [rows["row_id"].iloc[i] for i, r in enumerate(reasons) if r],
                             "reject_reason": [r for r in reasons if r]})
    if not kept:
        raise DistillError(f"train_student: all {len(rows)} rows are longer than max_length "
                           f"{cfg.max_length} tokens", fix="raise max_length or set overlong: truncate")
    data = [{"input_ids": examples[i]["input_ids"], "labels": examples[i]["labels"]} for i in kept]
    if cfg.num_workers > 1:
        from distill.students.ray_train import train_with_ray

        metrics = train_with_ray(data, cfg, out_dir, progress=progress)
    else:
        metrics = run_training(data, cfg, out_dir, progress=progress)
    metrics.update(rows_kept=len(kept), rows_rejected=len(rejected),
                   rows_truncated=sum(examples[i]["truncated"] for i in kept))
    return TrainResult(model_dir=out_dir / "model",
                       adapter_dir=out_dir / "adapter" if cfg.method != "full" else None,
                       kept_row_ids=[rows["row_id"].iloc[i] for i in kept], rejected=rejected,
                       metrics=metrics)


class BatchDataset:
    """Dataset whose items are planned batches (lists of examples); DataLoader batch size 1."""

    def __init__(self, data: list[dict], plan: list[list[int]]):
        self.data, self.plan = data, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> list[dict]:
        return [self.data[j] for j in self.plan[i]]


def _safetensors_ok(path: Path) -> bool:
    """The header parses and the file is as long as the header says (a cut file is not)."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, struct.error):
        return False


def checkpoint_ok(path: Path) -> bool:
    """A checkpoint a resume can use: its trainer state parses, its weights are whole, and its
    .pt/.bin archives open (their central directory is at the end, so a cut file fails)."""
    import json
    import zipfile

    try:
        if "global_step" not in json.loads((path / "trainer_state.json").read_text()):
            return False
    except (OSError, ValueError):
        return False
    if not all(_safetensors_ok(f) for f in path.glob("*.safetensors")):
        return False
    # torch.save writes zip archives (optimizer.pt, scheduler.pt, training_args.bin, rng *.pth)
    return all(zipfile.is_zipfile(f) for pattern in ("*.pt", "*.bin", "*.pth")
               for f in path.glob(pattern))


def last_checkpoint(ckpt_dir: Path, *, clean: bool = True) -> Path | None:
    """The newest usable checkpoint (checkpoint_ok: trainer_state.json is written last, and a
    damaged newest one falls back to the one before); newer unusable ones are deleted when
    `clean` (rank 0)."""
    found = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    usable = None
    for p in reversed(found):
        if checkpoint_ok(p):
            usable = p
            break
        if clean:
            shutil.rmtree(p, ignore_errors=True)
    return usable


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
    tokens_before = _tokens_at(resume) if resume else 0  # rotation may delete it later
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


def _tokens_at(checkpoint: Path) -> int:
    import json

    return json.loads((checkpoint / "trainer_state.json").read_text()).get(
        "num_input_tokens_seen", 0)


def _replace_dir(tmp: Path, final: Path) -> None:
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def save_outputs(trainer, tokenizer, cfg: TrainConfig, out_dir: Path) -> None:
    """Write out_dir/model (and out_dir/adapter for LoRA) atomically, with the tokenizer. Called
    on every rank: FSDP / ZeRO-3 gather the weights inside trainer.save_model."""
    import torch

    rank0 = trainer.is_world_process_zero()
    model_tmp, adapter_tmp = out_dir / "model.tmp", out_dir / "adapter.tmp"
    if rank0:
        shutil.rmtree(model_tmp, ignore_errors=True)
        shutil.rmtree(adapter_tmp, ignore_errors=True)
    dtype = _saved_dtype(cfg.student) or torch.float32  # publish in the base model's dtype
    if cfg.method == "full" and cfg.strategy == "ddp":
        if rank0:
            trainer.model.to(dtype).save_pretrained(model_tmp)
    else:
        trainer.save_model(str(model_tmp if cfg.method == "full" else adapter_tmp))
    if not rank0:
        return
    if cfg.method != "full":
        tokenizer.save_pretrained(adapter_tmp)
        _replace_dir(adapter_tmp, out_dir / "adapter")
        from peft import PeftModel

        base = load_model(cfg.model_copy(update={"bf16": False}), load_tokenizer(cfg),
                          adapter=False)  # unquantized fp32 base: an exact merge
        merged = PeftModel.from_pretrained(base, out_dir / "adapter").merge_and_unload()
        merged.to(dtype).save_pretrained(model_tmp)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_tmp)
    config.use_cache = True  # off only while training (packing); generation wants it
    config.save_pretrained(model_tmp)
    tokenizer.save_pretrained(model_tmp)
    _replace_dir(model_tmp, out_dir / "model")


def _saved_dtype(folder: str):
    import json

    import torch

    cfg = json.loads((Path(folder) / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else None
