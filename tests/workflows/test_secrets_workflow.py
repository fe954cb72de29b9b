"""A canary API key and HF token never reach the run directory, the hub folder or the console.

`distill run` (the real CLI, a subprocess) on the smoke recipe with an OpenAI-compatible teacher
that echoes the request's Authorization header: in 400 and 500 error bodies, in a 401, and in an
answer's text. Every file the run writes (trace cache, stage Parquet, manifests, checkpoints,
report, the published model and dataset) is searched as bytes, and every Parquet file also by
its decoded string values; so are stdout and stderr. A push to a "hub" that echoes the HF token
in its error fails without printing it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.data.arithmetic import arithmetic_train
from distill.pipeline import open_run
from distill.teachers.config import HttpEndpointConfig, TeacherConfig
from distill.teachers.openai_http import HttpTeacher
from helpers import REPO, run_cli
from tests.faults.record import files_holding as leaks
from tests.teachers.http_server import Behaviour, ChatServer
from tests.teachers.test_openai_http import requests_for

pytestmark = pytest.mark.timeout(600)
KEY = "sk-canary-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
HF = "hf_CanaryToken0123456789AbCdEfGhIjKl"
PROBLEMS = list(arithmetic_train()["problem"][:24])  # the smoke recipe's prompts


def recipe(tmp_path: Path, server: ChatServer, **updates) -> Path:
    data = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    data["teacher"].update(backend="openai", model="test-teacher", shard_rows=8, endpoint={
        "base_url": server.base_url, "api_key_env": "DISTILL_CANARY_KEY", "timeout_s": 30,
        "max_retries": 1, "concurrency": 4})
    data["evaluate"] = {"enabled": False}
    data.update(updates)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def distill(tmp_path: Path, path: Path, home: Path, *args: str, check: bool = True, **env: str):
    proc = run_cli(["run", str(path), "--run-dir", str(tmp_path / "run"), *args], home=home,
                   cwd=tmp_path, check=check,
                   extra_env={"DISTILL_CANARY_KEY": KEY, "HF_TOKEN": HF, **env})
    printed = "".join((proc.stdout + proc.stderr).split())  # a line folded inside a key too
    assert KEY not in printed and HF not in printed
    proc.stdout = " ".join(proc.stdout.split())
    return proc


@pytest.mark.slow
def test_an_echoing_teacher_leaves_no_key_in_the_run_the_hub_or_the_console(tmp_path, distill_home):
    rules = {PROBLEMS[0]: Behaviour(mode="status", status=400, message="bad request"),
             PROBLEMS[1]: Behaviour(fail_first=1, fail_with=500),
             PROBLEMS[2]: Behaviour(mode="echo")}
    with ChatServer(seeded=True, echo_credentials=True, rules=rules) as server:
        path = recipe(tmp_path, server)
        distill(tmp_path, path, distill_home)
        # pushing to a "hub" that echoes the HF token in its 404 (huggingface_hub puts the body
        # in its error): the run fails at publish, and what is printed holds no token
        hub = server.base_url.removesuffix("/v1")
        pushed = distill(tmp_path, path, distill_home, "--set", "publish.push=true", "--set",
                         f"publish.endpoint={hub}", check=False, HF_HUB_OFFLINE="0")
    assert pushed.returncode != 0 and "publish" in pushed.stdout
    assert {r.authorization for r in server.received} == {f"Bearer {KEY}"}  # the key was in play
    run = open_run(tmp_path / "run")
    errors = run.stage("generate").to_pandas(rejected=True)["error"]
    assert errors.str.contains("request had Authorization: Bearer \\[redacted\\]").all()
    kept = run.stage("curate").to_pandas()
    assert kept["text"].str.contains("You sent Bearer [redacted].", regex=False).any()
    assert any(p.is_dir() for p in tmp_path.rglob("hub")) and (tmp_path / "run" / "cache").is_dir()
    assert leaks(tmp_path, KEY, HF) == []


def test_a_refused_key_echoed_back_is_not_printed_or_stored(tmp_path, distill_home):
    with ChatServer(api_key="the-right-key-00000000", echo_credentials=True) as server:
        proc = distill(tmp_path, recipe(tmp_path, server), distill_home, check=False)
    assert proc.returncode == 2 and "refused the API key" in proc.stdout
    assert "Authorization: Bearer [redacted]" in proc.stdout
    assert leaks(tmp_path, KEY) == []


def test_a_key_written_in_place_of_the_variable_name_is_refused_unseen(tmp_path, distill_home):
    with ChatServer() as server:
        path = recipe(tmp_path, server)
        proc = distill(tmp_path, path, distill_home, f"--set=teacher.endpoint.api_key_env={KEY}",
                       check=False)
    assert proc.returncode == 2 and "api_key_env" in proc.stdout and "NAME of the" in proc.stdout
    assert server.received == [] and leaks(tmp_path, KEY) == []


def test_an_error_body_cut_to_length_keeps_no_piece_of_the_key(monkeypatch):
    monkeypatch.setenv("DISTILL_CANARY_KEY", KEY)
    long = Behaviour(mode="status", status=400, message="x" * 250)  # the key straddles char 300
    with ChatServer(echo_credentials=True, default=long) as server:
        cfg = TeacherConfig(backend="openai", model="m", endpoint=HttpEndpointConfig(
            base_url=server.base_url, api_key_env="DISTILL_CANARY_KEY", max_retries=0))
        out = next(HttpTeacher(cfg, seed=0).generate(requests_for(["What is 1 plus 2?"])))
    assert KEY[:12] not in out["error"][0] and "[redacted]" in out["error"][0]
