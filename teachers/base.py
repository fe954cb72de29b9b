"""The teacher interface and registry: `make_teacher(cfg, seed).generate(requests)`.

A teacher turns request rows (`request_id`, `messages`) into result frames (`request_id`,
`text`, `reasoning`, `prompt_tokens`, `completion_tokens`, `finish_reason`, `error`), yielded
as they finish so the generate stage can write each one as a shard. A teacher that runs on Ray
(vLLM) also offers `dataset(requests, carry)`: the same frames as a Ray Dataset, whose blocks the
generate stage writes on the workers that made them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pandas as pd

from distill.engines.models import resolve_model
from distill.pipeline.cluster import light_task_args
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
        ds = self.dataset(requests)
        if ds is not None:
            yield from ds.iter_batches(batch_format="pandas", batch_size=None)

    def dataset(self, requests: pd.DataFrame, carry: tuple[str, ...] = ()) -> Any:
        """The result frames as a Ray Dataset (None for no requests), finished on the workers:
        a caller writes each block where it was made. `carry`: request columns passed through
        to the results unchanged."""
        from distill.engines.vllm import VLLMGenerator, render_prompts

        prompts = render_prompts(self.model, list(requests["messages"]), force_think=self.cfg.force_think)
        frame = pd.DataFrame({"request_id": requests["request_id"].to_numpy(), "prompt": prompts,
                              **{c: requests[c].to_numpy() for c in carry}})
        ds = VLLMGenerator(self.spec).dataset(frame, block_rows=self.cfg.shard_rows, carry=carry)
        if ds is None:
            return None
        return ds.map_batches(_as_trace, fn_kwargs={"force_think": self.cfg.force_think},
                              batch_format="pandas", batch_size=None, **light_task_args())


def _as_trace(out: pd.DataFrame, force_think: bool) -> pd.DataFrame:
    """vLLM's result block as a teacher's: `reasoning` None (vLLM returns one text; curate splits
    <think> from it), and with force_think the prefilled tag put back (it is part of the trace)."""
    out = out.assign(reasoning=pd.Series([None] * len(out), index=out.index, dtype=object))
    if force_think:
        out["text"] = "<think>\n" + out["text"]
    return out


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
