"""select_prompts (optional, off by default): keep the prompts a reference model solves sometimes.

Between prompts and generate, before the teacher is paid: the reference model (the student's
base unless `select_prompts.model`) answers each prompt `samples` times on the evaluation engine
path, the answers are scored as evaluation scores them, and a prompt whose pass rate is at or
below `too_hard_at_most` is rejected as too_hard, at or above `too_easy_at_least` as too_easy
(data.difficulty). Its rows carry reference_samples / _correct / _pass_rate / _answers. Off (no
`select_prompts:` section), the stage writes nothing and generate reads the prompts stage.
"""
from __future__ import annotations

import pandas as pd

from distill.pipeline.keys import Ref
from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe

OFF = {"counts": {"rows_in": 0, "kept": 0, "rejected": {}}, "enabled": False}


def reference_model(recipe: Recipe) -> str:
    cfg = recipe.select_prompts
    return cfg.model if cfg.model is not None else recipe.train.student


def template(recipe: Recipe) -> str:
    return recipe.select_prompts.template or recipe.teacher.template


def requests(prompts: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """m rows per prompt that has a reference answer, with the user message (no few-shot)."""
    from distill.data.mathverify import present
    from distill.teachers.templates import build_messages

    m = recipe.select_prompts.samples
    scored = prompts[prompts["reference"].map(present)]
    rows = scored[["prompt_id", "problem", "reference"]].reset_index(drop=True)
    rows = rows.loc[rows.index.repeat(m)].reset_index(drop=True)
    rows["sample_index"] = rows.groupby("prompt_id").cumcount()
    rows["request_id"] = rows["prompt_id"] + ":ref:" + rows["sample_index"].astype(str)
    rows["messages"] = [build_messages(p, template(recipe), None) for p in rows["problem"]]
    return rows


def score_answers(model_dir: str, reqs: pd.DataFrame, recipe: Recipe, progress) -> pd.DataFrame:
    """The reference model's answers, scored as the evaluate stage scores (math-verify)."""
    from distill.data.verify import verify_math
    from distill.evaluation.evaluate import EvalConfig, generate_answers
    from distill.evaluation.protocol import as_answer, find_answers

    cfg = recipe.select_prompts
    ecfg = EvalConfig(sampling=cfg.sampling, engine=cfg.engine, batch_size=cfg.batch_size,
                      concurrency=cfg.concurrency, template=template(recipe))
    rows, _ = generate_answers(model_dir, reqs, ecfg, recipe.seed,
                               lambda done: progress("reference answers", done, len(reqs)))
    rows = find_answers(rows)
    answers = [as_answer(a, t) for a, t in zip(rows["answer"], rows["answer_is_text"])]
    verdicts = verify_math(list(zip(rows["reference"], answers)))
    rows["correct"] = [v is True for v in verdicts]
    return rows


class SelectPromptsStage:
    name = "select_prompts"
    version = "1"
    needs = ("prompts",)
    resumable = False

    def config(self, recipe: Recipe) -> dict:
        cfg = recipe.select_prompts
        if cfg is None:
            return {"select_prompts": None}
        return {"select_prompts": cfg, "template": template(recipe), "seed": recipe.seed,
                "reference": Ref("model", recipe.train.student) if cfg.model is None else None}

    def run(self, ctx: StageContext) -> StageResult:
        recipe = ctx.recipe
        if recipe.select_prompts is None:
            return StageResult(rows=None, rows_in=0, already_written=True, extra=dict(OFF))
        from distill.data.difficulty import pass_rates, window_reasons
        from distill.engines.models import resolve_model
        from distill.pipeline.cluster import ensure_ray

        prompts = ctx.inputs["prompts"].to_pandas()
        reqs = requests(prompts, recipe)
        rates = pd.DataFrame(columns=["prompt_id", "reference_samples", "reference_correct",
                                      "reference_answers", "reference_pass_rate"])
        if len(reqs):
            ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
            rates = pass_rates(score_answers(resolve_model(reference_model(recipe)), reqs,
                                             recipe, ctx.progress))
        rows = prompts.merge(rates, on="prompt_id", how="left")
        rows["reject_reason"] = window_reasons(rows["reference_pass_rate"].astype(float),
                                               recipe.select_prompts)
        rows["keep"] = rows["reject_reason"].isna()
        extra = {"enabled": True, "reference_model": reference_model(recipe),
                 "samples_per_prompt": recipe.select_prompts.samples,
                 "unscored": int(rows["reference_pass_rate"].isna().sum()),
                 "reference_pass_rate": float(rates["reference_pass_rate"].mean())
                 if len(rates) else None}
        return StageResult(rows=rows, rows_in=len(rows), extra=extra)


class AfterSelection:
    """`stage` (generate) with select_prompts as an input: it reads select_prompts' kept prompts
    in place of the prompts stage's when that stage ran (a recipe with `select_prompts:`)."""

    def __init__(self, stage):
        self.stage = stage
        self.needs = (*stage.needs, "select_prompts")

    def __getattr__(self, name: str):
        return getattr(self.stage, name)

    def run(self, ctx: StageContext) -> StageResult:
        selected = ctx.inputs.get("select_prompts")
        if selected is not None and selected.manifest.get("enabled"):
            ctx.inputs = {**ctx.inputs, "prompts": selected}
        return self.stage.run(ctx)
