"""generate keeps its rows on the Ray workers: the driver's stage result holds no row frame.

The generate stage is run directly (`GenerateStage().run(ctx)`, the context built as the runner
builds it) so its StageResult can be inspected: no rows, `already_written`, and data/ and
rejected/ parts whose rows match the counts and were written by Ray worker processes (their pids,
recorded in the manifest's `written_by`, are not this process's). With the HTTP teacher the
cache shards are written here, batch by batch; with vLLM (slow) by the engine's workers, which
each shard's Parquet metadata records (trace_cache.shard_writer). A multi-node test can read
the same records: `shard_writer(path)["node"]` per shard, `written_by["parts"]` per node.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from distill.pipeline.keys import digest, stage_payload
from distill.pipeline.runner import run_stages
from distill.pipeline.stage import StageContext
from distill.pipeline.store import RunStore, StageOutput
from distill.workflows.recipe import load_recipe
from distill.workflows.trace_cache import shard_writer
from helpers import REPO
from tests.teachers.http_server import Behaviour, ChatServer

pytestmark = pytest.mark.timeout(600)


def write_recipe(path: Path, **teacher) -> Path:
    recipe = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    recipe["prompts"]["limit"] = 12
    recipe["teacher"].update(teacher)
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_generate(recipe_path: Path, run_dir: Path):
    """The stages before generate through the runner, then generate's run() called here, with
    the context the runner would give it: (result, ctx)."""
    from distill.pipeline.runner import plan_keys
    from distill.workflows.distill import STAGES
    from distill.workflows.fingerprints import resolvers

    recipe, store = load_recipe(recipe_path), RunStore(run_dir)
    found = resolvers(recipe_path.parent)
    names = [s.name for s in STAGES]
    before, generate = STAGES[:names.index("generate")], STAGES[names.index("generate")]
    run_stages(before, recipe, store, console=Console(quiet=True), resolvers=found,
               recipe_path=recipe_path)
    keys = plan_keys([*before, generate], recipe, found)
    payload = stage_payload(generate, recipe, {n: keys[n] for n in generate.needs}, found)
    out_dir = store.stage_dir("generate", digest(payload))
    out_dir.mkdir(parents=True)
    seen = []
    inputs = {n: StageOutput(n, store.stage_dir(n, keys[n])) for n in generate.needs}
    ctx = StageContext(recipe, store, out_dir, inputs, lambda *a, **kw: seen.append(a),
                       recipe_path, config=payload["config"])
    result = generate.run(ctx)
    assert seen and seen[-1][1] == seen[-1][2] == 24           # progress reached every sample
    return result, ctx


def check_written_on_workers(result, ctx) -> tuple[pd.DataFrame, pd.DataFrame]:
    """No rows in the result; the files hold what the counts say, written by Ray workers."""
    assert result.rows is None and result.already_written
    counts, written_by = result.extra["counts"], result.extra["written_by"]
    kept = pd.read_parquet(ctx.out_dir / "data")
    rejected = pd.read_parquet(ctx.out_dir / "rejected")
    assert counts["rows_in"] == result.rows_in == 24 == len(kept) + len(rejected)
    assert counts["kept"] == len(kept)
    assert counts["rejected"] == rejected["reject_reason"].value_counts().to_dict()
    assert written_by["driver"]["pid"] == str(os.getpid())
    assert written_by["pids"]["parts"] and os.getpid() not in written_by["pids"]["parts"]
    assert sum(written_by["parts"].values()) == result.extra["parts"] == 1
    both = pd.concat([kept, rejected.drop(columns="reject_reason")], ignore_index=True)
    assert not both[["prompt_id", "sample_index"]].duplicated().any()
    return kept, rejected


def test_http_generate_returns_no_rows_and_its_parts_are_written_by_workers(tmp_path, distill_home):
    with ChatServer(seeded=True, rules={"84 - 37": Behaviour(mode="status", status=500)}) as server:
        recipe = write_recipe(tmp_path / "recipe.yaml", backend="openai", model="test-teacher",
                              endpoint={"base_url": server.base_url, "timeout_s": 30,
                                        "max_retries": 0, "concurrency": 4})
        result, ctx = run_generate(recipe, tmp_path / "run")
    kept, rejected = check_written_on_workers(result, ctx)
    m = result.extra
    assert m["counts"]["rejected"] == {"teacher_error": 2}
    assert m["cached_rows"] == 0 and m["generated_rows"] == 24
    assert m["completion_tokens"] == int(kept["completion_tokens"].sum()
                                         + rejected["completion_tokens"].sum()) > 0
    assert sum(m["finish_reasons"].values()) == 24
    # the HTTP client runs here, so its shards are written here (one line each in written_by)
    shards = sorted((ctx.store.root / m["trace_cache"] / "shards").glob("shard-*.parquet"))
    assert sum(m["written_by"]["shards"].values()) == len(shards) >= 3       # shard_rows 8
    assert {shard_writer(p)["pid"] for p in shards} == {str(os.getpid())}


def test_parts_concatenate_to_the_canonical_order_and_counts_come_from_the_files(tmp_path,
                                                                                 distill_home):
    from distill.workflows.generate_ray import assemble_on_ray
    from distill.workflows.stages.generate import build_requests, cache_folder

    with ChatServer(seeded=True, rules={"22 + 89": Behaviour(mode="status", status=500)}) as server:
        recipe = write_recipe(tmp_path / "recipe.yaml", backend="openai", model="test-teacher",
                              endpoint={"base_url": server.base_url, "max_retries": 0})
        result, ctx = run_generate(recipe, tmp_path / "run")
    whole = pd.read_parquet(ctx.out_dir / "data")
    requests = build_requests(ctx.inputs["prompts"].to_pandas(), ctx.recipe)
    counts, extra = assemble_on_ray(requests.sample(frac=1, random_state=3), cache_folder(ctx),
                                    tmp_path / "parts", ctx.recipe.teacher, part_rows=5)
    files = sorted((tmp_path / "parts" / "data").glob("*.parquet"))
    assert extra["parts"] == 5 and len(files) == 5 and len(extra["part_writers"]) == 5
    parts = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    pd.testing.assert_frame_equal(parts, whole)                  # same rows, same order
    assert counts == result.extra["counts"] and counts["rejected"] == {"teacher_error": 2}
    assert extra["cost"] == result.extra["cost"]


@pytest.mark.slow
def test_vllm_shards_are_written_by_the_engines_workers(tmp_path, distill_home):
    recipe = write_recipe(tmp_path / "recipe.yaml")          # the smoke teacher: vLLM on CPU
    result, ctx = run_generate(recipe, tmp_path / "run")
    check_written_on_workers(result, ctx)
    shards = sorted((ctx.store.root / result.extra["trace_cache"] / "shards").glob("shard-*.parquet"))
    writers = [shard_writer(p) for p in shards]
    assert shards and all(w["pid"] and w["pid"] != str(os.getpid()) for w in writers)
    assert sum(result.extra["written_by"]["shards"].values()) == len(shards)
    assert {w["node"] for w in writers} == set(result.extra["written_by"]["shards"])
    assert sum(len(pd.read_parquet(p)) for p in shards) == 24
