"""generate, with traces a source brought (data.trace_sources): the teacher answers only the rest.

`GivenTracesGenerate` is the workflow's generate stage (same name, version, key and behaviour
as stages.generate.GenerateStage, which it extends): it hands the teacher stage only the prompt
rows that need a teacher, and adds the brought traces to the output as generate rows
(`given_rows`: text, reasoning, completion_tokens, finish_reason, teacher = the source's name,
cost 0). When every row brought its trace, no teacher, engine or trace cache is touched.
It wraps the teacher stage instead of editing it so that how the teacher's rows are written
(in this process, or by Ray workers in parts) stays that stage's own business: the brought
rows are added as rows to return, or as one more part (`part-given`) beside the written ones,
with the same column types.
"""
from __future__ import annotations

import dataclasses
import shutil

import pandas as pd

from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.stages.generate import GenerateStage

GIVEN_PART = "part-given"


class _PromptsView:
    """A prompts stage output whose kept rows are `frame` (the rows that need a teacher)."""

    def __init__(self, output, frame: pd.DataFrame):
        self._output, self._frame = output, frame

    def to_pandas(self, *, rejected: bool = False) -> pd.DataFrame:
        return self._output.to_pandas(rejected=True) if rejected else self._frame

    def __getattr__(self, name):
        return getattr(self._output, name)


def _stats(rows: pd.DataFrame) -> dict:
    tokens = pd.to_numeric(rows["completion_tokens"], errors="coerce")
    return {"completion_tokens": int(tokens.sum()),
            "finish_reasons": {str(k): int(v) for k, v in rows["finish_reason"].value_counts().items()}}


def _merge_extra(extra: dict, rows: pd.DataFrame, teacher_prompts: pd.DataFrame) -> dict:
    """The manifest's totals with the brought rows counted in (they cost nothing)."""
    stats = _stats(rows)
    out = dict(extra)
    out["completion_tokens"] = int(out.get("completion_tokens", 0)) + stats["completion_tokens"]
    finish = dict(out.get("finish_reasons", {}))
    for k, v in stats["finish_reasons"].items():
        finish[k] = finish.get(k, 0) + v
    out["finish_reasons"] = dict(sorted(finish.items(), key=lambda kv: (-kv[1], kv[0])))
    ids = set(teacher_prompts["prompt_id"].astype(str)) | set(rows["prompt_id"])
    out.update(prompts=len(ids), brought_rows=len(rows),
               brought_teachers={str(k): int(v) for k, v in rows["teacher"].value_counts().items()})
    return out


def add_part(rows: pd.DataFrame, result: StageResult, out_dir, name: str) -> StageResult:
    """`rows` (with keep / reject_reason) as one more part `name` beside the parts a stage wrote
    itself (already_written), with their column types; the counts include them."""
    from distill.pipeline.accounting import check_counts, frame_types, parquet_types, write_split

    types = {**frame_types(rows), **parquet_types(out_dir / "rejected"), **parquet_types(out_dir / "data")}
    written = write_split(rows, out_dir, name, types)
    extra = dict(result.extra)
    counts = dict(extra.pop("counts"))
    counts["rows_in"] = counts.get("rows_in", result.rows_in) + len(rows)
    counts["kept"] += written["kept"]
    rejected = dict(counts["rejected"])
    for k, v in written["rejected"].items():
        rejected[k] = rejected.get(k, 0) + v
    counts["rejected"] = rejected
    check_counts(counts, counts["rows_in"], out_dir.name)
    extra["counts"] = counts
    return dataclasses.replace(result, rows_in=counts["rows_in"], extra=extra)


def source_teachers(recipe) -> dict:
    """{source name: its own TeacherConfig} for the `prompts.sources` that name one."""
    return {s.name: s.teacher for s in getattr(recipe.prompts, "sources", None) or []
            if s.teacher is not None}


def _move_parts(sub, out_dir, prefix: str) -> None:
    """A teacher's parts written under `sub` into out_dir's data/ and rejected/, renamed."""
    for kind in ("data", "rejected"):
        (out_dir / kind).mkdir(parents=True, exist_ok=True)
        for f in sorted((sub / kind).glob("*.parquet")) if (sub / kind).exists() else ():
            f.replace(out_dir / kind / f"{prefix}-{f.name}")
    shutil.rmtree(sub, ignore_errors=True)


SUMMED = ("prompt_tokens", "completion_tokens", "cost", "cached_rows", "generated_rows")


def _combine(results: list[tuple[str, str, StageResult]], out_dir) -> StageResult:
    """One result from each teacher's (group, model, result): rows concatenated, or parts moved
    into out_dir with their counts summed; the manifest gets a `teachers` breakdown."""
    first = results[0][2]
    extra = {k: v for k, v in first.extra.items() if k not in ("counts",)}
    for key in SUMMED:
        extra[key] = sum(r.extra.get(key, 0) or 0 for _, _, r in results)
    finish: dict[str, int] = {}
    for _, _, r in results:
        for k, v in r.extra.get("finish_reasons", {}).items():
            finish[k] = finish.get(k, 0) + v
    extra["finish_reasons"] = dict(sorted(finish.items(), key=lambda kv: (-kv[1], kv[0])))
    extra["teachers"] = {group: {"model": model, "rows": r.rows_in, **{k: r.extra.get(k) for k in SUMMED},
                                 "reproducible_sampling": r.extra.get("reproducible_sampling")}
                         for group, model, r in results}
    rows_in = sum(r.rows_in for _, _, r in results)
    if not first.already_written:
        rows = pd.concat([r.rows for _, _, r in results], ignore_index=True)
        return StageResult(rows=rows, rows_in=rows_in, extra=extra)
    counts = {"rows_in": 0, "kept": 0, "rejected": {}}
    for group, _, r in results:
        c = r.extra["counts"]
        counts["rows_in"] += c.get("rows_in", r.rows_in)
        counts["kept"] += c["kept"]
        for k, v in c["rejected"].items():
            counts["rejected"][k] = counts["rejected"].get(k, 0) + v
        _move_parts(out_dir / f"teacher-{group}", out_dir, f"teacher-{group}")
    extra["counts"] = counts
    return StageResult(rows=None, rows_in=rows_in, extra=extra, already_written=True)


class GivenTracesGenerate(GenerateStage):
    """The generate stage; rows that brought a trace skip the teacher, sources with their own
    teacher are answered by it (module docstring)."""

    def config(self, recipe) -> dict:
        cfg = super().config(recipe)
        own = source_teachers(recipe)
        return {**cfg, "source_teachers": own} if own else cfg

    def _ask(self, ctx: StageContext, ask: pd.DataFrame) -> StageResult:
        """The teacher stage over `ask`: one run per teacher (the recipe's, each source's own)."""
        prompts = ctx.inputs["prompts"]
        own = source_teachers(ctx.recipe)
        if not own:
            return super().run(dataclasses.replace(ctx, inputs={**ctx.inputs, "prompts": _PromptsView(prompts, ask)}))
        groups = [("teacher", ctx.recipe.teacher, ask[~ask["source"].isin(set(own))], ctx.config)]
        groups += [(name, t, ask[ask["source"] == name],
                    {**ctx.config, "teacher": ctx.config["source_teachers"][name]}) for name, t in own.items()]
        results = []
        for group, teacher, rows, config in groups:
            if rows.empty:
                continue
            sub = ctx.out_dir / f"teacher-{group}"
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir(parents=True)
            one = dataclasses.replace(ctx, recipe=ctx.recipe.model_copy(update={"teacher": teacher}),
                                      config=config, out_dir=sub,
                                      inputs={**ctx.inputs, "prompts": _PromptsView(prompts, rows)})
            results.append((group, teacher.model, super().run(one)))
        return _combine(results, ctx.out_dir)

    def run(self, ctx: StageContext) -> StageResult:
        from distill.data.trace_sources import given_rows, split_given

        prompts = ctx.inputs["prompts"]
        ask, given = split_given(prompts.to_pandas())
        if given.empty and not source_teachers(ctx.recipe):
            return super().run(ctx)
        if given.empty:
            return self._ask(ctx, ask)
        rows = given_rows(given)
        ctx.progress("brought traces", len(rows), len(rows))
        if ask.empty:  # no teacher at all
            most = int(rows.groupby("prompt_id").size().max())
            extra = _merge_extra({"samples_per_prompt": most, "generated_rows": 0, "cached_rows": 0,
                                  "prompt_tokens": 0, "cost": 0.0}, rows, ask)
            extra["reproducible_sampling"] = True
            extra["reproducible_sampling_reason"] = "no teacher sampled: every trace came from its source"
            return StageResult(rows=rows, rows_in=len(rows), extra=extra)
        result = self._ask(ctx, ask)
        result = dataclasses.replace(result, extra=_merge_extra(result.extra, rows, ask))
        if result.already_written:
            return add_part(rows, result, ctx.out_dir, GIVEN_PART)
        both = pd.concat([result.rows, rows], ignore_index=True)
        both = both.sort_values(["prompt_id", "sample_index"], kind="stable", ignore_index=True)
        return dataclasses.replace(result, rows=both, rows_in=result.rows_in + len(rows))
