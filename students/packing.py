"""Batching for SFT on long, long-tailed traces: plan batches once, collate them, attend per sample.

    plan = plan_batches(lengths, mode="packed", token_budget=32768)   # list of lists of indices
    batch = collate(mode, [examples[i] for i in plan[0]], pad_id=0)   # tensors for model(**batch)

Modes (TrainConfig.batching):
- "packed": padding-free. Samples are bin-packed (best-fit decreasing) into rows of at most
  `token_budget` tokens; a batch is one row, `[1, T]`, with `position_ids` restarting at 0 for
  every sample, the first label of every sample set to -100 (transformers'
  DataCollatorWithFlattening), and `cu_seq_lens_q/k` + `max_length_q/k` for varlen kernels.
  Attention must stay inside each sample; what does that depends on the kernel:
  * `flash_attention_2` (GPU, flash-attn installed): varlen over `cu_seq_lens`.
  * `sdpa_varlen` (ours, registered by `register_varlen_attention`): one causal SDPA call per
    sample; no L x L mask, cost sum(l_i^2) instead of T^2. The default for packed batches where
    flash-attn is missing (CPU, or a GPU without it).
  * `sdpa` / `eager`: transformers builds a block-diagonal 4D mask from the restarting
    `position_ids` -- only when no KV cache is built, so the model must run with
    `config.use_cache = False` (`prepare_for_packing`); otherwise samples silently attend to each
    other (transformers 5.19; see DESIGN.md). Correct but O(T^2).
- "grouped": padded batches of similar length (sorted by length), `batch x longest <= budget`.
- "padded": random order, `batch_size` samples padded to the longest (the plain baseline).
"""
from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Any

MODES = ("packed", "grouped", "padded")
VARLEN_ATTENTION = "sdpa_varlen"


def pack_rows(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Best-fit decreasing: indices grouped into rows whose lengths sum to <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    free: dict[int, list[int]] = {}  # remaining capacity -> row numbers with that capacity
    caps: list[int] = []  # sorted distinct capacities present in `free`
    for i in order:
        n = lengths[i]
        if n > budget:
            raise ValueError(f"sample {i} has {n} tokens, more than the token budget {budget}")
        k = bisect.bisect_left(caps, n)
        if k < len(caps):
            cap = caps[k]
            row = free[cap].pop()
            if not free[cap]:
                del free[cap]
                caps.pop(k)
        else:
            cap, row = budget, len(rows)
            rows.append([])
        rows[row].append(i)
        left = cap - n
        if left > 0:
            if left not in free:
                free[left] = []
                bisect.insort(caps, left)
            free[left].append(row)
    return rows


def group_by_length(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Length-sorted padded batches: consecutive samples while count x longest <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def padded_batches(lengths: Sequence[int], batch_size: int, seed: int = 0) -> list[list[int]]:
    """Random order, fixed batch size (the baseline)."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def plan_batches(lengths: Sequence[int], *, mode: str, token_budget: int,
                 batch_size: int | None = None, seed: int = 0) -> list[list[int]]:
    """Batches (lists of sample indices) for `mode`; the Trainer shuffles their order."""
    if mode == "packed":
        return pack_rows(lengths, token_budget)
    if mode == "grouped":
        return group_by_length(lengths, token_budget)
    if mode == "padded":
        return padded_batches(lengths, batch_size or max(1, token_budget // max(lengths)), seed)
    raise ValueError(f"batching must be one of {MODES}, got {mode!r}")


def batch_tokens(mode: str, lengths: Sequence[int]) -> tuple[int, int]:
    """(real tokens, padding tokens) of one batch with these sample lengths."""
    real = sum(lengths)
    return real, 0 if mode == "packed" else len(lengths) * max(lengths) - real


def collate(mode: str, examples: Sequence[dict[str, Any]], *, pad_id: int) -> dict[str, Any]:
    """Tensors for one batch of examples (dicts with input_ids and labels)."""
    import torch

    if mode == "packed":
        from transformers import DataCollatorWithFlattening

        flat = DataCollatorWithFlattening(return_flash_attn_kwargs=True, separator_id=-100)
        return flat([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.as_tensor(e["input_ids"])
        labels[row, :n] = torch.as_tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def prepare_for_packing(model) -> None:
    """Turn the KV cache off in training: with it on, transformers 5.19 ignores the restarting
    position_ids when building the mask and packed samples attend to each other."""
    model.config.use_cache = False


_BOUNDS: list = [None, None]  # (cu_seq_lens tensor, its python list): one sync per forward


def _bounds(cu, position_ids) -> list[int] | None:
    if cu is None and position_ids is not None and position_ids.shape[0] == 1:
        import torch

        starts = (position_ids[0] == 0).nonzero().flatten()
        cu = torch.cat([starts, starts.new_tensor([position_ids.shape[1]])])
    if cu is None:
        return None
    if _BOUNDS[0] is not cu:
        _BOUNDS[:] = [cu, [int(x) for x in cu.tolist()]]
    return _BOUNDS[1]


def sdpa_varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                          scaling: float | None = None, **kwargs):
    """Causal SDPA run once per packed sample (bounds from cu_seq_lens_q or position_ids)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = None if query.shape[0] != 1 else _bounds(kwargs.get("cu_seq_lens_q"),
                                                      kwargs.get("position_ids"))
    if attention_mask is not None and attention_mask.dim() == 2:  # padded batch: causal & keys
        n = query.shape[2]
        causal = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
        attention_mask = causal[None, None] & attention_mask[:, None, None, -n:].bool()
    if attention_mask is not None or bounds is None or len(bounds) <= 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    sizes = [e - s for s, e in itertools.pairwise(bounds)]
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    # split (not slicing): its backward is one cat, not a zero-filled full tensor per sample
    out = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa)
        for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2))
    ], dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_varlen_attention() -> str:
    """Register `sdpa_varlen` with transformers (idempotent); returns the name for
    `attn_implementation=`. Its mask hook is FA2's: None unless there is padding."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN_ATTENTION, sdpa_varlen_attention)
    AttentionMaskInterface.register(VARLEN_ATTENTION, flash_attention_mask)
    return VARLEN_ATTENTION
