"""Stage keys: `stage_key(stage, recipe, input_keys, resolvers) -> hex`, one mechanism for all stages.

A stage's `config(recipe)` names the settings it reads (recipe sections, values, `Ref`s). Each
pydantic field says once, where it is declared, how it enters the key:

    workers: int = Field(0, json_schema_extra=RUNTIME)           # never (threads, batch sizes,
                                                                 # concurrency, resources, logging)
    source: str = Field(..., json_schema_extra=fingerprint("prompt_source"))   # by content
    threshold: float = Field(0.8)                                # nothing said: its value

A fingerprinted field enters the key as what the resolver of that kind makes of its value (and
of the model holding it: an HTTP teacher's `model` is an API name, a vLLM teacher's a folder) (a
content digest of the file, the model folder, the hub revision), so editing a file in place
changes the key and moving it does not. Resolvers are plain functions supplied by the workflow
(the engine knows no domain); a kind without a resolver is an error, never silently the path.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

KEY = "distill_key"
RUNTIME: dict[str, str] = {KEY: "runtime"}
Resolvers = Mapping[str, Callable[[Any, Any], Any]]  # (value, the model that holds it)


def fingerprint(kind: str) -> dict[str, str]:
    """`json_schema_extra` for a field that enters keys through the resolver `kind`."""
    return {KEY: kind}


@dataclass(frozen=True)
class Ref:
    """A value a stage reads that is not a field of its own sections, keyed through `kind`
    (e.g. the evaluate stage reads `train.student` as the base model: Ref("model", name))."""

    kind: str
    value: Any


def how_keyed(field: Any) -> str | None:
    """The field's key rule: None (its value), "runtime" (not keyed) or a resolver kind."""
    extra = field.json_schema_extra
    return extra.get(KEY) if isinstance(extra, dict) else None


def _resolve(kind: str, value: Any, owner: Any, resolvers: Resolvers) -> Any:
    if value is None:
        return None
    if kind not in resolvers:
        raise KeyError(f"no key resolver for {kind!r} (have {sorted(resolvers)}); "
                       "the workflow must supply one")
    return resolvers[kind](value, owner)


def key_payload(value: Any, resolvers: Resolvers) -> Any:
    """The JSON-able part of `value` that changes results (see the module docstring)."""
    if isinstance(value, Ref):
        return _resolve(value.kind, value.value, None, resolvers)
    if isinstance(value, BaseModel):
        out = {}
        for name, field in type(value).model_fields.items():
            rule = how_keyed(field)
            if rule == "runtime":
                continue
            v = getattr(value, name)
            out[name] = key_payload(v, resolvers) if rule is None else _resolve(rule, v, value, resolvers)
        return out
    if isinstance(value, Mapping):
        return {str(k): key_payload(v, resolvers) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [key_payload(v, resolvers) for v in value]
    return value


def digest(payload: Any) -> str:
    """sha256 of the canonical JSON of `payload`, hex."""
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def stage_payload(stage: Any, recipe: BaseModel, input_keys: Mapping[str, str],
                  resolvers: Resolvers) -> dict:
    """What a stage's key hashes: name, version, its settings' key payload, its inputs' keys."""
    return {"stage": stage.name, "version": stage.version,
            "config": key_payload(stage.config(recipe), resolvers),
            "inputs": dict(sorted(input_keys.items()))}


def stage_key(stage: Any, recipe: BaseModel, input_keys: Mapping[str, str],
              resolvers: Resolvers) -> str:
    """The stage's key: digest(stage_payload(...))."""
    return digest(stage_payload(stage, recipe, input_keys, resolvers))
