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

import pandas as pd
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


def run_to_curate(recipe_path: Path, run_dir: Path, last: str = "curate") -> list[dict]:
    from distill.pipeline.runner import run_stages
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers

    upto = [s.name for s in STAGES].index(last) + 1
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


def test_two_sources_one_asked_one_brought_each_row_tagged(tmp_path, distill_home):
    """prompts.sources: arithmetic prompts for the HTTP teacher and R1-Distill-Llama traces
    brought as they are; the teacher is asked only for the first, every row keeps its source;
    the train stage trains on the two mixed 1:1 (data.mixing), the rest rejected mix_weight."""
    from tests.teachers.http_server import ChatServer

    tree = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    tree["name"] = "two-sources"
    tree["prompts"] = {"sources": [
        {"name": "arith", "source": "bundled:arithmetic", "limit": 6, "kind": "math", "weight": 1},
        {"name": "r1", "source": "bundled:r1_distill_llama8b_math500", "limit": 5, "kind": "math",
         "weight": 1,
         "answer_column": "ground_truth", "id_column": "item_id",
         "traces": {"response_column": "full_response", "teacher_column": "model_short_name"}}]}
    with ChatServer() as server:
        tree["teacher"].update(backend="openai", model="test-teacher", endpoint={
            "base_url": server.base_url, "timeout_s": 30, "max_retries": 0, "concurrency": 4})
        tree["curate"]["decontam"] = {"benchmarks": ["aime24"]}   # the traces are MATH-500's
        tree["train"]["max_length"] = 1024
        recipe = tmp_path / "two.yaml"
        recipe.write_text(yaml.safe_dump(tree))
        run_to_curate(recipe, tmp_path / "run", last="train")
        asked = len(server.received)
    store = open_run(tmp_path / "run")
    assert asked == 6 * 2   # two samples of each arithmetic prompt, none for the traces
    gen = store.stage("generate").to_pandas()
    assert gen.groupby("source")["teacher"].agg(set).to_dict() == {
        "arith": {"test-teacher"}, "r1": {"R1-Distill-Llama-8B"}}
    assert gen["source"].value_counts().to_dict() == {"arith": 12, "r1": 5}
    assert all(p.startswith(s + "/") for p, s in zip(gen["prompt_id"], gen["source"]))
    m = store.stage("curate").manifest
    assert m["rows_in"] == 17
    curated = pd.concat([store.stage("curate").to_pandas(),
                         store.stage("curate").to_pandas(rejected=True)])
    assert len(curated) == 17 and curated["source"].notna().all()
    assert set(curated.loc[curated["source"] == "r1", "kind"]) == {"math"}
    kept = store.stage("curate").to_pandas()["source"].value_counts().to_dict()
    assert kept.get("r1", 0) >= 2 and kept["arith"] > kept["r1"]
    train = store.stage("train").manifest
    assert train["rows_in"] == len(store.stage("curate").to_pandas())
    assert train["rejected"]["mix_weight"] == kept["arith"] - kept["r1"]
    assert train["mix"]["left_out_by_source"] == {"arith": kept["arith"] - kept["r1"]}
    mixed = store.stage("train").to_pandas(rejected=True)
    assert set(mixed.loc[mixed["reject_reason"] == "mix_weight", "source"]) == {"arith"}


@pytest.mark.parametrize("field, value", [
    ("name", "other"), ("source", "bundled:arithmetic_test"), ("problem_column", "prompt"),
    ("answer_column", None), ("id_column", None), ("limit", 3), ("kind", "general"),
    ("traces", None), ("traces.response_column", "answer_text"),
    ("traces.reasoning_column", "reasoning_trace"), ("traces.list_columns", ["x"]),
    ("traces.format", "conversations"), ("traces.conversations_column", "turns"),
    ("traces.replace", {"a": "b"}), ("traces.teacher", "someone"), ("traces.teacher_column", None),
    ("traces.finish_reason_column", "f"), ("traces.completion_tokens_column", "t"),
    ("traces.tokenizer", "tiny-qwen2"), ("weight", 3.0),
])
def test_every_source_setting_is_in_the_keys(field, value, distill_home):
    """The walk in test_stage_keys covers the single-source form; this one each setting of a
    source in `prompts.sources`: it changes the prompts key and so every key after it."""
    from distill.pipeline.runner import plan_keys
    from distill.workflows.distill import STAGES
    from distill.workflows.recipe import Recipe
    from helpers import RESOLVERS

    tree = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    tree["prompts"] = {"sources": [
        {"name": "arith", "source": "bundled:arithmetic", "weight": 1.0},
        {"name": "r1", "source": "bundled:r1_distill_llama8b_math500", "answer_column": "ground_truth",
         "weight": 1.0,
         "id_column": "item_id", "traces": {"response_column": "full_response",
                                            "teacher_column": "model_short_name"}}]}
    before = plan_keys(STAGES, Recipe.model_validate(tree), RESOLVERS)
    node = tree["prompts"]["sources"][1]
    *path, last = field.split(".")
    for part in path:
        node = node[part]
    node[last] = value
    after = plan_keys(STAGES, Recipe.model_validate(tree), RESOLVERS)
    changed = {n for n in before if before[n] != after[n]}
    if field == "weight":  # the mix is the train stage's: no new curation for a new mix
        assert "train" in changed and not changed & {"prompts", "generate", "curate"}
    else:
        assert changed >= {"prompts", "generate", "curate", "train"}


def test_two_teachers_on_the_same_prompts_side_by_side(tmp_path, distill_home):
    """The same prompts under two source names, one with its own teacher: each teacher is asked
    for its source only, every row is tagged with its teacher, and teacher_table compares them."""
    from distill.workflows.compare import teacher_table
    from tests.teachers.http_server import ChatServer

    tree = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    tree["name"] = "two-teachers"
    with ChatServer() as server:
        endpoint = {"base_url": server.base_url, "timeout_s": 30, "max_retries": 0, "concurrency": 4}
        tree["teacher"].update(backend="openai", model="teacher-a", endpoint=endpoint,
                               cost_per_million_output=2.0)
        other = {**tree["teacher"], "model": "teacher-b", "cost_per_million_output": 1.0,
                 "sampling": {**tree["teacher"]["sampling"], "n": 1}}
        tree["prompts"] = {"sources": [
            {"name": "a", "source": "bundled:arithmetic", "limit": 5},
            {"name": "b", "source": "bundled:arithmetic", "limit": 5, "teacher": other}]}
        recipe = tmp_path / "two.yaml"
        recipe.write_text(yaml.safe_dump(tree))
        run_to_curate(recipe, tmp_path / "run")
        models = pd.Series([r.body["model"] for r in server.received]).value_counts().to_dict()
    assert models == {"teacher-a": 10, "teacher-b": 5}   # n=2 for a's teacher, n=1 for b's
    store = open_run(tmp_path / "run")
    gen = store.stage("generate")
    rows = gen.to_pandas()
    assert rows.groupby("source")["teacher"].agg(set).to_dict() == {"a": {"teacher-a"}, "b": {"teacher-b"}}
    assert set(gen.manifest["teachers"]) == {"teacher", "b"}
    table = teacher_table(store).set_index("teacher")
    assert table["samples"].to_dict() == {"teacher-a": 10, "teacher-b": 5}
    for name in ("teacher-a", "teacher-b"):
        mine = rows[rows["teacher"] == name]
        assert table.loc[name, "cost"] == pytest.approx(mine["cost"].sum())
        assert 0 <= table.loc[name, "pass_rate"] <= 1
    # the key holds each source's teacher: another model for b changes generate's key only
    from distill.pipeline.runner import plan_keys
    from distill.workflows.distill import STAGES
    from distill.workflows.recipe import Recipe
    from helpers import RESOLVERS

    k0 = plan_keys(STAGES, Recipe.model_validate(tree), RESOLVERS)
    tree["prompts"]["sources"][1]["teacher"]["model"] = "teacher-c"
    k1 = plan_keys(STAGES, Recipe.model_validate(tree), RESOLVERS)
    assert k0["prompts"] == k1["prompts"] and k0["generate"] != k1["generate"]
