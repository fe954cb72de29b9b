"""The workflow with an OpenAI-compatible teacher: `distill run` against a real HTTP server.

The smoke recipe with `teacher.backend: openai` pointed at tests/teachers/http_server.py, which
answers most prompts, answers some with DeepSeek's `reasoning_content`, fails one with a 503
first (retried), and sends garbage for two (teacher_error rows). Evaluation is off (it starts
vLLM engines); curate, train (tiny-llama LoRA) and publish run for real.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from distill.data.arithmetic import arithmetic_train
from distill.pipeline import open_run
from distill.teachers.openai_http import request_seed
from distill.teachers.templates import render_user_message
from helpers import REPO, run_cli

from tests.teachers.http_server import Behaviour, ChatServer, answer_for, count_tokens

pytestmark = pytest.mark.timeout(300)
PROBLEMS = list(arithmetic_train()["problem"][:24])  # the smoke recipe's prompts
GARBAGE = {PROBLEMS[0]: "garbage", PROBLEMS[1]: "no_choices"}
REASONING = PROBLEMS[4]
FLAKY = PROBLEMS[2]


@pytest.fixture(scope="module")
def http_run(tmp_path_factory, distill_home):
    work = tmp_path_factory.mktemp("http_teacher")
    rules = {p: Behaviour(mode=m) for p, m in GARBAGE.items()}
    rules[REASONING] = Behaviour(mode="reasoning")
    rules[FLAKY] = Behaviour(fail_first=1, fail_with=503)
    with ChatServer(rules=rules) as server:
        recipe = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
        recipe["name"] = "smoke-http"
        recipe["teacher"].update(backend="openai", model="test-teacher", endpoint={
            "base_url": server.base_url, "api_key_env": "DISTILL_TEST_HTTP_KEY",
            "timeout_s": 30, "max_retries": 2, "concurrency": 4})
        recipe["evaluate"] = {"enabled": False}
        path = work / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        proc = run_cli(["run", str(path), "--run-dir", str(work / "run")], home=distill_home, cwd=work,
                       extra_env={"DISTILL_TEST_HTTP_KEY": "sk-local"})
    return work / "run", server, proc


def test_traces_hold_the_servers_answers_reasoning_and_usage(http_run):
    run_dir, server, proc = http_run
    assert "generate" in proc.stdout
    traces = open_run(run_dir).stage("generate").to_pandas()
    assert len(traces) == 2 * (24 - len(GARBAGE))
    for row in traces.itertuples():
        mode = "reasoning" if row.problem == REASONING else "answer"
        content, reasoning = answer_for(row.problem, mode)
        assert row.text == content and pd.isna(row.error)
        assert row.reasoning == reasoning if reasoning else pd.isna(row.reasoning)
        assert row.prompt_tokens == count_tokens(render_user_message("short_math", row.problem))
        assert row.completion_tokens == count_tokens(content, reasoning)
        assert row.finish_reason == "stop"
    assert traces.loc[traces["problem"] == REASONING, "text"].eq("The answer is \\boxed{1242}.").all()
    assert server.count(FLAKY) == 3  # two samples, one of them retried after the 503
    seeds = {(r.body["seed"]) for r in server.received if REASONING in r.prompt}
    ids = traces.loc[traces["problem"] == REASONING, "request_id"]
    assert seeds == {request_seed(0, rid) for rid in ids} and len(seeds) == 2
    assert {r.authorization for r in server.received} == {"Bearer sk-local"}


def test_garbage_answers_are_teacher_error_rejects_with_their_message(http_run):
    run_dir, _, _ = http_run
    gen = open_run(run_dir).stage("generate")
    rejected = gen.to_pandas(rejected=True)
    assert len(rejected) == 4 and set(rejected["reject_reason"]) == {"teacher_error"}
    errors = dict(zip(rejected["problem"], rejected["error"]))
    assert errors[PROBLEMS[0]] == "malformed response: not JSON: b'<html>502 Bad Gateway</html>'"
    assert errors[PROBLEMS[1]].startswith("malformed response: no choices in {")
    m = gen.manifest
    assert m["rows_in"] == 48 == m["kept"] + sum(m["rejected"].values())
    assert m["rejected"] == {"teacher_error": 4}


def test_the_rest_of_the_workflow_ran_on_those_traces(http_run):
    run_dir, _, proc = http_run
    run = open_run(run_dir)
    assert run.stage("curate").manifest["rows_in"] == run.stage("generate").manifest["kept"]
    assert run.stage("train").manifest["rows_in"] == run.stage("curate").manifest["kept"]
    for name in ("curate", "train"):
        m = run.stage(name).manifest
        assert m["rows_in"] == m["kept"] + sum(m["rejected"].values()), name
    assert run.stage("train").manifest["kept"] > 0
    published = Path(run.stage("publish").manifest["published"]["model_dir"])
    assert "published:" in proc.stdout and (published / "config.json").exists()
