"""Checks before any work: every file, column and model a recipe names exists and fits here.

`preflight(recipe, recipe_path) -> warnings` raises a RecipeError naming the key and the fix, so
a typo in a column name or a hub id stops the run in a second, not after an hour of generation.
It returns the lines for what it could not check (a hub id while offline and not cached).
"""
from __future__ import annotations

from pathlib import Path

from distill.engines.models import check_hub_model, check_model_source
from distill.pipeline.errors import RecipeError
from distill.workflows.recipe import Recipe


def preflight(recipe: Recipe, recipe_path: Path | None = None) -> list[str]:
    from distill.data.prompts import check_columns, load_prompts, read_table
    from distill.students.config import validate_for_machine
    from distill.teachers.templates import TEMPLATES

    base = recipe_path.parent if recipe_path else None
    check_model_source(recipe.teacher.model, "teacher.model")
    check_model_source(recipe.train.student, "train.student")
    hub_models = {"train.student": recipe.train.student}
    if recipe.teacher.backend != "openai":  # an HTTP teacher's model is the endpoint's own name
        hub_models["teacher.model"] = recipe.teacher.model
    if recipe.onpolicy is not None:
        from distill.workflows.stages.onpolicy import teacher_model

        check_model_source(teacher_model(recipe), "onpolicy.teacher")
        hub_models["onpolicy.teacher"] = teacher_model(recipe)
    notes = [n for f, name in hub_models.items() if (n := check_hub_model(name, f)) is not None]
    for field, name in (("teacher.template", recipe.teacher.template),
                        ("evaluate.template", recipe.evaluate.template)):
        if name not in TEMPLATES:
            raise RecipeError(f"{field}: unknown template {name!r}", fix=f"use one of {sorted(TEMPLATES)}")
    prompts = load_prompts(recipe.prompts, base)  # names a missing file or column, or an empty set
    if not prompts["keep"].any():
        reasons = prompts["reject_reason"].value_counts().to_dict()
        raise RecipeError(f"prompts.source: no usable prompt in {recipe.prompts.source} ({reasons})",
                          fix="check prompts.problem_column and prompts.answer_column")
    for i, spec in enumerate(recipe.evaluate.benchmarks if recipe.evaluate.enabled else []):
        table = read_table(spec.source, field=f"evaluate.benchmarks[{i}].source", base_dir=base)
        check_columns(table, {f"evaluate.benchmarks[{i}].problem_column": spec.problem_column,
                              f"evaluate.benchmarks[{i}].answer_column": spec.answer_column}, spec.source)
    validate_for_machine(recipe.train, has_cuda=cuda_available(recipe.ray.address))
    check_publish(recipe)
    return notes


def check_publish(recipe: Recipe) -> None:
    """A push needs a token (checked here without the network, so a missing one does not stop
    the run after hours of work), and `adapter_only` needs an adapter."""
    p = recipe.publish
    if not p.enabled:
        return
    if p.adapter_only and recipe.train.method == "full":
        raise RecipeError("publish.adapter_only: train.method is full, which makes no adapter",
                          fix="train with method lora or qlora, or publish the merged model")
    if p.push:
        from huggingface_hub import get_token

        if get_token() is None:
            raise RecipeError("publish.push is true but no hub token is set",
                              fix="set HF_TOKEN (a write token) or run `hf auth login`; or set "
                                  "publish.push: false and run `distill publish RUN_DIR` later")


def cuda_available(address: str | None = None) -> bool:
    """CUDA here, or GPUs in the Ray cluster we will join: under `ray job submit` the driver often
    runs on a CPU-only head node while the workers have the GPUs."""
    import os

    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return False
    from distill.pipeline.cluster import ensure_ray

    return ensure_ray(address).cluster_resources().get("GPU", 0) > 0
