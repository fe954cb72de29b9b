"""The trained student on disk: `save_outputs(trainer, tokenizer, cfg, out_dir)`.

out_dir/model is loadable with from_pretrained (for LoRA the adapter merged into an exact fp32
base), in the base model's dtype, with the tokenizer, its chat template and use_cache on;
out_dir/adapter holds the LoRA/QLoRA adapter. Both are written under a temporary name and
renamed, so a crash never leaves half a model.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from distill.students.config import TrainConfig
from distill.students.loading import load_model, load_tokenizer


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
