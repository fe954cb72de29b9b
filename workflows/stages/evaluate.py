"""evaluate: the student (and its base model) on held-out benchmarks, pass@1 over n samples.

The student is the final one: the onpolicy stage's when it ran, else the train stage's; with
onpolicy on, the SFT-only student is evaluated too (`evaluate.compare_sft`). The manifest holds
`results[model][benchmark]`, `paired[benchmark]` (student minus base on the same questions),
`paired_sft[benchmark]` (student minus SFT-only student) and `protocol` (the parsing, template,
stop, vote and interval rules used).
Version 2: the R1 answer rules (unfinished reasoning or a `length` finish: no answer), stop at
the end-of-turn token for both models, answers read by math-verify as it reads a box, cons@n
over math-verify-equivalent answers, Wilson intervals, the paired comparison.
"""
from __future__ import annotations

from distill.pipeline.keys import Ref
from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


class EvaluateStage:
    name = "evaluate"
    version = "2"
    needs = ("train", "onpolicy")
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        base = Ref("model", recipe.train.student) if recipe.evaluate.compare_base else None
        return {"evaluate": recipe.evaluate, "seed": recipe.seed, "base": base}

    def run(self, ctx: StageContext) -> StageResult:
        from distill.engines.models import resolve_model
        from distill.evaluation.evaluate import evaluate_models
        from distill.pipeline.cluster import ensure_ray

        recipe = ctx.recipe
        cfg = recipe.evaluate
        if not cfg.enabled or not cfg.benchmarks:
            return StageResult(rows=None, rows_in=0, already_written=True,
                               extra={"counts": {"rows_in": 0, "kept": 0, "rejected": {}}, "results": {},
                                      "paired": {}, "paired_sft": {}, "protocol": {}})
        ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
        sft = str(ctx.inputs["train"].artefact("model"))
        final = ctx.inputs["onpolicy"].manifest.get("model_dir")
        models = {"student": str(ctx.inputs["onpolicy"].artefact(final)) if final else sft}
        if final and cfg.compare_sft:
            models["sft"] = sft
        if cfg.compare_base:
            models["base"] = resolve_model(recipe.train.student)
        base_dir = ctx.recipe_path.parent if ctx.recipe_path else None
        rows, summary = evaluate_models(models, cfg, recipe.seed, base_dir=base_dir, progress=ctx.progress)
        return StageResult(rows=rows, rows_in=len(rows), extra=summary)
