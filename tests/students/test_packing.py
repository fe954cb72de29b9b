"""Batch planning, collation, and the leak check: a batch's logits, loss and gradients equal
those of each sample run alone, on every path we ship (Llama and Qwen2; sdpa, eager and our
sdpa_varlen; packed, grouped and padded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from distill.students.packing import (
    collate,
    group_by_length,
    pack_rows,
    padded_batches,
    plan_batches,
    prepare_for_packing,
    register_varlen_attention,
)
from transformers import AutoModelForCausalLM

TOL = 1e-4
LENGTHS = [37, 5, 120, 64, 1, 90, 2, 48]


def _lognormal(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(np.log(300), 0.9, n), 8, 4000)]


def test_pack_rows_places_every_sample_once_within_budget_and_fills_rows():
    lengths = _lognormal(3000)
    rows = pack_rows(lengths, 4096)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 4096 for r in rows)
    lower_bound = -(-sum(lengths) // 4096)
    assert len(rows) <= lower_bound + 2  # best-fit decreasing is near-optimal here
    with pytest.raises(ValueError, match="more than the token budget"):
        pack_rows([10, 5000], 4096)


def test_grouped_batches_respect_the_budget_and_pad_less_than_random():
    lengths = _lognormal(2000)
    grouped = group_by_length(lengths, 8192)
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 8192 for b in grouped)

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b)
                   for b in batches) / sum(lengths)

    assert padding(grouped) < 0.05
    assert padding(padded_batches(lengths, 8, seed=0)) > 0.5
    assert plan_batches(lengths, mode="padded", token_budget=8192, batch_size=8, seed=0) == \
        padded_batches(lengths, 8, seed=0)


def _examples(seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in LENGTHS:
        ids = torch.randint(3, 1300, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    return out


def test_packed_collate_restarts_positions_and_separates_labels():
    exs = _examples()
    b = collate("packed", exs, pad_id=0)
    assert b["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in b
    starts = np.cumsum([0] + LENGTHS[:-1])
    assert b["position_ids"][0, starts].tolist() == [0] * len(LENGTHS)
    assert (b["labels"][0, starts] == -100).all()
    assert b["cu_seq_lens_q"].tolist() == list(np.cumsum([0] + LENGTHS))
    assert b["max_length_q"] == max(LENGTHS)
    padded = collate("padded", exs, pad_id=0)
    assert padded["attention_mask"].sum().item() == sum(LENGTHS)
    assert (padded["labels"][padded["attention_mask"] == 0] == -100).all()


def _model(path, attn: str):
    register_varlen_attention()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn,
                                                 dtype=torch.float32)
    model.train()  # training mode (dropout is 0 in the tiny configs): where the leak was seen
    return model


def _alone(model, exs):
    """Per-sample logits, summed token losses, and the gradient of the mean loss."""
    model.zero_grad()
    logits, total, count = [], 0.0, 0
    for e in exs:
        out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
        n = sum(lab != -100 for lab in e["labels"][1:])
        logits.append(out.logits[0].detach())
        if n:
            total = total + out.loss * n
            count += n
    (total / count).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    return logits, (total / count).item(), grads


def _together(model, exs, mode):
    model.zero_grad()
    out = model(**collate(mode, exs, pad_id=0))
    out.loss.backward()
    if mode == "packed":
        logits = list(torch.split(out.logits[0].detach(), LENGTHS))
    else:
        logits = [out.logits[i, :n].detach() for i, n in enumerate(LENGTHS)]
    return logits, out.loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager", "sdpa_varlen"])
def test_batch_equals_each_sample_alone(tiny_models, arch, attn):
    model = _model(tiny_models[arch], attn)
    prepare_for_packing(model)
    exs = _examples()
    ref_logits, ref_loss, ref_grads = _alone(model, exs)
    for mode in ["packed", "grouped", "padded"]:
        logits, loss, grads = _together(model, exs, mode)
        diff = max((a - b).abs().max().item() for a, b in zip(logits, ref_logits))
        assert diff < TOL, f"{arch}/{attn}/{mode}: logits differ by {diff:.3g}"
        assert loss == pytest.approx(ref_loss, abs=TOL), f"{arch}/{attn}/{mode}: loss"
        gdiff = max((grads[k] - ref_grads[k]).abs().max().item() for k in grads)
        assert gdiff < TOL, f"{arch}/{attn}/{mode}: gradients differ by {gdiff:.3g}"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_the_check_catches_the_use_cache_leak(tiny_models, arch):
    """transformers 5.19 ignores restarting position_ids while a KV cache is built: without
    prepare_for_packing, packed samples see each other. The harness above would fail."""
    model = _model(tiny_models[arch], "sdpa")
    model.config.use_cache = True
    exs = _examples()
    ref_logits, _, _ = _alone(model, exs)
    logits, _, _ = _together(model, exs, "packed")
    assert max((a - b).abs().max().item() for a, b in zip(logits, ref_logits)) > 1e-2
    prepare_for_packing(model)
    assert model.config.use_cache is False
