"""The student to train: `load_tokenizer(cfg)`, `load_model(cfg, tokenizer)`.

The tokenizer gets a chat template (ChatML if it had none; the R1 variant forcing `<think>\\n`
for think_format r1); the model gets its attention kernel (students.packing), use_cache off
(packing), its EOS fixed to the end-of-turn token, embeddings resized if the tokenizer grew,
and a LoRA adapter for lora/qlora.
"""
from __future__ import annotations

import os
from typing import Any

from distill.students.chat import ensure_chat_template, fix_eos, r1_generation_template
from distill.students.config import TrainConfig
from distill.students.packing import prepare_for_packing


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
    from transformers import AutoModelForCausalLM

    from distill.students.packing import register_varlen_attention

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
