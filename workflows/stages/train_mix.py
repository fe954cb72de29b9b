"""train, on the curated sources mixed by weight (data.mixing) when `prompts.sources` set weights.

`MixedTrain` is the workflow's train stage (stages.train.TrainStage, which it extends): without
weights it is that stage unchanged (same key, same output). With weights it first splits the
curated rows (one curate part at a time) into those the mix keeps, written to `mix_input/data/`
in this stage's folder, and those it leaves out, which become rejected rows of this stage with
reason `mix_weight` (the funnel counts them); the teacher stage's training then reads
`mix_input` as its curated input, and the folder is removed once training is done. Its key holds
the weights (`mix`); prompts, generate and curate do not, so a new mix trains again without
curating again.
"""
from __future__ import annotations

import dataclasses
import shutil

import pandas as pd

from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe
from distill.workflows.stages.generate_given import add_part
from distill.workflows.stages.train import TrainStage, sft_rows

MIX_INPUT, MIX_PART = "mix_input", "part-mix"


def source_weights(recipe: Recipe) -> dict[str, float] | None:
    """{source name: weight} when the recipe's sources set weights, else None."""
    sources = getattr(recipe.prompts, "sources", None) or []
    if not sources or sources[0].weight is None:
        return None
    return {s.name: float(s.weight) for s in sources}


class _CuratedView:
    """The curate stage's output as read by training: `path` holds the mixed data/."""

    def __init__(self, output, path):
        self._output, self.path = output, path

    def to_pandas(self, *, rejected: bool = False) -> pd.DataFrame:
        from distill.pipeline.store import read_parquet_dir

        return self._output.to_pandas(rejected=True) if rejected else read_parquet_dir(self.path / "data")

    def __getattr__(self, name):
        return getattr(self._output, name)


def split_mix(curated_data, out: Path, weights: dict[str, float]) -> pd.DataFrame:  # noqa: F821
    """Write the rows the mix keeps to out/data/ (curate's part names) and return those it
    leaves out, flagged `mix_weight`. Reads the id and source columns first, then each part."""
    from distill.data.mixing import REASON, mixed_out
    from distill.pipeline.accounting import parquet_files
    from distill.pipeline.store import write_parquet

    files = parquet_files(curated_data)
    ids = pd.concat([pd.read_parquet(f, columns=["request_id", "source"]) for f in files], ignore_index=True)
    left_out = set(ids.loc[mixed_out(ids["request_id"], ids["source"], weights), "request_id"])
    dropped = []
    for f in files:
        part = pd.read_parquet(f)
        out_mask = part["request_id"].isin(left_out)
        write_parquet(part[~out_mask], out / "data" / f.name)
        dropped.append(part[out_mask])
    rows = pd.concat(dropped, ignore_index=True)
    rows["reject_reason"] = REASON
    rows["keep"] = False
    return rows


class MixedTrain(TrainStage):
    """The train stage; with source weights, on the mix (module docstring)."""

    def config(self, recipe: Recipe) -> dict:
        cfg = super().config(recipe)
        weights = source_weights(recipe)
        return {**cfg, "mix": weights} if weights else cfg

    def run(self, ctx: StageContext) -> StageResult:
        weights = source_weights(ctx.recipe)
        if not weights:
            return super().run(ctx)
        curate = ctx.inputs["curate"]
        mix_dir = ctx.out_dir / MIX_INPUT
        shutil.rmtree(mix_dir, ignore_errors=True)
        left_out = sft_rows(split_mix(curate.path / "data", mix_dir, weights), ctx.recipe)
        inputs = {**ctx.inputs, "curate": _CuratedView(curate, mix_dir)}
        result = super().run(dataclasses.replace(ctx, inputs=inputs))
        shutil.rmtree(mix_dir, ignore_errors=True)
        extra = {**result.extra, "mix": {"weights": weights, "left_out": len(left_out),
                                         "left_out_by_source": {str(k): int(v) for k, v in
                                                                left_out["source"].value_counts().items()}}}
        result = dataclasses.replace(result, extra=extra)
        if result.already_written:
            return add_part(left_out, result, ctx.out_dir, MIX_PART)
        both = pd.concat([result.rows, left_out], ignore_index=True)
        return dataclasses.replace(result, rows=both, rows_in=result.rows_in + len(left_out))
