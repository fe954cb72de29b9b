"""On-policy distillation with vLLM engines and Ray Train (`onpolicy.backend: vllm`, GPU clusters):
`distill_on_policy_vllm(rows, offpolicy, student_dir, teacher_dir, cfg, out_dir, think_format=...)`,
the same contract as students.onpolicy.distill_on_policy.

Work goes in rounds of `cfg.rollout_steps` optimizer steps. In round r a vLLM engine of the
current student (the SFT student, then each round's merged model) samples answers to the
round's prompts with the log-prob of each token; a vLLM engine of the teacher returns its
log-probs of those exact tokens after its own prompt (engines.scoring: prompt log-probs, top-k);
the rows go to out_dir/shards/round-NNNN.parquet; then the Trainer (on `cfg.num_workers` Ray
Train workers when > 1) takes rollout_steps steps on them (`train_round`) and writes a
checkpoint and the merged model under out_dir/checkpoints. Later steps of a round see samples
of a slightly older student: `sampled` weighs each token by s/s_sampler, clipped. A crash loses
at most the round in flight: finished rounds' shards and checkpoints are kept. The held-out
reverse KL is the sampled estimate (mean log s(y) - log t(y) over the student's own tokens).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from distill.students.config import TrainConfig
from distill.students.onpolicy_config import OnPolicyConfig


def engine_specs(student: str, teacher: str, cfg: OnPolicyConfig, stop_ids: list[int], seed: int,
                 device: str = "auto"):
    """(student sampling spec, teacher scoring spec) for one round."""
    from distill.engines.sampling import SamplingConfig
    from distill.engines.vllm import EngineSpec

    sampling = SamplingConfig(temperature=cfg.temperature, top_p=1.0, max_tokens=cfg.max_new_tokens)
    return (EngineSpec(model=student, sampling=sampling, seed=seed, engine=cfg.student_engine,
                       stop_token_ids=stop_ids, device=device),
            EngineSpec(model=teacher, sampling=SamplingConfig(max_tokens=1), seed=seed,
                       engine=cfg.teacher_engine, device=device))


def rollouts(prompts: list, ids: list[int], specs, cfg: OnPolicyConfig, vmap,
             tag: str) -> pd.DataFrame:
    """Sample cfg.samples_per_prompt answers to prompts[i] for i in `ids` and score them: one row
    per answer with student (prompt ids), completion, sampler_lp, teacher_lp, topk_ids, topk_lp."""
    from distill.engines.scoring import sample_tokens, score_tokens

    student_spec, teacher_spec = specs
    keys = [(i, k) for i in ids for k in range(cfg.samples_per_prompt)]
    req = pd.DataFrame({"request_id": [f"{tag}:{i}:{k}" for i, k in keys],
                        "token_ids": [prompts[i].student for i, _ in keys]})
    got = sample_tokens(student_spec, req).set_index("request_id").loc[req["request_id"]]
    completions = [list(c) for c in got["completion_ids"]]
    teacher_ids = [prompts[i].teacher + vmap.teacher_ids(c) for (i, _), c in zip(keys, completions)]
    scored = score_tokens(teacher_spec, req.assign(token_ids=teacher_ids, start=[
        len(prompts[i].teacher) for i, _ in keys]), cfg.top_k).set_index("request_id")
    scored = scored.loc[req["request_id"]]
    back = dict(zip(vmap.teacher_cols, vmap.student_cols))
    return pd.DataFrame({
        "request_id": req["request_id"], "student": list(req["token_ids"]),
        "completion": completions, "sampler_lp": list(got["completion_logprobs"]),
        "teacher_lp": list(scored["token_logprobs"]),
        "topk_ids": [[[back.get(t, -1) for t in pos] for pos in row] for row in scored["topk_ids"]],
        "topk_lp": list(scored["topk_logprobs"])})


def sampled_estimate(rows: pd.DataFrame, per: int) -> dict:
    """Held-out reverse KL from scored rollouts: mean log s(y) - log t(y) per token, per prompt."""
    sums, counts = [], []
    for start in range(0, len(rows), per):
        part = rows.iloc[start:start + per]
        d = [s - t for a, b in zip(part["sampler_lp"], part["teacher_lp"]) for s, t in zip(a, b)
             if not (math.isnan(s) or math.isnan(t))]
        sums.append(sum(d))
        counts.append(len(d))
    tokens = sum(counts)
    return {"mean": sum(sums) / tokens if tokens else float("nan"), "tokens": tokens,
            "per_prompt": [s / c if c else float("nan") for s, c in zip(sums, counts)],
            "estimator": "sampled"}


def stored_loss(model, batch: list[dict], cfg: OnPolicyConfig):
    """(loss, per-token estimate, mask) on scored rollouts (see the module docstring)."""
    import torch

    from distill.students.onpolicy_batch import _padded, completion_logits
    from distill.students.onpolicy_loss import (
        masked_mean,
        sampled_reverse_kl_loss,
        token_logprobs,
        topk_generalized_jsd,
    )

    completions = [list(b["completion"]) for b in batch]
    s_logits, mask = completion_logits(model, [list(b["student"]) for b in batch], completions)
    s_lp = token_logprobs(s_logits, _padded(completions, mask))

    def pad(key: str) -> torch.Tensor:
        out = torch.zeros(mask.shape, device=mask.device)
        for i, b in enumerate(batch):
            vals = torch.tensor([0.0 if math.isnan(v) else v for v in b[key]])
            out[i, :len(vals)] = vals
        return out

    t_lp = pad("teacher_lp")
    if cfg.estimator == "sampled":
        loss = sampled_reverse_kl_loss(s_lp, t_lp, pad("sampler_lp"))
    else:
        k = cfg.top_k
        ids = torch.zeros(*mask.shape, k, dtype=torch.long, device=mask.device)
        lps = torch.full((*mask.shape, k), float("-inf"), device=mask.device)
        for i, b in enumerate(batch):
            for j, (pos_ids, pos_lp) in enumerate(zip(b["topk_ids"], b["topk_lp"])):
                keep = [(t, v) for t, v in zip(pos_ids, pos_lp) if t >= 0][:k]
                if keep:
                    ids[i, j, :len(keep)] = torch.tensor([t for t, _ in keep])
                    lps[i, j, :len(keep)] = torch.tensor([v for _, v in keep])
        loss = topk_generalized_jsd(s_logits, ids, lps, cfg.beta, valid=lps > float("-inf"))
    return masked_mean(loss, mask), ((s_lp - t_lp) * mask).detach(), mask


def train_round(data: list[dict], cfg: TrainConfig, out_dir: Path, *, progress=None,
                extra_args: dict | None = None, onpolicy: dict, round_end: int) -> dict[str, Any]:
    """Train from the last checkpoint up to step `round_end` on scored rollouts `data` (batches),
    save a checkpoint and the merged model (out_dir/checkpoints/rounds/NNNN/model). Runs in
    this process or on each Ray Train worker (students.ray_train)."""
    from transformers import PrinterCallback, TrainerCallback

    from distill.students.checkpoints import last_checkpoint
    from distill.students.export import save_outputs
    from distill.students.loading import load_model, load_tokenizer
    from distill.students.onpolicy import _trainer_class
    from distill.students.sft import _progress_callback, training_args

    op = OnPolicyConfig.model_validate(onpolicy)
    tokenizer = load_tokenizer(cfg)
    ckpt = Path(out_dir) / "checkpoints"

    class StopAtRoundEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= round_end:
                control.should_save = control.should_training_stop = True

    def step_loss(model, batch, step):
        loss, per_token, mask = stored_loss(model, batch, op)
        return loss, {"divergence": float(per_token.sum() / mask.sum().clamp(min=1)),
                      "on_policy": 1.0, "completion_tokens": float(mask.sum()) / len(batch)}

    args = training_args(cfg, ckpt, **(extra_args or {}))
    args.include_num_input_tokens_seen, args.ignore_data_skip = "no", True
    trainer = _trainer_class()(model=load_model(cfg, tokenizer), args=args, train_dataset=data,
                               processing_class=tokenizer, data_collator=lambda items: items[0],
                               step_loss=step_loss,
                               callbacks=[_progress_callback(progress), StopAtRoundEnd()])
    trainer.remove_callback(PrinterCallback)
    resume = last_checkpoint(ckpt, clean=trainer.is_world_process_zero())
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    save_outputs(trainer, tokenizer, cfg, ckpt / "rounds" / f"{round_end:06d}")
    return {"global_step": trainer.state.global_step,
            "history": [h for h in trainer.state.log_history if "loss" in h]}


def merged_checkpoint(cfg: TrainConfig, checkpoint: Path, out: Path) -> Path:
    """A vLLM-loadable folder of a checkpoint's weights: the checkpoint itself for a full
    fine-tune, else its LoRA adapter merged into the SFT student (written to out/model)."""
    if cfg.method == "full":
        return checkpoint
    from peft import PeftModel

    from distill.students.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(cfg)
    merged = PeftModel.from_pretrained(load_model(cfg, tokenizer, adapter=False),
                                       checkpoint).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out / "model"


def _records(table: pd.DataFrame) -> list[dict]:
    """Parquet rows as plain Python (lists, not numpy arrays) for the Trainer's batches."""
    def plain(v):
        return [plain(x) for x in v] if hasattr(v, "__len__") and not isinstance(v, str) else v

    return [{k: plain(v) for k, v in r.items()} for r in table.to_dict("records")]


def distill_on_policy_vllm(rows: pd.DataFrame, offpolicy, student_dir: str, teacher_dir: str,
                           cfg: OnPolicyConfig, out_dir: Path, *, think_format: str,
                           progress=None):
    """See the module docstring (`offpolicy` is unused: lmbda < 1 is for backend local)."""
    import json
    import random
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    from distill.students.chat import ensure_chat_template
    from distill.students.checkpoints import last_checkpoint
    from distill.students.loading import load_tokenizer
    from distill.students.onpolicy import OnPolicyResult, student_train_config
    from distill.students.onpolicy_batch import encode_prompts
    from distill.students.onpolicy_heldout import paired_change
    from distill.students.onpolicy_vocab import vocab_map
    from distill.students.ray_train import train_with_ray

    out_dir, tcfg = Path(out_dir), student_train_config(cfg, student_dir, think_format)
    ckpt, shards = out_dir / "checkpoints", out_dir / "shards"
    tok, t_tok = load_tokenizer(tcfg), AutoTokenizer.from_pretrained(teacher_dir)
    ensure_chat_template(t_tok)
    vmap = vocab_map(tok, t_tok, teacher_dir)
    prompts = encode_prompts(rows, tok, t_tok)
    held = [i for i, h in enumerate(rows["held_out"]) if h]
    order = [i for i, h in enumerate(rows["held_out"]) if not h]
    random.Random(cfg.seed).shuffle(order)
    eos = GenerationConfig.from_pretrained(student_dir).eos_token_id
    stops = [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]

    def measure(model_dir: str, tag: str) -> dict:
        h = cfg.model_copy(update={"samples_per_prompt": cfg.held_out_samples})
        specs = engine_specs(model_dir, teacher_dir, h, stops, cfg.seed + 7919)
        return sampled_estimate(rollouts(prompts, held, specs, h, vmap, tag), cfg.held_out_samples)

    for d in (ckpt, shards):
        d.mkdir(parents=True, exist_ok=True)
    before_file = ckpt / "reverse_kl_before.json"
    if not before_file.exists():
        before_file.write_text(json.dumps(measure(student_dir, "before")))
    before = json.loads(before_file.read_text())
    last = last_checkpoint(ckpt)
    done = int(last.name.split("-")[-1]) if last else 0
    per_round = cfg.rollout_steps * cfg.prompts_per_step
    batch = cfg.prompts_per_step * cfg.samples_per_prompt
    # one answer per micro-batch; a step accumulates the step's answers over all workers
    tcfg = tcfg.model_copy(update={"gradient_accumulation_steps": max(1, batch // cfg.num_workers)})
    for r in range(done // cfg.rollout_steps, math.ceil(cfg.steps / cfg.rollout_steps)):
        current = student_dir if r == 0 else str(_round_model(tcfg, ckpt, r * cfg.rollout_steps))
        shard = shards / f"round-{r:04d}.parquet"
        if not shard.exists():
            ids = [order[(r * per_round + j) % len(order)] for j in range(per_round)]
            specs = engine_specs(current, teacher_dir, cfg, stops, cfg.seed + r)
            table = rollouts(prompts, ids, specs, cfg, vmap, f"r{r}")
            table.to_parquet(shard.with_suffix(".tmp"))
            shard.with_suffix(".tmp").rename(shard)
        data = [[r] for r in _records(pd.read_parquet(shard))]
        kwargs = {"onpolicy": cfg.model_dump(),
                  "round_end": min((r + 1) * cfg.rollout_steps, cfg.steps)}
        if cfg.num_workers > 1:
            train_with_ray(data, tcfg, out_dir, progress=progress, use_gpu=cfg.use_gpu,
                           run="distill.students.onpolicy_vllm:train_round", run_kwargs=kwargs)
        else:
            train_round(data, tcfg, out_dir, progress=progress, **kwargs)
    final = _round_model(tcfg, ckpt, cfg.steps)
    shutil.rmtree(out_dir / "model.tmp", ignore_errors=True)
    shutil.copytree(final, out_dir / "model.tmp")
    shutil.rmtree(out_dir / "model", ignore_errors=True)
    (out_dir / "model.tmp").rename(out_dir / "model")
    after = measure(str(out_dir / "model"), "after")
    history = json.loads((last_checkpoint(ckpt) / "trainer_state.json").read_text())["log_history"]
    return OnPolicyResult(out_dir / "model", {
        "reverse_kl_before": before["mean"], "reverse_kl_after": after["mean"],
        "reverse_kl_change": paired_change(before, after),
        "held_out": {"prompts": len(held), "samples_per_prompt": cfg.held_out_samples,
                     "tokens_before": before["tokens"], "tokens_after": after["tokens"],
                     "estimator": "sampled"},
        "history": [{k: h[k] for k in ("step", "loss", "divergence", "completion_tokens") if k in h}
                    for h in history if "loss" in h],
        "global_step": cfg.steps, "resumed_from_step": done,
        "rounds": math.ceil(cfg.steps / cfg.rollout_steps)})


def _round_model(cfg: TrainConfig, ckpt: Path, step: int) -> Path:
    """The merged student after `step` steps (exported by train_round, or merged again from the
    checkpoint when a crash came between the two)."""
    folder = ckpt / "rounds" / f"{step:06d}"
    if (folder / "model" / "config.json").exists():
        return folder / "model"
    return merged_checkpoint(cfg, ckpt / f"checkpoint-{step}", folder)
