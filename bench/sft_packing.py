"""Real (non-padding) SFT tokens per second: our packed batching vs random padded batches.

    .venv/bin/python bench/sft_packing.py                 # about 1-2 minutes on this CPU
    .venv/bin/python bench/sft_packing.py --samples 64 --arms packed,packed_sdpa,grouped,padded

Same run, same randomly initialised small Llama (4 layers, hidden 256, 4 heads x 64, 2 KV heads),
same data: `--samples` token sequences with long-tailed lengths like real traces (lognormal around
`--median` tokens, clipped at 8x the median), one epoch each, i.e. the same real tokens. Each arm
is a full fine-tune (fp32, AdamW) of its own copy of the model, loaded and batched exactly as
students.sft does it (load_model, plan_batches, collate, the attention it resolves); the
transformers Trainer around it adds the same overhead to every arm, so it is left out. The arms
run interleaved, step by step, the one with the fewest real tokens done going next, so a busy
shared machine slows them alike; each arm's time is the sum of its own steps.
Arms: packed (padding-free rows of --budget tokens, per-sample attention `sdpa_varlen`),
packed_sdpa (same rows, transformers' block-diagonal 4D mask), grouped (length-sorted padded
batches within the budget), padded (random order, --batch-size samples padded to the longest:
the baseline). Before timing, the leak check: logits of one packed row must equal each sample
run alone (max abs diff printed; the bench stops if it exceeds 1e-4).
Prints one line per arm and, last, the ratio packed / padded tokens per second.
One torch thread by default: on a shared 2-core machine, two OpenMP threads per process stall on
each other when other jobs run (10x slower steps measured), which swamps the comparison; on a
quiet machine `--threads 0` (torch's default) gave the same ratio (3.0x).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def build_model(folder: Path, vocab: int = 2048) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from distill.engines.tiny import build_tokenizer

    tok = build_tokenizer(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=64, max_position_embeddings=8192, tie_word_embeddings=True,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tok.save_pretrained(folder)


def make_data(n: int, median: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.75, n), 32, 8 * median).astype(int)
    data = []
    for n_tok in lengths:
        ids = rng.integers(10, 1300, n_tok).tolist()
        prompt = min(64, n_tok // 4)
        data.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return data


def leak_check(folder: Path, data: list[dict], budget: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    from distill.students.packing import (
        collate,
        pack_rows,
        prepare_for_packing,
        register_varlen_attention,
    )

    register_varlen_attention()
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa_varlen")
    prepare_for_packing(model)
    row = [data[i] for i in pack_rows([len(d["input_ids"]) for d in data], budget)[-1]]
    with torch.no_grad():
        packed = model(**collate("packed", row, pad_id=0)).logits[0]
        parts = torch.split(packed, [len(d["input_ids"]) for d in row])
        return max((p - model(input_ids=torch.tensor([d["input_ids"]])).logits[0]).abs().max().item()
                   for p, d in zip(parts, row))


ARMS = {  # name -> TrainConfig overrides
    "packed": {"batching": "packed"},
    "packed_sdpa": {"batching": "packed", "attn_implementation": "sdpa"},
    "grouped": {"batching": "grouped"},
    "padded": {"batching": "padded"},
}


class Arm:
    """One training run: its own copy of the model, optimizer, and planned batches."""

    def __init__(self, name: str, folder: Path, data: list[dict], args):
        import random

        import torch

        from distill.students.config import TrainConfig
        from distill.students.loading import load_model, load_tokenizer
        from distill.students.packing import plan_batches

        over = dict(ARMS[name])
        if over["batching"] == "padded":
            over["batch_size"] = args.batch_size
        self.cfg = TrainConfig(student=str(folder), method="full", max_length=8 * args.median,
                               per_device_batch_tokens=args.budget, bf16=False, **over)
        self.name, self.data = name, data
        self.model = load_model(self.cfg, load_tokenizer(self.cfg)).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        lengths = [len(d["input_ids"]) for d in data]
        self.plan = plan_batches(lengths, mode=self.cfg.batching, token_budget=args.budget,
                                 batch_size=self.cfg.batch_size, seed=args.seed)
        random.Random(args.seed).shuffle(self.plan)  # the Trainer shuffles batch order too
        self.next = self.real = self.padding = 0
        self.verbose = args.verbose
        self.seconds = 0.0

    def batch(self, i: int) -> dict:
        from distill.students.packing import collate

        return collate(self.cfg.batching, [self.data[j] for j in self.plan[i]], pad_id=0)

    def step(self, timed: bool = True) -> None:
        import time

        batch = self.batch(self.next if timed else 0)
        start = time.perf_counter()
        self.model(**batch).loss.backward()
        if timed:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if not timed:
            return
        took = time.perf_counter() - start
        self.seconds += took
        real = sum(len(self.data[j]["input_ids"]) for j in self.plan[self.next])
        if self.verbose:
            print(f"  {self.name} step {self.next}: {tuple(batch['input_ids'].shape)} "
                  f"{real} real tokens {took:.2f} s")
        self.real += real
        self.padding += batch["input_ids"].numel() - real
        self.next += 1

    @property
    def done(self) -> bool:
        return self.next == len(self.plan)


def train_interleaved(arms: list[Arm]) -> None:
    """One epoch per arm; always step the arm with the fewest real tokens done, so every arm
    sees the same load on a shared machine over the same stretch of time."""
    for arm in arms:
        arm.step(timed=False)  # warm-up, not counted
    while not all(a.done for a in arms):
        min((a for a in arms if not a.done), key=lambda a: a.real).step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--median", type=int, default=256, help="median sequence length (tokens)")
    p.add_argument("--budget", type=int, default=4096, help="tokens per packed/grouped batch")
    p.add_argument("--batch-size", type=int, default=8, help="samples per padded batch")
    p.add_argument("--arms", default="packed,padded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print every step")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default, one per core)")
    args = p.parse_args()
    arms = args.arms.split(",")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not {"packed", "padded"} <= set(arms):
        sys.exit("--arms must include packed and padded (the ratio compares them)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_model(work / "model")
        data = make_data(args.samples, args.median, args.seed)
        lengths = [len(d["input_ids"]) for d in data]
        print(f"data: {len(data)} sequences, {sum(lengths)} tokens, median "
              f"{int(np.median(lengths))}, p99 {int(np.percentile(lengths, 99))}, max {max(lengths)}")
        diff = leak_check(work / "model", data, args.budget)
        print(f"leak check (packed row vs samples alone, sdpa_varlen): max |logit diff| {diff:.2e}")
        if diff > 1e-4:
            sys.exit("leak check failed: packed samples see each other")
        runs = [Arm(name, work / "model", data, args) for name in arms]
        train_interleaved(runs)
        speed = {}
        for a in runs:
            speed[a.name] = a.real / a.seconds
            print(f"{a.name:12s} steps {a.next:4d}  real tokens {a.real:7d}  padding "
                  f"{a.padding / (a.real + a.padding):5.1%}  {a.seconds:6.1f} s  "
                  f"{speed[a.name]:7.0f} real tok/s  ({a.model.config._attn_implementation})")
    print(f"packed / padded real tokens per second: {speed['packed'] / speed['padded']:.2f}x")


if __name__ == "__main__":
    main()
