"""GPU SFT throughput and MFU of a randomly initialised Qwen2.5-1.5B-shaped model, packed batches.

    bash bench/gpu_sft.sh                        # on a CUDA machine (bf16, H100/H200 peak 989)
    .venv/bin/python bench/gpu_sft.py --dry-run  # tiny shape on CPU: checks the script runs

Model: Qwen2Config with Qwen2.5-1.5B's published shape (hidden 1536, 28 layers, 12 heads x 128,
2 KV heads, intermediate 8960, vocab 151936, tied embeddings), random init, fp32 master weights
with bf16 autocast (what the Trainer does for a full fine-tune with bf16), AdamW, gradient
checkpointing (non-reentrant), `use_cache` off. Batches: students.packing -- trace-like
lognormal lengths packed into rows of --budget tokens with restarting position_ids and
cu_seq_lens; attention flash_attention_2 (varlen) when flash-attn is installed, else our
per-sample `sdpa_varlen`.

MFU = achieved model FLOP/s / peak, model FLOPs per step =
    6 * N * tokens  +  6 * n_layers * (n_heads * head_dim) * sum_i(l_i^2)
N: parameters in matmuls (all parameters; an untied input embedding would be left out);
the second term is causal attention (QK^T and AV, forward + backward = 3x forward, half the
l x l scores), l_i the length of each packed sample. Recomputation from gradient checkpointing
is not counted (model FLOPs, not hardware FLOPs). Peak: 989 TFLOP/s dense bf16 (H100/H200 SXM).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

QWEN25_15B = {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                  "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                  "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "tie_word_embeddings": True,
                  "rms_norm_eps": 1e-6}
TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 256, "vocab_size": 2048, "max_position_embeddings": 4096,
            "tie_word_embeddings": True}


def model_flops(n_params: int, cfg, lengths: list[int]) -> float:
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    attn = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * sum(l * l for l in lengths)
    return 6 * n_params * sum(lengths) + attn


def build(args, device):
    import torch
    from distill.students.packing import prepare_for_packing, register_varlen_attention
    from transformers import AutoModelForCausalLM, Qwen2Config

    register_varlen_attention()
    flash = device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
    attn = args.attn or ("flash_attention_2" if flash else "sdpa_varlen")
    cfg = Qwen2Config(**(TINY if args.dry_run else QWEN25_15B), use_cache=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32,
                                                 attn_implementation=attn)
    prepare_for_packing(model)
    if not args.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model, cfg, attn


def batches(args, vocab: int):
    """Packed rows of trace-like random sequences, as lists of examples."""
    from distill.students.packing import pack_rows

    rng = np.random.default_rng(0)
    need = args.budget * (args.steps + args.warmup) * 2
    lengths: list[int] = []
    while sum(lengths) < need:
        lengths.append(int(np.clip(rng.lognormal(np.log(args.median), 0.8), 64, args.max_len)))
    rows = pack_rows(lengths, args.budget)
    rows.sort(key=lambda r: -sum(lengths[i] for i in r))  # fullest rows first
    for row in rows[: args.steps + args.warmup]:
        yield [{"input_ids": (ids := rng.integers(10, vocab - 10, lengths[i]).tolist()),
                "labels": ids} for i in row]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shape, any device")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget", type=int, default=32768, help="tokens per packed row (one step)")
    p.add_argument("--median", type=int, default=4096, help="median sample length")
    p.add_argument("--max-len", type=int, default=32768)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--attn", default=None, help="force an attention implementation")
    p.add_argument("--no-checkpointing", action="store_true")
    args = p.parse_args()
    import torch
    from distill.students.packing import collate

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        sys.exit("no CUDA GPU: run with --dry-run for the tiny CPU check")
    if args.dry_run:
        args.budget, args.median, args.max_len = min(args.budget, 512), min(args.median, 96), 512
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    model, cfg, attn = build(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    tokens = flops = seconds = 0.0
    for step, examples in enumerate(batches(args, cfg.vocab_size)):
        batch = {k: v.to(device) if hasattr(v, "to") else v
                 for k, v in collate("packed", examples, pad_id=0).items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            lengths = [len(e["input_ids"]) for e in examples]
            seconds += time.perf_counter() - start
            tokens += sum(lengths)
            flops += model_flops(n_params, cfg, lengths)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    print(f"model {n_params / 1e9:.3f}B params, attention {attn}, device {device}, "
          f"checkpointing {not args.no_checkpointing}, peak memory {mem:.1f} GiB")
    print(f"{args.steps} steps x {args.budget} token budget: {tokens:.0f} tokens in {seconds:.2f} s, "
          f"loss {loss.item():.3f}")
    print(f"tokens/s {tokens / seconds:.0f}  model TFLOP/s {flops / seconds / 1e12:.3g}")
    print(f"MFU {flops / seconds / 1e12 / args.peak_tflops:.2%} of {args.peak_tflops:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
