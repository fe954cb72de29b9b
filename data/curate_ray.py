"""The curate stage on Ray Data: `curate_on_ray(traces_dir, cfg, out_dir) -> (counts, extra)`.

    counts, extra = curate_on_ray(gen_dir / "data", cfg, out_dir, judge=None)

The same rules as data.curate.curate, with the rows on the workers; the driver plans, holds
object references, small tables of flagged ids, and one line per written part:
0.   opt-in (verify.majority_reference): the rows without a reference are parsed and grouped
     by prompt_id; each group's majority answer goes into a broadcast table (data.majority).
1-4. work items of Parquet row slices (pipeline.slices) -> `map_batches`, each task reading its
     rows and running the rules (function UDFs: math-verify's alarm needs a task's main
     thread; each verification under its own timeout): parse, verify, the R1 filters, and
     decontamination. Its eval problems are read once, by the driver (a missing extra_paths file
     fails there, before any task), and broadcast; each worker process builds the n-gram index
     from them once (0.06 s for the bundled benchmarks; each worker holds its own copy, so a
     very large extra_paths set costs its n-grams per worker). A separate task building it took a
     worker of its own and ~1 s of CPU for imports and numba's start that the rule tasks pay
     anyway, so the rules began ~1.3 s later (`python bench/curate_scale.py`). An opt-in judge runs
     as one actor between verify and the filters. The result is materialized once.
5.   prompt dedupe: data.dedupe_ray's shuffle on MinHash band keys over one row per prompt.
6.   response dedupe, within a prompt (the default): inside each part (below); any other scope
     is a band-key shuffle like 5.
7.   opt-in cross-prompt dedupe: a band-key shuffle, after 6 (a first pass over the parts).
8.   selection: every row carries `_part`, a hash of its prompt id, so grouping on it brings
     each prompt's samples together (pipeline.partition, a hash shuffle in Ray tasks); there the
     last rules run and the worker writes the part (pipeline.accounting.split_and_write_ray:
     data/ and rejected/ part-<n>.parquet, rows in canonical order, so the files do not depend
     on the order rows arrived in).
Choices between rows follow the canonical order key (data.curate.order_keys), the same on any
worker, so the output equals curate()'s row for row.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from distill.data.curate import (
    _ORDER,
    CurateConfig,
    _dedupe,
    canonical_order,
    flag_rows,
    order_keys,
    parse_and_verify,
    parse_rows,
    select,
)
from distill.pipeline.accounting import (
    as_frame,
    combine_reasons,
    parquet_rows,
    parquet_types,
    split_and_write_ray,
)
from distill.pipeline.cluster import task_slots
from distill.pipeline.slices import mark_done, read_slices, slices_dataset

KEY, PART = "_curate_key", "_part"
MADE_TYPES = {"reasoning": pa.string(), "answer_text": pa.string(), "think_closed": pa.bool_(),
              "n_think_blocks": pa.int64(), "final_answer": pa.string(), "correct": pa.bool_()}
MAJORITY_TYPES = {"reference": pa.string(), "reference_source": pa.string(),
                  "majority_agreement": pa.float64()}
_cache: OrderedDict[str, Any] = OrderedDict()


def _get(ref: Any) -> Any:
    """A broadcast object (the eval problems, a dedupe table), fetched once per worker process."""
    import ray

    if ref is None:
        return None
    name = ref.hex()
    if name not in _cache:
        _cache[name] = ray.get(ref)
        while len(_cache) > 8:
            _cache.popitem(last=False)
    return _cache[name]


def _index(cfg: CurateConfig, sets: Any) -> Any:
    """The decontamination index of the broadcast eval problems `sets` (decontam.eval_sets),
    built once per worker process; None when decontamination is off."""
    from distill.data.decontam import build_index

    if sets is None:
        return None
    key = f"index:{sets.hex()}"
    if key not in _cache:
        _cache[key] = build_index(cfg.decontam, _get(sets))
    return _cache[key]


def _part_of(prompt_ids: pd.Series, parts: int) -> np.ndarray:
    import xxhash

    return np.array([xxhash.xxh3_64_intdigest(str(p).encode()) % parts
                     for p in prompt_ids.tolist()], dtype=np.int64)


def _no_reference(batch: Any, cfg: CurateConfig, schema: pa.Schema) -> pd.DataFrame:
    """The parsed answers and order keys of a batch's rows without a reference answer."""
    from distill.data.mathverify import present

    rows = as_frame(read_slices(batch, schema))
    rows = parse_rows(rows[~rows["reference"].map(present)], cfg)
    return pd.DataFrame({"prompt_id": rows["prompt_id"].astype(object).to_numpy(),
                         "final_answer": rows["final_answer"].astype(object).to_numpy(),
                         "answer_text": rows["answer_text"].astype(object).to_numpy(),
                         KEY: order_keys(rows).astype(object).to_numpy()})


def _majority_group(rows: pd.DataFrame, timeout_s: float) -> pd.DataFrame:
    from distill.data.majority import majority_table

    return majority_table(rows, rows[KEY], timeout_s=timeout_s, workers=1)


def _majority(source: Any, schema: pa.Schema, cfg: CurateConfig, args: dict) -> Any:
    """verify.majority_reference's table ({prompt_id: (reference, agreement)}) for the prompts
    without a reference, made on the workers (a groupby on prompt_id), broadcast; None when off."""
    import ray

    if not cfg.verify.majority_reference.enabled:
        return None
    answers = source.map_batches(_no_reference, fn_kwargs={"cfg": cfg, "schema": schema},
                                 **args).materialize()
    table = {}
    if answers.count():
        found = answers.groupby("prompt_id").map_groups(
            _majority_group, fn_kwargs={"timeout_s": cfg.verify.timeout_s},
            batch_format="pandas", num_cpus=args["num_cpus"]).to_pandas()
        table = {p: (r if isinstance(r, str) else None, float(a)) for p, r, a in
                 zip(found["prompt_id"], found["majority_reference"], found["majority_agreement"])}
    return ray.put(table)


def _rows(batch: Any, schema: pa.Schema, cfg: CurateConfig, sets: Any, parts: int,
          flags: bool, done: str | None = None, majority: Any = None) -> pd.DataFrame:
    """Rules 1-2 (and 3-4 unless a judge comes between) on one work item's rows (read here:
    pipeline.slices), with the order key and part; the item is marked done in `done`."""
    rows = as_frame(read_slices(batch, schema))
    rows = parse_and_verify(rows, cfg, majority=_get(majority))
    rows = flag_rows(rows, cfg, index=_index(cfg, sets)) if flags else rows
    rows[KEY] = order_keys(rows)
    rows[PART] = _part_of(rows["prompt_id"], parts)
    if done is not None:
        mark_done(batch, done)
    return rows


@contextmanager
def _counting(folder: Path, report: Callable[[int], None]) -> Iterator[str]:
    """Yield a folder (storage every node sees) where tasks mark their work items done
    (pipeline.slices.mark_done); a driver thread sends the rows done to `report`. Files, not a
    queue actor: an actor takes a worker process the first tasks would start in (~2 s on a
    small machine), dies with its node, and counts a retried task twice."""
    import shutil

    from distill.pipeline.slices import rows_done

    shutil.rmtree(folder, ignore_errors=True)   # an earlier, killed attempt's marks
    folder.mkdir(parents=True)
    stop, seen = threading.Event(), {}

    def poll() -> None:
        last = -1
        while True:
            finished = stop.is_set()
            total = rows_done(folder, seen)
            if total != last:
                report(total)
                last = total
            if finished:
                return
            stop.wait(0.5)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield str(folder)
    finally:
        stop.set()
        thread.join(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _flags(batch: Any, cfg: CurateConfig, sets: Any) -> pd.DataFrame:
    batch = as_frame(batch)
    rows = flag_rows(batch.drop(columns=[KEY, PART]), cfg, index=_index(cfg, sets))
    return rows.assign(**{KEY: batch[KEY].to_numpy(), PART: batch[PART].to_numpy()})


class _Judge:
    """The opt-in judge (a teacher) on the rows the rules left undecided: one actor, no alarms."""

    def __init__(self, judge: Callable[[list[str]], list[str]], cfg: CurateConfig):
        self.judge, self.cfg = judge, cfg.verify.judge

    def __call__(self, batch: Any) -> pd.DataFrame:
        from distill.data.verify import judge_undecided

        batch = as_frame(batch)
        correct = judge_undecided(batch, batch["correct"].astype(object), self.cfg, self.judge,
                                  reference_column="reference", answer_column="final_answer")
        return batch.assign(correct=correct)


def _apply(rows: pd.DataFrame, tables: list[tuple[str, Any]]) -> pd.DataFrame:
    """Broadcast dedupe verdicts ({id: reason} on `column`) added where a row has no reason yet."""
    reasons = rows["reject_reason"].astype(object).where(rows["reject_reason"].notna(), None)
    for column, ref in tables:
        found = rows[column].map(_get(ref))
        reasons = combine_reasons(reasons, found.astype(object).where(found.notna(), None))
    return rows.assign(reject_reason=reasons)


def _alive(batch: Any, tables: list[tuple[str, Any]], columns: list[str],
           one_per_prompt: bool) -> pd.DataFrame:
    rows = _apply(as_frame(batch), tables)
    rows = rows.loc[rows["reject_reason"].isna(), columns]
    return rows.drop_duplicates("prompt_id") if one_per_prompt else rows


def _tables(ds: Any, tables: list, dcfg: Any, prefix: str, unit: str, parts: int) -> list:
    """One broadcast {id: reason} per column of `dcfg`, over the rows alive after `tables`."""
    import ray

    from distill.data.dedupe_ray import duplicate_reasons

    out = []
    id_column = "prompt_id" if unit == "prompt" else KEY
    for column in dcfg.columns:
        columns = list(dict.fromkeys(c for c in ("prompt_id", id_column, column, dcfg.within) if c))
        read = list(dict.fromkeys([*columns, "reject_reason", *(key for key, _ in tables)]))
        alive = ds.select_columns(read).map_batches(_alive, batch_format="pyarrow", fn_kwargs={
            "tables": tables, "columns": columns, "one_per_prompt": unit == "prompt"})
        reasons = duplicate_reasons(alive, dcfg, column=column, id_column=id_column,
                                    partitions=parts)
        out.append((id_column, ray.put(prefix + reasons.astype(str))))
    return out


def _finish(rows: Any, cfg: CurateConfig, tables: list, responses: bool,
            select_too: bool = True) -> pd.DataFrame:
    """The rules over whole prompts, on one part: the broadcast verdicts, response dedupe within
    each prompt (when `responses`), then selection; rows in canonical order."""
    rows = _apply(as_frame(rows), tables)
    order = canonical_order(rows, keys=rows[KEY])
    rows = rows.iloc[np.argsort(order)].reset_index(drop=True)
    rows[_ORDER] = np.sort(order)
    if responses:
        rows["reject_reason"] = combine_reasons(rows["reject_reason"], _dedupe(
            rows, rows["reject_reason"].isna(), cfg.dedupe_responses, "", "response"))
    if not select_too:
        return rows.drop(columns=[_ORDER])
    return select(rows.drop(columns=[KEY]), rows["reject_reason"], rows[_ORDER].to_numpy(), cfg)


def _stats(rows: pd.DataFrame) -> dict:
    correct = rows["correct"].astype(object).map(lambda v: v is True or v is np.True_)
    return {"correct": int(correct.sum()),
            "prompts_kept": int(rows.loc[rows["keep"], "prompt_id"].nunique())}


def _check_columns(names: list[str], cfg: CurateConfig) -> None:
    """The errors curate() gives for missing columns, before any task runs."""
    from distill.data.columns import require_columns
    from distill.data.curate import REQUIRED
    from distill.data.parsing import PARSED_COLUMNS

    require_columns(pd.DataFrame(columns=names), REQUIRED, "curate", fix="curate reads the "
                    "generate stage's traces (prompt_id, problem, reference, text)")
    made = pd.DataFrame(columns=[*names, *PARSED_COLUMNS, "correct"])
    for dcfg in (cfg.dedupe_prompts, cfg.dedupe_responses, cfg.dedupe_across_prompts):
        if dcfg is not None:
            require_columns(made, [*dcfg.columns, dcfg.within], "dedupe",
                            fix="fix DedupeConfig.columns / within, or the order column passed")


def curate_on_ray(traces_dir: Path, cfg: CurateConfig, out_dir: Path, *,
                  judge: Callable[[list[str]], list[str]] | None = None,
                  progress: Callable[[str, int, int | None], None] = lambda *a: None,
                  ) -> tuple[dict, dict]:
    """Curate the Parquet traces in `traces_dir` into out_dir/data and out_dir/rejected on the
    running Ray (pipeline.cluster.ensure_ray); returns (counts for the manifest, stats)."""
    import ray
    from ray.data.context import ShuffleStrategy

    from distill.data.decontam import eval_sets

    c = cfg.cluster
    judged = judge is not None and (cfg.verify.method == "judge" or (
        cfg.verify.method == "math" and cfg.verify.judge.enabled))
    verify = {"workers": 1}   # Ray runs a task per CPU; each verifies in its main thread
    if judged:  # the rules in the tasks; the judge asks on its own, between verify and filters
        verify |= {"method": "math",
                   "judge": cfg.verify.judge.model_copy(update={"enabled": False})}
    task = cfg.model_copy(update={"verify": cfg.verify.model_copy(update=verify)})
    rows_in, types = parquet_rows(traces_dir), parquet_types(traces_dir)   # from the footers
    cpus = task_slots()
    per_block = max(1, min(c.rows_per_block, math.ceil(rows_in / (2 * cpus))))
    source, schema = slices_dataset(traces_dir, per_block)
    # Ray Data reserves a share of the CPUs for each operator of a pipeline and, within it, ran
    # one task of an operator while its other CPU sat idle (the second part-writing task started
    # ~0.45 s after the first; `python bench/curate_scale.py`). These pipelines run one heavy
    # operator at a time, so nothing is starved without it. (What is made from `source` shares
    # its context; the process's default is left alone.)
    source.context.op_resource_reservation_enabled = False
    _check_columns(schema.names, cfg)
    progress("traces", 0, rows_in)
    parts = max(1, math.ceil(rows_in / c.rows_per_part))
    sets = ray.put(eval_sets(cfg.decontam)) if cfg.decontam.enabled and rows_in else None
    args = {"batch_format": "pyarrow", "batch_size": None, "num_cpus": c.task_cpus,
            # a task per CPU at most: each new worker process spends seconds on its imports
            "compute": ray.data.TaskPoolStrategy(size=cpus)}
    majority = _majority(source, schema, task, args) if rows_in else None
    with _counting(out_dir / ".progress",
                   lambda n: progress("traces parsed and verified", n, rows_in)) as done:
        ds = source.map_batches(
            _rows, fn_kwargs={"schema": schema, "cfg": task, "sets": sets, "parts": parts,
                              "flags": not judged, "done": done, "majority": majority}, **args)
        if judged:
            ds = ds.map_batches(_Judge, fn_constructor_kwargs={"judge": judge, "cfg": cfg},
                                compute=ray.data.ActorPoolStrategy(size=1), batch_format="pyarrow",
                                num_cpus=min(c.task_cpus, 0.25)).map_batches(
                _flags, fn_kwargs={"cfg": task, "sets": sets}, **args)
        ds = ds.materialize()
    if ds.num_blocks() <= c.sort_shuffle_max_blocks:
        # A pull-based sort runs as tasks on the warm workers, where a hash shuffle starts a
        # pool of aggregator actors (seconds on a small machine), but it makes blocks^2
        # objects the driver owns: few blocks only. (`ds` and what is made from it share this
        # context; the process's default is left alone.)
        ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    tables: list = []
    if cfg.dedupe_prompts is not None:
        tables += _tables(ds, tables, cfg.dedupe_prompts, "prompt_", "prompt", parts)
    responses = cfg.dedupe_responses is not None
    if responses and cfg.dedupe_responses.within != "prompt_id":
        tables += _tables(ds, tables, cfg.dedupe_responses, "", "response", parts)
        responses = False
    if cfg.dedupe_across_prompts is not None:
        if responses:  # within-prompt dedupe first, on the parts, then across them
            ds = ds.groupby(PART, num_partitions=parts).map_groups(
                partial(_finish, cfg=cfg, tables=tables, responses=True, select_too=False),
                batch_format="pyarrow", num_cpus=c.task_cpus,
                compute=ray.data.TaskPoolStrategy(size=task_slots())).materialize()
            tables, responses = [], False
        tables += _tables(ds, tables, cfg.dedupe_across_prompts, "cross_prompt_", "response", parts)
    counts, totals = split_and_write_ray(
        ds, out_dir, rows_in, part_column=PART, parts=parts, stats=_stats, num_cpus=c.task_cpus,
        finish=partial(_finish, cfg=cfg, tables=tables, responses=responses),
        types=types | MADE_TYPES | (MAJORITY_TYPES if majority is not None else {}))
    progress("traces", rows_in, rows_in)
    extra = {"parts": parts, "prompts_with_kept_trace": totals.get("prompts_kept", 0),
             "teacher_pass_rate": totals.get("correct", 0) / rows_in if rows_in else 0.0}
    return counts, extra
