"""onpolicy: on-policy distillation of the SFT student (students.onpolicy); optional, after train.

On when the recipe has an `onpolicy:` section: the train stage's student answers the prompts
stage's prompts, the teacher (`onpolicy.teacher`, else `teacher.model`) scores every token of
those answers reading the prompt the generate stage sent it (worked examples included), and
the student is trained towards it. `onpolicy.held_out` prompts, picked by a hash of their id,
are never trained on: the manifest's `reverse_kl_before` / `reverse_kl_after` are measured on
them, with `reverse_kl_change` (paired per prompt, 95% interval). Resumes from its checkpoints.
Off: the stage writes only its manifest (`model_dir` null) and evaluate and publish read the
train stage's student.
"""
from __future__ import annotations

import hashlib

import pandas as pd

from distill.pipeline.errors import RecipeError
from distill.pipeline.keys import Ref
from distill.pipeline.stage import StageContext, StageResult
from distill.workflows.recipe import Recipe


def prompt_rows(prompts: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """One row per prompt: what the student reads (the bare templated problem, as in SFT), what
    the teacher reads (teacher_prompt 'teacher': its system prompt and worked examples too),
    and `held_out` for the `onpolicy.held_out` prompts first by a hash of their id."""
    from distill.teachers.templates import build_messages

    cfg, teacher = recipe.onpolicy, recipe.teacher
    rows = prompts[["prompt_id", "problem"]].reset_index(drop=True).copy()
    rows["prompt_id"] = rows["prompt_id"].astype(str)
    rows["student_messages"] = [build_messages(p, teacher.template, None) for p in rows["problem"]]
    if cfg.teacher_prompt == "teacher":
        shots = [(s.problem, s.answer) for s in teacher.few_shot]
        rows["teacher_messages"] = [
            build_messages(p, teacher.template, teacher.system_prompt, shots)
            for p in rows["problem"]]
    else:
        rows["teacher_messages"] = rows["student_messages"]
    if len(rows) <= cfg.held_out:
        raise RecipeError(f"onpolicy.held_out is {cfg.held_out} but the prompts stage has only "
                          f"{len(rows)} prompts: none would be left to train on",
                          fix="lower onpolicy.held_out or raise prompts.limit")
    rank = rows["prompt_id"].map(lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())
    rows["held_out"] = rank.isin(set(rank.sort_values().head(cfg.held_out)))
    return rows


def teacher_model(recipe: Recipe) -> str:
    """The on-policy teacher as the recipe names it (onpolicy.teacher, else teacher.model)."""
    if recipe.onpolicy.teacher is not None:
        return recipe.onpolicy.teacher
    if recipe.teacher.backend == "openai":
        raise RecipeError("onpolicy.teacher is not set and the recipe's teacher is an HTTP "
                          "endpoint, which cannot score given tokens",
                          fix="set onpolicy.teacher to a model folder, short name or hub id")
    return recipe.teacher.model


class OnPolicyStage:
    name = "onpolicy"
    version = "1"
    needs = ("prompts", "curate", "train")
    resumable = True  # Trainer checkpoints and the before-training measurement survive a crash

    def config(self, recipe: Recipe) -> dict:
        cfg = recipe.onpolicy
        if cfg is None:
            return {"onpolicy": None}
        teacher = recipe.teacher
        context = ({"system_prompt": teacher.system_prompt, "few_shot": teacher.few_shot}
                   if cfg.teacher_prompt == "teacher" else None)
        return {"onpolicy": cfg, "template": teacher.template, "teacher_context": context,
                "teacher_model": Ref("model", teacher.model) if cfg.teacher is None else None,
                "think_format": recipe.train.think_format}

    def run(self, ctx: StageContext) -> StageResult:
        recipe = ctx.recipe
        if recipe.onpolicy is None:
            return StageResult(rows=None, rows_in=0, already_written=True, extra={
                "counts": {"rows_in": 0, "kept": 0, "rejected": {}}, "model_dir": None,
                "enabled": False})
        from distill.engines.models import resolve_model

        prompts = ctx.inputs["prompts"].to_pandas()
        rows = prompt_rows(prompts, recipe)
        curated = ctx.inputs["curate"].to_pandas()
        offpolicy = curated if recipe.onpolicy.lmbda < 1.0 else None
        student = str(ctx.inputs["train"].artefact("model"))
        teacher = resolve_model(teacher_model(recipe))
        result = distill(rows, offpolicy, student, teacher, recipe, ctx)
        rows = rows.drop(columns=["student_messages", "teacher_messages"])
        rows["keep"], rows["reject_reason"] = True, None
        return StageResult(rows=rows, rows_in=len(rows), extra={
            "model_dir": "model", "student_sft": student, "teacher": teacher_model(recipe),
            **result.metrics})


def distill(rows: pd.DataFrame, offpolicy, student: str, teacher: str, recipe: Recipe,
            ctx: StageContext):
    """Run the chosen backend with the stage's progress bar."""
    cfg = recipe.onpolicy

    def progress(log: dict) -> None:  # training steps, or another phase (held-out measurement)
        ctx.progress(log.get("phase", "on-policy steps"), int(log.get("step", 0)),
                     log.get("max_steps"))

    if cfg.backend == "vllm":
        from distill.pipeline.cluster import ensure_ray
        from distill.students.onpolicy_vllm import distill_on_policy_vllm as run

        ensure_ray(recipe.ray.address, recipe.ray.num_cpus)
    else:
        from distill.students.onpolicy import distill_on_policy as run
    return run(rows, offpolicy, student, teacher, cfg, ctx.out_dir,
               think_format=recipe.train.think_format, progress=progress)


def summary_lines(store) -> list[str]:
    """What `distill run` prints for the onpolicy stage: the held-out reverse KL before and after,
    and the final student minus the SFT-only student per benchmark (the evaluate manifest's
    paired_sft). Empty when the stage did not run."""
    names = store.stage_names()
    m = store.stage("onpolicy").manifest if "onpolicy" in names else {}
    if m.get("reverse_kl_before") is None:
        return []
    c, h = m["reverse_kl_change"], m["held_out"]
    lines = [(f"on-policy: held-out reverse KL to the teacher {m['reverse_kl_before']:.4f} -> "
              f"{m['reverse_kl_after']:.4f} per token (after - before {c['difference']:+.4f}, "
              f"paired 95% interval [{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}], {c['prompts']} "
              f"held-out prompts x {h['samples_per_prompt']}, {h['estimator']})")]
    paired = store.stage("evaluate").manifest.get("paired_sft", {}) if "evaluate" in names else {}
    for bench, p in paired.items():
        lines.append(f"on-policy student minus SFT-only student, {bench}: {p['difference']:+.3f} "
                     f"pass@1 (paired 95% interval [{p['ci95_low']:+.3f}, {p['ci95_high']:+.3f}], "
                     f"{p['questions']} questions)")
    return lines
