"""Two fresh runs give the same curated set; a failed generate resumes by row, never twice.

The smoke recipe's prompts -> generate -> curate, composed as `distill run` composes them, with
`teacher.backend: openai` pointed at tests/teachers/http_server.py in seeded mode: like vLLM with
per-request seeds, each sample's wording depends on its request's seed, so a prompt's two samples
are sometimes exact duplicates and which one curate keeps is a real choice. The server answers
after a random wait and every row is its own shard, so rows reach the shards folder in a
different order in each run.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from distill.data.arithmetic import arithmetic_train
from distill.pipeline import open_run
from distill.pipeline.errors import DistillError
from distill.pipeline.store import RunStore
from distill.workflows.recipe import load_recipe
from distill.workflows.trace_cache import shard_name
from helpers import REPO
from tests.teachers.http_server import Behaviour, ChatServer

pytestmark = pytest.mark.timeout(300)
PROBLEMS = list(arithmetic_train()["problem"][:24])  # the smoke recipe's prompts


def write_recipe(path: Path, base_url: str, shard_rows: int = 8) -> Path:
    recipe = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    recipe["name"] = "smoke-http-repro"
    recipe["teacher"].update(backend="openai", model="test-teacher", shard_rows=shard_rows,
                             endpoint={"base_url": base_url, "timeout_s": 30, "max_retries": 0,
                                       "concurrency": 4})
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_to_curate(recipe_path: Path, run_dir: Path) -> None:
    """prompts, generate and curate of the workflow, as `distill run` runs them."""
    from distill.pipeline.runner import run_stages
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers

    upto = [s.name for s in STAGES].index("curate") + 1
    run_stages(STAGES[:upto], load_recipe(recipe_path), RunStore(run_dir), console=Console(quiet=True),
               resolvers=resolvers(recipe_path.parent), recipe_path=recipe_path)


def curated(run_dir: Path, rejected: bool) -> pd.DataFrame:
    out = open_run(run_dir).stage("curate").to_pandas(rejected=rejected)
    return out.sort_values("request_id").reset_index(drop=True)


def test_two_fresh_runs_give_identical_curate_output(tmp_path, distill_home):
    runs = []
    for i in range(2):
        with ChatServer(seeded=True, default=Behaviour(jitter_s=0.05)) as server:
            recipe = write_recipe(tmp_path / f"recipe{i}.yaml", server.base_url, shard_rows=1)
            run_to_curate(recipe, tmp_path / f"run{i}")
        runs.append(tmp_path / f"run{i}")
    first = open_run(runs[0])
    gen = first.stage("generate").manifest
    assert gen["reproducible_sampling"] is True
    assert "request_seed" in gen["reproducible_sampling_reason"]
    texts = first.stage("generate").to_pandas().groupby("prompt_id")["text"].nunique()
    assert texts.eq(1).any() and texts.eq(2).any()      # some prompts' two samples are twins
    assert first.stage("curate").manifest["rejected"].get("duplicate_exact", 0) > 0
    for rejected in (False, True):
        pd.testing.assert_frame_equal(curated(runs[0], rejected), curated(runs[1], rejected))
    for part in ("data", "rejected"):
        a, b = (open_run(r).stage("curate").path / part / "part-00000.parquet" for r in runs)
        assert a.read_bytes() == b.read_bytes(), part


def test_a_failed_generate_resumes_by_row_with_shards_named_by_their_rows(tmp_path, distill_home):
    # a 401 for one prompt stops the run (a key problem concerns every row) after some shards
    with ChatServer(seeded=True, rules={PROBLEMS[20]: Behaviour(mode="status", status=401)}) as bad:
        recipe = write_recipe(tmp_path / "recipe.yaml", bad.base_url)
        with pytest.raises(DistillError, match="API key"):
            run_to_curate(recipe, tmp_path / "run")
    shards = sorted((tmp_path / "run").glob("cache/generate-*/shards/*.parquet"))
    first = {p.name: pd.read_parquet(p)["request_key"] for p in shards}
    assert first and all(name == shard_name(ids) for name, ids in first.items())
    with ChatServer(seeded=True) as good:
        run_to_curate(write_recipe(recipe, good.base_url), tmp_path / "run")
        asked = {r.body["messages"][-1]["content"] for r in good.received}
    gen = open_run(tmp_path / "run").stage("generate")
    m, traces = gen.manifest, gen.to_pandas()
    done = sum(len(ids) for ids in first.values())
    assert m["cached_rows"] == done and m["generated_rows"] == 48 - done
    assert len(traces) == 48 and not traces["request_id"].duplicated().any()
    assert len(good.received) == 48 - done                  # finished rows are never asked again
    assert any(PROBLEMS[20] in prompt for prompt in asked)
    cache = tmp_path / "run" / m["trace_cache"]
    again = {p.name: pd.read_parquet(p)["request_key"] for p in cache.glob("shards/*.parquet")}
    assert set(first) <= set(again) and all(name == shard_name(ids) for name, ids in again.items())
    ordered = traces[["prompt_id", "sample_index"]]
    assert ordered.equals(ordered.sort_values(["prompt_id", "sample_index"], ignore_index=True))


def test_generate_errors_name_the_problem_and_the_fix(tmp_path, distill_home, monkeypatch):
    import distill.teachers.base as base

    real = base.make_teacher

    forgotten = []

    class Forgetful:   # a teacher that never answers one request
        def __init__(self, cfg, seed):
            self.inner = real(cfg, seed)

        def generate(self, requests):
            forgotten.append(requests["request_id"].iloc[3])
            for frame in self.inner.generate(requests):
                yield frame[frame["request_id"] != forgotten[0]]

    with ChatServer() as server:
        recipe = write_recipe(tmp_path / "recipe.yaml", server.base_url)
        monkeypatch.setattr(base, "make_teacher", Forgetful)
        with pytest.raises(DistillError, match=r"(?s)no result for 1 of 48 requests.*fix: re-run"
                           ) as err:
            run_to_curate(recipe, tmp_path / "run")
        assert forgotten[0] in str(err.value)
        shard = next((tmp_path / "run").glob("cache/generate-*/shards/*.parquet"))
        shard.with_name("shard-copied.parquet").write_bytes(shard.read_bytes())
        monkeypatch.setattr(base, "make_teacher", real)
        run_to_curate(recipe, tmp_path / "run")  # a shard written twice is read once
        traces = open_run(tmp_path / "run").stage("generate").to_pandas()
        assert len(traces) == 48 and not traces["request_id"].duplicated().any()
