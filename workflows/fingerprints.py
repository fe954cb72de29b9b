"""The key resolvers of the distillation workflow: `resolvers(recipe_dir)` for pipeline.keys.

Each kind turns a setting into what the stage key holds instead of its literal value:

| kind               | setting                                   | key holds                         |
|--------------------|-------------------------------------------|-----------------------------------|
| prompt_source      | prompts.source, evaluate.benchmarks[].source | the file's bytes / bundled rows |
| files              | curate.decontam.extra_paths                | each file's bytes, in order      |
| bundled_benchmarks | curate.decontam.benchmarks                 | each bundled file's bytes        |
| model              | teacher.model, train.student, ...          | folder content / hub commit / API name |
| device             | teacher.device                             | auto made concrete (cpu, cuda); none for HTTP |
| engine_args        | teacher.engine, evaluate.engine            | the args that change results; none for HTTP |
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.pipeline.keys import Resolvers


def _http(owner: Any) -> bool:
    """An HTTP teacher: no local engine, so device and engine arguments do not apply."""
    return getattr(owner, "backend", "vllm") == "openai"


def _model(name: str, owner: Any) -> Any:
    from distill.engines.models import model_fingerprint

    if _http(owner):
        return {"api_model": name}  # an HTTP teacher's model is whatever the endpoint serves
    return model_fingerprint(name)


def resolvers(recipe_dir: Path | None) -> Resolvers:
    """The resolvers for recipes read from `recipe_dir` (relative paths resolve against the
    current directory first, then the recipe's folder, as everywhere else)."""
    from distill.data.benchmarks import benchmark_path
    from distill.data.prompts import resolve_path, source_fingerprint
    from distill.engines.vllm import resolved_device, result_engine_args
    from distill.pipeline.fingerprint import file_digest

    return {
        "prompt_source": lambda v, _: source_fingerprint(v, recipe_dir),
        "files": lambda v, _: [file_digest(resolve_path(p, recipe_dir)) for p in v],
        "bundled_benchmarks": lambda v, _: {n: file_digest(benchmark_path(n)) for n in v},
        "model": _model,
        "device": lambda v, owner: None if _http(owner) else resolved_device(v),
        "engine_args": lambda v, owner: None if _http(owner) else result_engine_args(v),
    }
