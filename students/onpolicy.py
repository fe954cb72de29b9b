"""On-policy distillation of a trained student: `distill_on_policy(rows, offpolicy, student_dir,
teacher_dir, cfg, out_dir, think_format=...) -> OnPolicyResult`.

    result = distill_on_policy(rows, None, "runs/q/train-…/model", teacher_folder,
                               OnPolicyConfig(steps=40), Path("runs/q/onpolicy-…"))
    result.metrics["reverse_kl_before"], result.metrics["reverse_kl_after"]

`rows` has prompt_id, student_messages, teacher_messages and `held_out` (bool: never trained on;
the held-out reverse KL is measured on those). `offpolicy` (for lmbda < 1) has prompt_id,
reasoning, answer_text: the curated teacher traces. Each optimizer step is one transformers
Trainer step whose loss samples answers from the current student (or, with probability
1 - lmbda, takes curated traces) and scores them against the local teacher
(students.onpolicy_batch), so checkpoints, resume (students.checkpoints), schedules and LoRA are
the Trainer's as in SFT; out_dir/model is written by students.export like train's. backend vllm
is students.onpolicy_vllm.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from distill.students.config import TrainConfig
from distill.students.onpolicy_config import OnPolicyConfig

Progress = Callable[[dict], None]


@dataclass
class OnPolicyResult:
    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def student_train_config(cfg: OnPolicyConfig, student_dir: str, think_format: str) -> TrainConfig:
    """The SFT settings the on-policy student is loaded, trained and saved with (students.loading,
    students.sft.training_args, students.export)."""
    return TrainConfig(
        student=student_dir, method=cfg.method, lora=cfg.lora, max_steps=cfg.steps,
        learning_rate=cfg.learning_rate, lr_scheduler=cfg.lr_scheduler,
        warmup_ratio=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm, batching="padded", batch_size=1, think_format=think_format,
        gradient_checkpointing=False, bf16=False, seed=cfg.seed, save_steps=cfg.save_steps,
        save_total_limit=2, logging_steps=cfg.logging_steps, num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu)


def offpolicy_completions(offpolicy: pd.DataFrame | None, tokenizer, think_format: str) -> dict:
    """{prompt_id: [completion token ids, ...]} of the curated traces, as SFT tokenizes them."""
    from distill.students.chat import assistant_text, end_of_turn_token

    out: dict[str, list[list[int]]] = {}
    if offpolicy is None:
        return out
    eot = end_of_turn_token(tokenizer)
    for pid, r, a in zip(offpolicy["prompt_id"], offpolicy["reasoning"], offpolicy["answer_text"]):
        text = assistant_text(r, a, think_format) + eot
        out.setdefault(str(pid), []).append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _phase(progress: Progress | None, phase: str) -> Callable[[int, int], None] | None:
    """A (done, total) reporter for a phase other than training, through `progress`."""
    if progress is None:
        return None
    return lambda done, total: progress({"phase": phase, "step": done, "max_steps": total})


def _batches(n_rows: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n_rows))) for i in range(0, n_rows, size)]


def _on_policy(seed: int, step: int, lmbda: float) -> bool:
    """Whether `step` samples from the student (GKD's lambda), the same on a resumed run."""
    return lmbda >= 1.0 or random.Random(seed * 1_000_003 + step).random() < lmbda


def _trainer_class():
    from transformers import Trainer

    class OnPolicyTrainer(Trainer):
        """A Trainer whose loss is one on-policy step (`step_loss(model, batch, step)`)."""

        def __init__(self, *args, step_loss, **kwargs):
            super().__init__(*args, **kwargs)
            self.step_loss, self.step_logs = step_loss, []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, logs = self.step_loss(model, inputs, self.state.global_step)
            self.step_logs.append({"step": self.state.global_step + 1, **logs})
            return (loss, None) if return_outputs else loss

        def log(self, logs: dict, start_time: float | None = None) -> None:
            if "loss" in logs and self.step_logs:
                recent = self.step_logs[-self.args.logging_steps:]
                for k in ("divergence", "on_policy", "completion_tokens"):
                    logs[k] = sum(r[k] for r in recent) / len(recent)
            super().log(logs, start_time)

    return OnPolicyTrainer


def _step_loss(cfg: OnPolicyConfig, tokenizer, teacher, prompts: list, ids: list[str],
               offline: dict, measure: dict):
    """The Trainer's loss for one step on training prompts `batch` (indices into `prompts`):
    the student's own answers (or, off-policy, curated traces) scored against the teacher."""
    from distill.students.onpolicy_batch import divergence, sample

    def step_loss(model, batch: list[int], step: int):
        on = _on_policy(cfg.seed, step, cfg.lmbda) or not any(ids[i] in offline for i in batch)
        chosen = [prompts[i] for i in batch]
        if on:
            completions = sample(model, tokenizer, [p.student for p in chosen],
                                 n=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens,
                                 temperature=cfg.temperature)
        else:  # off-policy: one curated trace per prompt that has one
            pick = random.Random(step).choice
            chosen = [prompts[i] for i in batch if ids[i] in offline]
            completions = [pick(offline[ids[i]]) for i in batch if ids[i] in offline]
        loss, per_token, mask = divergence(model, teacher, chosen, completions, beta=cfg.beta,
                                           estimator=cfg.estimator, top_k=cfg.top_k, **measure)
        return loss, {"divergence": float(per_token.sum() / mask.sum().clamp(min=1)),
                      "on_policy": float(on),
                      "completion_tokens": sum(map(len, completions)) / len(completions)}

    return step_loss


def distill_on_policy(rows: pd.DataFrame, offpolicy: pd.DataFrame | None, student_dir: str,
                      teacher_dir: str, cfg: OnPolicyConfig, out_dir: Path, *, think_format: str,
                      progress: Progress | None = None) -> OnPolicyResult:
    """Measure the held-out reverse KL, train `cfg.steps` on-policy steps (resuming from the last
    checkpoint), save out_dir/model, measure again. See the module docstring."""
    import time

    from transformers import PrinterCallback, set_seed

    from distill.students.checkpoints import last_checkpoint
    from distill.students.export import save_outputs
    from distill.students.loading import load_model, load_tokenizer
    from distill.students.onpolicy_batch import encode_prompts
    from distill.students.onpolicy_heldout import held_out_reverse_kl, paired_change
    from distill.students.onpolicy_teacher import load_teacher
    from distill.students.sft import _progress_callback, training_args

    cpu0 = time.process_time()  # CPU seconds of this process: a figure a busy machine inflates less
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    tcfg = student_train_config(cfg, student_dir, think_format)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(tcfg)
    teacher, teacher_tok, vmap, align = load_teacher(teacher_dir, tokenizer, cfg)
    prompts = encode_prompts(rows, tokenizer, teacher_tok)
    held = [p for p, h in zip(prompts, rows["held_out"]) if h]
    train_idx = [i for i, h in enumerate(rows["held_out"]) if not h]
    ids = [str(rows["prompt_id"].iloc[i]) for i in train_idx]
    offline = offpolicy_completions(offpolicy, tokenizer, think_format)
    model = load_model(tcfg, tokenizer)
    measure = {"vmap": vmap, "align": align}

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    before_file = ckpt_dir / "reverse_kl_before.json"  # kept across crashes, like checkpoints
    if not before_file.exists():
        before = held_out_reverse_kl(model, tokenizer, teacher, held, cfg, **measure,
                                     progress=_phase(progress, "held-out prompts (before)"))
        before_file.write_text(json.dumps(before))
    before = json.loads(before_file.read_text())

    step_loss = _step_loss(cfg, tokenizer, teacher, [prompts[i] for i in train_idx], ids, offline,
                           measure)
    data = _batches(len(train_idx), cfg.prompts_per_step)
    args = training_args(tcfg, ckpt_dir)
    args.include_num_input_tokens_seen = "no"  # the inputs are prompt indices, not token ids
    trainer = _trainer_class()(model=model, args=args, train_dataset=data,
                               processing_class=tokenizer, data_collator=lambda items: items[0],
                               step_loss=step_loss, callbacks=[_progress_callback(progress)])
    trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(ckpt_dir)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    after = held_out_reverse_kl(trainer.model, tokenizer, teacher, held, cfg, **measure,
                                progress=_phase(progress, "held-out prompts (after)"))
    save_outputs(trainer, tokenizer, tcfg, out_dir)

    history = [h for h in trainer.state.log_history if "loss" in h]
    return OnPolicyResult(out_dir / "model", {
        "reverse_kl_before": before["mean"], "reverse_kl_after": after["mean"],
        "reverse_kl_change": paired_change(before, after),
        "held_out": {"prompts": len(held), "samples_per_prompt": cfg.held_out_samples,
                     "tokens_before": before["tokens"], "tokens_after": after["tokens"],
                     "estimator": before["estimator"]},
        "history": [{k: h[k] for k in ("step", "loss", "divergence", "on_policy",
                                       "completion_tokens") if k in h} for h in history],
        "global_step": trainer.state.global_step,
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu0, 1)})
