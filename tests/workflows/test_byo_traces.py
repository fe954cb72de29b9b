"""Bring your own traces through the workflow: the shipped recipe byo_r1_traces.yaml's prompts,
generate and curate stages, as `distill run` composes them, on the bundled R1-Distill traces.

No teacher is asked (no trace cache is made), every trace is a generate row tagged with its
model, curate's funnel accounts for every row, and the trace file enters the keys by content:
edited in place, generate and curate run again.
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from distill.data.benchmarks import BUNDLED_DIR
from distill.pipeline import open_run
from distill.pipeline.store import RunStore
from distill.workflows.recipe import load_recipe
from helpers import REPO

pytestmark = pytest.mark.timeout(600)
RECIPE = REPO / "workflows" / "recipes" / "byo_r1_traces.yaml"


def run_to_curate(recipe_path: Path, run_dir: Path) -> list[dict]:
    from distill.pipeline.runner import run_stages
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers

    upto = [s.name for s in STAGES].index("curate") + 1
    return run_stages(STAGES[:upto], load_recipe(recipe_path), RunStore(run_dir),
                      console=Console(quiet=True), resolvers=resolvers(recipe_path.parent),
                      recipe_path=recipe_path)


def test_the_shipped_recipe_curates_the_bundled_traces_without_a_teacher(tmp_path, distill_home):
    # the recipe as shipped, but reading a copy of the trace file (so the test can edit it)
    traces = tmp_path / "traces.jsonl"
    traces.write_bytes(gzip.decompress((BUNDLED_DIR / "traces" / "r1_distill_qwen7b_math500.jsonl.gz").read_bytes()))
    tree = yaml.safe_load(RECIPE.read_text())
    tree["prompts"]["source"] = str(traces)
    recipe = tmp_path / "byo.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    run = tmp_path / "run"
    run_to_curate(recipe, run)
    store = open_run(run)
    gen = store.stage("generate")
    rows = gen.to_pandas()
    assert len(rows) == 20 and gen.manifest["generated_rows"] == 0
    assert set(rows["teacher"]) == {"R1-Distill-Qwen-7B"} and rows["cost"].eq(0).all()
    assert not (run / "cache").exists(), "no teacher is asked, so no trace cache is made"
    cur = store.stage("curate").manifest
    assert cur["rows_in"] == 20 and cur["kept"] == 16
    assert cur["rejected"] == {"too_long": 1, "truncated": 1, "wrong_answer": 2}

    # the same recipe again: nothing runs; the file edited in place: generate and curate run again
    again = run_to_curate(recipe, run)
    assert [m["key"] for m in again] == [store.stage(m["stage"]).manifest["key"] for m in again]
    lines = traces.read_text().splitlines()
    first = json.loads(lines[0])
    first["full_response"] = first["full_response"].replace("Okay", "Well")
    traces.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    edited = run_to_curate(recipe, run)
    changed = {m["stage"] for m, a in zip(edited, again) if m["key"] != a["key"]}
    assert {"prompts", "generate", "curate"} <= changed
    text = open_run(run).stage("generate").to_pandas().set_index("prompt_id").loc["math500_0000", "text"]
    assert text.startswith("Well")
    shutil.rmtree(run)
