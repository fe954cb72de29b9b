"""The generate stage's rows on Ray: shards written by the workers, the output assembled by them.

    for line in write_on_workers(teacher.dataset(pending, carry=("request_key",)), cache): ...
    for line in write_here(teacher.generate(pending), cache): ...   # a teacher in this process
    counts, extra = assemble_on_ray(requests, cache, out_dir, teacher_cfg)

1. Answers: each block of the vLLM processor's results is written as one trace cache shard by
   the Ray task that finished it (trace_cache.write_block: named by its request keys, written
   under a temporary name and renamed, its writer in the file's metadata); the driver gets one
   line per shard (rows, tokens, node, pid) for progress. A teacher that answers in this
   process (the HTTP client) writes its shards here, batch by batch.
2. Output: the driver plans, from the key and error columns of the cache (TraceCache.index),
   which shard holds each request's answer, sorts the requests by (prompt_id, sample_index)
   and cuts them into parts of PART_ROWS; on the workers each part reads its answers from their
   shards, adds teacher, cost, keep and reject_reason, and is written as data/ and rejected/
   part-<n>.parquet (pipeline.accounting.split_and_write_ray). The counts and totals (tokens,
   finish reasons) are those of the parts written. The driver never holds a trace's text.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from distill.pipeline.accounting import frame_types, split_and_write_ray
from distill.pipeline.cluster import light_task_args, writer_identity
from distill.workflows.trace_cache import (
    ANSWER_COLUMNS,
    TraceCache,
    read_answers,
    shard_line,
    write_block,
)

PART_ROWS = 8192   # rows per output part
PART, SHARD = "_part", "_shard"
ANSWER_TYPES = {"request_key": pa.string(), "request_id": pa.string(), "text": pa.string(),
                "reasoning": pa.string(), "prompt_tokens": pa.int64(),
                "completion_tokens": pa.int64(), "finish_reason": pa.string(),
                "error": pa.string(), "teacher": pa.string(), "cost": pa.float64()}
FINISH = "finish_reason:"


def write_on_workers(ds: Any, cache: TraceCache) -> Iterator[dict]:
    """Write each block of `ds` (teacher results with `request_key`) as one cache shard on the
    worker that made it; yield one line per shard as it is written."""
    lines = ds.map_batches(write_block, fn_kwargs={"folder": str(cache.folder)},
                           batch_format="pandas", batch_size=None, **light_task_args())
    for batch in lines.iter_batches(batch_format="pandas", batch_size=None):
        yield from (line for line in batch.to_dict("records") if line["rows"])
    cache.remove_temporary()   # a killed worker's unfinished write


def write_here(frames: Iterable[pd.DataFrame], cache: TraceCache, keys: dict[str, str]) -> Iterator[dict]:
    """Write each result frame (`request_id` -> `request_key` by `keys`) as one shard, in this
    process; yield one line per shard."""
    who = writer_identity()
    for out in frames:
        out = out.assign(request_key=out["request_id"].map(keys))
        out = out[[c for c in ANSWER_COLUMNS if c in out.columns]]
        line = shard_line(cache.write(out), out, who).to_dict("records")[0]
        if line["rows"]:
            yield line


def _traces(rows: pd.DataFrame, *, folder: str, model: str, prices: tuple[float, float]) -> pd.DataFrame:
    """One part, on a worker: its requests joined with their answers, in canonical order, with
    teacher, cost and the teacher_error flag."""
    answers = read_answers(folder, rows[["request_key", SHARD]].rename(columns={SHARD: "shard"}))
    answers = answers.drop(columns=[c for c in rows.columns if c != "request_key" and c in answers.columns])
    traces = rows.drop(columns=[SHARD]).merge(answers, on="request_key", how="left",
                                              validate="one_to_one", indicator=True)
    if (traces["_merge"] != "both").any():
        raise RuntimeError(f"generate: {int((traces['_merge'] != 'both').sum())} answers vanished "
                           f"from the trace cache {folder} while the stage ran")
    traces = traces.drop(columns=["_merge"]).sort_values(["prompt_id", "sample_index"], kind="stable",
                                                          ignore_index=True)
    traces["teacher"] = model
    traces["cost"] = (traces["prompt_tokens"] * prices[0] + traces["completion_tokens"] * prices[1]) / 1e6
    reason = traces["error"].map(lambda e: None if e is None or pd.isna(e) else "teacher_error")
    traces["reject_reason"] = reason.astype(object)
    traces["keep"] = reason.isna()
    return traces


def _stats(rows: pd.DataFrame) -> dict:
    out = {"prompt_tokens": int(rows["prompt_tokens"].sum()),
           "completion_tokens": int(rows["completion_tokens"].sum())}
    out.update({FINISH + str(k): int(v) for k, v in rows["finish_reason"].value_counts().items()})
    return out


def assemble_on_ray(requests: pd.DataFrame, cache: TraceCache, out_dir: Path, teacher: Any,
                    part_rows: int = PART_ROWS) -> tuple[dict, dict]:
    """Write the stage's data/ and rejected/ from the cache on the running Ray (see the module
    docstring); returns (counts, extra for the manifest). Raises DistillError when a request
    has no answer."""
    import ray

    plan = requests.drop(columns=[c for c in ("messages",) if c in requests.columns])
    plan = plan.sort_values(["prompt_id", "sample_index"], kind="stable", ignore_index=True)
    plan[SHARD] = cache.answer_shards(plan).to_numpy()
    plan[PART] = (np.arange(len(plan)) // part_rows).astype("int64")
    parts = max(1, math.ceil(len(plan) / part_rows))
    types = {name: pa.string() if t == pa.large_string() else t
             for name, t in frame_types(plan.drop(columns=[SHARD, PART])).items()} | ANSWER_TYPES
    ds = ray.data.from_pandas([plan.iloc[i:i + part_rows] for i in range(0, len(plan), part_rows)]
                              or [plan])   # a block per part: the parts need no shuffle
    prices = (teacher.cost_per_million_input, teacher.cost_per_million_output)
    counts, totals = split_and_write_ray(
        ds, out_dir, len(plan), part_column=PART, parts=parts, stats=_stats, types=types,
        aligned=True,
        finish=partial(_traces, folder=str(cache.folder), model=teacher.model, prices=prices))
    finish = {k.removeprefix(FINISH): v for k, v in totals.items() if k.startswith(FINISH)}
    prompt_tokens, completion_tokens = totals.get("prompt_tokens", 0), totals.get("completion_tokens", 0)
    extra = {
        "parts": parts, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "finish_reasons": dict(sorted(finish.items(), key=lambda kv: (-kv[1], kv[0]))),
        "cost": (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6,
        "part_writers": totals.get("writers", []),
    }
    return counts, extra
