"""The generate stage asks the teacher only for what its trace cache does not hold.

prompts -> generate as `distill run` runs them, with an OpenAI-compatible teacher (the fixture
server of tests/teachers/http_server.py on 127.0.0.1), whose log says exactly what was asked.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from distill.pipeline import open_run
from distill.pipeline.store import RunStore
from distill.workflows.recipe import load_recipe
from helpers import REPO
from tests.teachers.http_server import Behaviour, ChatServer

pytestmark = pytest.mark.timeout(300)


def write_prompts(path: Path, rows: list[tuple[str, str, str]]) -> None:
    path.write_text("".join(json.dumps({"id": i, "problem": p, "answer": a}) + "\n"
                            for i, p, a in rows))


PROMPTS = [(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(6)]


def write_recipe(path: Path, server: ChatServer, prompts: Path, **teacher) -> Path:
    recipe = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    recipe["prompts"] = {"source": str(prompts), "id_column": "id"}
    recipe["teacher"].update(backend="openai", model="test-teacher", shard_rows=4,
                             endpoint={"base_url": server.base_url, "timeout_s": 30,
                                       "max_retries": 0, "concurrency": 4}, **teacher)
    path.write_text(yaml.safe_dump(recipe))
    return path


def generate(recipe: Path, run_dir: Path, *overrides: str) -> pd.DataFrame:
    from distill.pipeline.runner import run_stages
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers

    upto = [s.name for s in STAGES].index("generate") + 1
    run_stages(STAGES[:upto], load_recipe(recipe, list(overrides)), RunStore(run_dir),
               console=Console(quiet=True), resolvers=resolvers(recipe.parent), recipe_path=recipe)
    return open_run(run_dir).stage("generate").to_pandas()


@pytest.fixture
def setup(tmp_path, distill_home):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, PROMPTS)
    with ChatServer(seeded=True) as server:
        recipe = write_recipe(tmp_path / "recipe.yaml", server, prompts)
        first = generate(recipe, tmp_path / "run")
        assert len(server.received) == 12
        yield tmp_path, server, recipe, prompts, first


def test_a_new_price_re_prices_without_asking_the_teacher(setup):
    tmp_path, server, recipe, _, first = setup
    again = generate(recipe, tmp_path / "run", "teacher.cost_per_million_output=2.0")
    assert len(server.received) == 12                                  # nothing asked again
    assert (again["cost"] == again["completion_tokens"] * 2.0 / 1e6).all() and again["cost"].gt(0).all()
    assert again["text"].tolist() == first["text"].tolist()


def test_an_added_prompt_asks_only_for_its_samples(setup):
    tmp_path, server, recipe, prompts, first = setup
    write_prompts(prompts, PROMPTS + [("q9", "What is 9 + 9?", "18")])
    again = generate(recipe, tmp_path / "run")
    assert len(server.received) == 14
    assert len(again) == 14 and set(again["prompt_id"]) == {*first["prompt_id"], "q9"}
    assert open_run(tmp_path / "run").stage("generate").manifest["cached_rows"] == 12


def test_an_edited_answer_flows_on_and_an_edited_problem_is_asked_again(setup):
    tmp_path, server, recipe, prompts, first = setup
    edited = [("q0", "What is 0 + 0?", "zero"), *PROMPTS[1:4],
              ("q4", "What is 4 + 5?", "9"), PROMPTS[5]]
    write_prompts(prompts, edited)
    again = generate(recipe, tmp_path / "run")
    assert len(server.received) == 14                                  # only q4's two samples
    asked = [r.body["messages"][-1]["content"] for r in server.received[12:]]
    assert all("What is 4 + 5?" in a for a in asked)
    assert set(again.loc[again["prompt_id"] == "q0", "reference"]) == {"zero"}
    same = again["prompt_id"] != "q4"
    assert again.loc[same, "text"].tolist() == first.loc[first["prompt_id"] != "q4", "text"].tolist()


def test_a_damaged_shard_is_set_aside_and_only_its_rows_are_asked_again(setup):
    tmp_path, server, recipe, prompts, first = setup
    gen = open_run(tmp_path / "run").stage("generate")
    shards = sorted((tmp_path / "run" / gen.manifest["trace_cache"] / "shards").glob("*.parquet"))
    lost = len(pd.read_parquet(shards[0]))
    shards[0].write_bytes(shards[0].read_bytes()[:50])                  # cut by a crash
    write_prompts(prompts, PROMPTS + [("q9", "What is 9 + 9?", "18")])  # so generate runs again
    again = generate(recipe, tmp_path / "run")
    manifest = open_run(tmp_path / "run").stage("generate").manifest
    assert manifest["damaged_shards"] == [shards[0].name]
    assert len(server.received) == 12 + 2 + lost
    assert len(again) == 14 and not again["request_id"].duplicated().any()


def test_failed_requests_are_rows_with_reasons_and_retry_errors_asks_only_for_them(tmp_path,
                                                                                   distill_home):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, PROMPTS)
    broken = {PROMPTS[2][1]: Behaviour(mode="status", status=500)}
    with ChatServer(seeded=True, rules=broken) as server:
        recipe = write_recipe(tmp_path / "recipe.yaml", server, prompts)
        kept = generate(recipe, tmp_path / "run")
    rejected = open_run(tmp_path / "run").stage("generate").to_pandas(rejected=True)
    assert len(kept) == 10 and kept["error"].isna().all()
    assert set(rejected["reject_reason"]) == {"teacher_error"} and len(rejected) == 2
    assert set(rejected["prompt_id"]) == {"q2"} and rejected["error"].str.contains("500").all()
    with ChatServer(seeded=True) as server:
        write_recipe(recipe, server, prompts)
        generate(recipe, tmp_path / "run")
        assert len(server.received) == 0                       # a plain re-run: done, nothing asked
        again = generate(recipe, tmp_path / "run", "teacher.retry_errors=true")
        assert len(server.received) == 2                       # only the two failed requests
    assert again["error"].isna().all() and len(again) == 12
