"""`distill plan`: a table with every stage whose figures scale with the prompt count, each with
its source; the teacher's rate read from the progress of its batches; the real calibration run
(slow) on the smoke recipe's tiny teacher; a message, not a traceback, for a bad recipe."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distill.workflows.cli import app
from distill.workflows.distill import STAGES
from distill.workflows.plan import given_stats, make_plan, shard_timing, teacher_rate
from distill.workflows.recipe import load_recipe
from helpers import REPO, run_cli

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"
GIVEN = ["plan.given.prompt_tokens=50", "plan.given.completion_tokens=400",
         "plan.given.teacher_tokens_per_s=1000", "plan.given.kept_per_prompt=1.5",
         "plan.given.engine_start_s=30", "plan.gpu_hour_price=2.0",
         "teacher.device=cuda", "teacher.engine.tensor_parallel_size=4",
         "teacher.cost_per_million_output=1.0", "train.use_gpu=true", "train.num_workers=2"]


def _by_stage(plan: dict) -> dict:
    return {r["stage"]: r for r in plan["stages"]}


def test_every_stage_is_in_the_table_and_the_work_scales_with_the_prompts(distill_home):
    recipe = load_recipe(SMOKE, GIVEN)
    stats = given_stats(recipe)
    small, large = (make_plan(recipe, stats, n, base_dir=SMOKE.parent) for n in (100, 300))
    assert [r["stage"] for r in small["stages"]] == [s.name for s in STAGES]
    a, b = _by_stage(small), _by_stage(large)
    start = 30.0
    # generate: 300 prompts x 2 samples x 400 tokens at 1000 tokens/s, plus one engine start
    assert b["generate"]["seconds"] == pytest.approx(start + 300 * 2 * 400 / 1000)
    assert (b["generate"]["seconds"] - start) == pytest.approx(3 * (a["generate"]["seconds"] - start))
    assert b["generate"]["gpus"] == 4 and b["generate"]["gpu_hours"] == pytest.approx(
        4 * b["generate"]["seconds"] / 3600)
    token_cost = 300 * 2 * 400 / 1e6 * 1.0
    assert b["generate"]["cost"] == pytest.approx(b["generate"]["gpu_hours"] * 2.0 + token_cost)
    assert large["kept_rows"] == pytest.approx(3 * small["kept_rows"]) == pytest.approx(450)
    assert b["curate"]["seconds"] == pytest.approx(3 * a["curate"]["seconds"])
    assert b["train"]["gpus"] == 2
    assert b["train"]["seconds"] == pytest.approx(3 * a["train"]["seconds"])
    assert b["train"]["seconds"] == pytest.approx(300 * 1.5 * 450 / (3000 * 2))  # kept x tokens/row
    assert b["generate"]["disk_gb"] == pytest.approx(3 * a["generate"]["disk_gb"])
    assert a["onpolicy"]["state"] == "off" and a["evaluate"]["state"] == "on"
    # the evaluation does not grow with the training prompts
    assert a["evaluate"]["seconds"] == b["evaluate"]["seconds"] > 0
    assert large["total"]["seconds"] == pytest.approx(sum(r["seconds"] for r in large["stages"]))
    assert large["total"]["cost"] > small["total"]["cost"] > 0
    assert "assumed" in a["train"]["sources"] and "given" == stats["completion_tokens"]["source"]


def test_the_teacher_rate_counts_the_waves_and_the_start_is_apart():
    # engine start 20 s, then 50 tokens/s; 2 batches at once of 500 tokens each: the first wave
    # (1000 tokens) finishes at 40 s, the second at 60 s
    events = [[0.0, 0, 0], [39.5, 16, 500], [40.0, 32, 1000], [59.0, 48, 1500], [60.0, 64, 2000]]
    rate, start, how = teacher_rate(events, 61.0, concurrent=2)
    assert rate == pytest.approx(50.0) and start == pytest.approx(20.0) and "first wave" in how
    # a slope from the first finished batch would say 1500 / 20.5 = 73 tokens/s
    rate, start, how = teacher_rate(events[:3], 40.0, concurrent=2)
    assert rate == pytest.approx(1000 / 40) and start == 0.0 and "engine start included" in how


def test_a_plan_stopped_after_generate_reads_the_timing_from_the_cache_shards(tmp_path):
    """The batches' write times stand in for the progress events this process did not see; a
    generate run answered from the cache is timed by the run here that asked the teacher."""
    import os
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import pandas as pd

    shards = tmp_path / "cache" / "generate-x" / "shards"
    shards.mkdir(parents=True)
    end = 1_800_000_000.0
    for i, (at, tokens) in enumerate([(end - 30, [5, 5]), (end - 10, [7, 3])]):
        f = shards / f"shard-{i}.parquet"
        pd.DataFrame({"completion_tokens": tokens}).to_parquet(f)
        os.utime(f, (at, at))
    asked = {"key": "k1", "rows_in": 4, "generated_rows": 4, "seconds": 40.0,
             "trace_cache": "cache/generate-x",
             "finished_at": datetime.fromtimestamp(end, UTC).isoformat()}
    (tmp_path / "generate-old").mkdir()
    (tmp_path / "generate-old" / "manifest.json").write_text(json.dumps(asked))
    cached = {**asked, "key": "k2", "generated_rows": 0, "seconds": 2.0}
    timing = shard_timing(SimpleNamespace(root=tmp_path), cached)
    assert timing["events"] == [[0.0, 0, 0], [10.0, 2, 10], [30.0, 4, 20]]
    assert timing["seconds"] == 40.0
    assert shard_timing(SimpleNamespace(root=tmp_path), {**cached, "rows_in": 5}) is None


def test_plan_command_with_given_figures_writes_the_table(tmp_path, distill_home):
    sets = [a for s in GIVEN for a in ("--set", s)]
    result = CliRunner().invoke(app, ["plan", str(SMOKE), "--run-dir", str(tmp_path / "run"), *sets])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "plan: 24 prompts, 48 samples, about 36 kept rows" in out
    for name in [s.name for s in STAGES] + ["total"]:
        assert name in out
    plan = json.loads((tmp_path / "run" / "plan" / "plan.json").read_text())
    assert plan["prompts"] == 24 and plan["stats"]["calibration"] is None
    md = (tmp_path / "run" / "plan" / "plan.md").read_text()
    assert "| generate | on | 48 samples" in md and "given" in md
    assert not (tmp_path / "run" / "plan" / "calibration").exists()  # nothing asked of a teacher


def test_plan_with_a_bad_recipe_is_a_message(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(SMOKE.read_text() + "plan: {gpu_hour_prize: 2}\n")
    result = CliRunner().invoke(app, ["plan", str(path), "--run-dir", str(tmp_path / "run")])
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "unknown key `plan.gpu_hour_prize`" in out and "did you mean `plan.gpu_hour_price`?" in out
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_calibration_runs_the_real_stages_and_scales(tmp_path, distill_home):
    run = tmp_path / "run"
    run_cli(["plan", str(SMOKE), "--run-dir", str(run), "--set", "plan.calibration_prompts=12"],
            home=distill_home, cwd=tmp_path)
    plan = json.loads((run / "plan" / "plan.json").read_text())
    cal = plan["stats"]["calibration"]
    assert cal["prompts"] == 12 and cal["samples"] == 24
    gen = json.loads(next((run / "plan" / "calibration").glob("generate-*/manifest.json")).read_text())
    assert gen["rows_in"] == 24 and gen["generated_rows"] == 24  # the real teacher answered
    stats = plan["stats"]
    assert stats["completion_tokens"]["value"] == pytest.approx(gen["completion_tokens"] / 24)
    assert stats["teacher_tokens_per_s"]["value"] > 0
    assert all(stats[k]["source"] == "measured" for k in
               ("prompt_tokens", "completion_tokens", "teacher_tokens_per_s", "kept_per_prompt"))
    assert plan["prompts"] == 24
    assert plan["kept_rows"] == pytest.approx(24 * stats["kept_per_prompt"]["value"])
    # twice the prompts: the calibration is reused (its timing kept), the work doubles
    proc = run_cli(["plan", str(SMOKE), "--run-dir", str(run), "--set", "plan.calibration_prompts=12",
                    "--set", "prompts.limit=48"], home=distill_home, cwd=tmp_path)
    assert "generate  skipped" in proc.stdout
    again = json.loads((run / "plan" / "plan.json").read_text())
    assert again["prompts"] == 48 and again["stats"]["teacher_tokens_per_s"] == stats["teacher_tokens_per_s"]
    g1, g2 = (_by_stage(p)["generate"] for p in (plan, again))
    start = stats["engine_start_s"]["value"]
    assert g2["seconds"] - start == pytest.approx(2 * (g1["seconds"] - start))
    assert again["kept_rows"] == pytest.approx(2 * plan["kept_rows"])
