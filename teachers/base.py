"""The teacher interface and registry: `make_teacher(cfg, seed).generate(requests)`.

A teacher turns request rows (`request_id`, `messages`) into result frames (`request_id`,
`text`, `reasoning`, `prompt_tokens`, `completion_tokens`, `finish_reason`, `error`), yielded
as they finish so the generate stage can write each one as a shard.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Callable, Protocol

import pandas as pd

from distill.engines.models import resolve_model
from distill.teachers.config import TeacherConfig


class Teacher(Protocol):
    def generate(self, requests: pd.DataFrame) -> Iterator[pd.DataFrame]: ...


class VLLMTeacher:
    """A teacher served by vLLM engines through Ray Data LLM (local or on a cluster)."""

    def __init__(self, cfg: TeacherConfig, seed: int):
        from distill.engines.vllm import EngineSpec

        self.cfg = cfg
        self.model = resolve_model(cfg.model)
        self.spec = EngineSpec(model=self.model, sampling=cfg.sampling, seed=seed, engine=cfg.engine,
                               device=cfg.device, batch_size=cfg.batch_size,
                               concurrency=cfg.concurrency, accelerator_type=cfg.accelerator_type,
                               max_concurrent_batches=cfg.max_concurrent_batches)

    def generate(self, requests: pd.DataFrame) -> Iterator[pd.DataFrame]:
        from distill.engines.vllm import VLLMGenerator, render_prompts

        prompts = render_prompts(self.model, list(requests["messages"]), force_think=self.cfg.force_think)
        frame = pd.DataFrame({"request_id": requests["request_id"].to_numpy(), "prompt": prompts})
        for out in VLLMGenerator(self.spec).generate(frame, block_rows=self.cfg.shard_rows):
            out["reasoning"] = None  # vLLM returns one text; curate splits <think> from it
            if self.cfg.force_think:
                out["text"] = "<think>\n" + out["text"]  # the prefilled tag is part of the trace
            yield out


def _http_teacher(cfg: TeacherConfig, seed: int) -> Teacher:
    from distill.teachers.openai_http import HttpTeacher

    return HttpTeacher(cfg, seed)


TEACHERS: dict[str, Callable[[TeacherConfig, int], Teacher]] = {
    "vllm": VLLMTeacher,
    "openai": _http_teacher,
}


def make_teacher(cfg: TeacherConfig, seed: int) -> Teacher:
    return TEACHERS[cfg.backend](cfg, seed)


def sampling_reproducibility(cfg: TeacherConfig, seed: int) -> tuple[bool, str]:
    """(whether the recipe's `seed` reproduces this teacher's samples, why): for the manifest."""
    if cfg.backend == "openai":
        return True, ("each request carries request_seed(seed, request_id): the samples repeat "
                      "where the server honours per-request seeds (vLLM, SGLang; not every API)")
    from distill.engines.vllm import EngineSpec

    return EngineSpec(model=cfg.model, sampling=cfg.sampling, seed=seed,
                      device=cfg.device).reproducible()
