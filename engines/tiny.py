"""Tiny random-weight students for tests and the smoke recipe, built in-process (no hub).

    from distill.engines.tiny import build_tiny_model
    folder = build_tiny_model("qwen2", tmp_path / "tiny")   # -> Path, loadable by transformers and vLLM

The folder holds a 2-layer model (hidden 128, 2 heads x head_dim 64, 1 KV head so GQA paths run,
max_position_embeddings 4096, vocab rounded up to a multiple of 64) and a byte-level BPE tokenizer
trained here with the `tokenizers` library on a small built-in corpus of math-ish text, with the
ChatML special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), `<think>` / `</think>` as
added (non-special, so decoding keeps them) tokens, and a ChatML chat template. Generation stops
at `<|im_end|>` (generation_config.eos_token_id). Same seed, same folder contents.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]
_PRETOKENIZE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_PHRASES = [
    "Okay, so I need to find", "Let me think about this step by step.", "Wait, that is not right.",
    "Hmm, let me check again.", "So the answer is", "Therefore,", "First, compute", "Then we get",
    "which simplifies to", "The final answer is \\boxed{", "Let x be the number of", "we have",
    "Solve for x:", "the sum of the digits", "the probability that", "a right triangle with legs",
    "the area of the circle is \\pi r^2", "\\frac{a}{b}", "\\sqrt{", "modulo", "prime factor",
]
_WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "integer polynomial equation remainder divided multiply both sides subtract add square cube "
    "root factor factors prime primes divisor divisors multiple multiples least common greatest "
    "triangle rectangle circle radius diameter perimeter area volume angle angles degrees sine "
    "cosine tangent vertex vertices edge edges face faces sphere cylinder cone parallel "
    "perpendicular slope intercept line lines point points coordinate coordinates plane graph "
    "function functions domain range inverse composition sequence series arithmetic geometric ratio "
    "difference term terms sum product quotient fraction fractions decimal percent probability "
    "expected value random chosen coin dice die marbles red blue green balls box boxes ways arrange "
    "arrangements permutations combinations choose committee students teacher class school apples "
    "oranges dollars cents price cost total each per hour hours minutes speed distance time rate "
    "train car walks runs minimum maximum minimize maximize positive negative real complex "
    "imaginary conjugate matrix determinant vector vectors length width height base digit digits "
    "even odd consecutive numbers number counting integers rational irrational expression simplify "
    "evaluate compute calculate determine check verify notice observe recall consider suppose "
    "assume since because hence thus however actually maybe perhaps alternatively similarly another "
    "approach mistake correct wrong careful again carefully substitute substitution solution "
    "solutions solve solving quadratic linear system systems inequality inequalities absolute "
    "logarithm exponent exponential power powers base ten binary modular congruent remainder "
    "theorem lemma proof case cases first second third last next previous original given find show"
).split()


def _corpus(seed: int, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        phrase = rng.choice(_PHRASES)
        words = " ".join(rng.choices(_WORDS, k=rng.randint(4, 12)))
        words2 = " ".join(rng.choices(_WORDS, k=rng.randint(2, 8))).capitalize()
        out.append(f"{phrase} {words} {a} + {b} = {a + b}. {words2}: {a} \\times {b} = {a * b}, "
                   f"so x^{{2}} - {b}x + {a} = 0.")
    return out


def build_tokenizer(seed: int = 0, vocab_size: int = 1400):
    """A transformers fast tokenizer (byte-level BPE, digits split one by one) with ChatML tokens."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Qwen2's pre-tokenizer (digits one by one), so Qwen2Tokenizer, which AutoTokenizer picks for
    # a qwen2 folder and which rebuilds this pipeline, tokenizes exactly like tokenizer.json.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, bos_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _config(arch: str, vocab: int, eos: int, pad: int):
    from transformers import LlamaConfig, Qwen2Config

    shape = {
        "vocab_size": vocab, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "eos_token_id": eos, "pad_token_id": pad,
        "bos_token_id": None, "use_cache": True,
    }
    if arch == "llama":
        return LlamaConfig(**shape)
    if arch == "qwen2":
        return Qwen2Config(**shape)
    raise ValueError(f"build_tiny_model: arch must be 'llama' or 'qwen2', got {arch!r}")


def build_tiny_model(arch: Literal["llama", "qwen2"], out_dir: Path, *, seed: int = 0) -> Path:
    """Build and save a tiny `arch` model + tokenizer into `out_dir`; return `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(seed)
    vocab = -(-len(tokenizer) // 64) * 64
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = _config(arch, vocab, eos, pad)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=[eos], pad_token_id=pad)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
