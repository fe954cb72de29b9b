"""The workflow as the fault suite drives it: the smoke recipe with an HTTP teacher.

    path = write_recipe(tmp_path / "recipe.yaml", server.base_url, prompts=100)
    run_stages_in_process(path, tmp_path / "run", upto="generate")
    frames = stage_frames(tmp_path / "run")   # {stage: (kept, rejected)}, rows in a fixed order

The teacher is tests/teachers/http_server.py (seeded: answers depend on each request's seed,
so two runs get the same answers) behind `teacher.backend: openai`; the models are the tiny
in-process ones of the smoke recipe, so training is seconds on a CPU.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import yaml
from rich.console import Console

from helpers import REPO

KEY_ENV = "DISTILL_FAULT_KEY"
KEY = "sk-fault-canary-9a8b7c6d5e4f30211203f4e5"
ORDER = ["request_id", "prompt_id", "row_id", "problem"]


def write_recipe(path: Path, base_url: str, *, prompts: int = 24, evaluate: bool = False,
                 timeout_s: float = 30, max_retries: int = 2, concurrency: int = 4) -> Path:
    """The smoke recipe with an HTTP teacher at `base_url` (key from KEY_ENV)."""
    recipe = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    recipe["name"] = "smoke-faults"
    recipe["prompts"]["limit"] = prompts
    recipe["teacher"].update(backend="openai", model="test-teacher", shard_rows=8, endpoint={
        "base_url": base_url, "api_key_env": KEY_ENV, "timeout_s": timeout_s,
        "max_retries": max_retries, "concurrency": concurrency})
    if not evaluate:
        recipe["evaluate"] = {"enabled": False}
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_stages_in_process(recipe: Path, run_dir: Path, upto: str = "publish") -> str:
    """Run the workflow's stages up to `upto` in this process; returns what it printed."""
    from distill.pipeline.runner import run_stages
    from distill.pipeline.store import RunStore
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers
    from distill.workflows.recipe import load_recipe

    names = [s.name for s in STAGES]
    out = io.StringIO()
    run_stages(STAGES[:names.index(upto) + 1], load_recipe(recipe), RunStore(run_dir),
               console=Console(file=out, width=200), resolvers=resolvers(recipe.parent),
               recipe_path=recipe)
    return out.getvalue()


def sorted_rows(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ORDER if c in df.columns][:1] or list(df.columns[:1])
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def stage_frames(run_dir: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Every finished stage's (kept, rejected) rows, in a fixed order."""
    from distill.pipeline import open_run

    run = open_run(run_dir)
    return {name: (sorted_rows(run.stage(name).to_pandas()),
                   sorted_rows(run.stage(name).to_pandas(rejected=True)))
            for name in run.stage_names()}
