"""The README's cluster section, as written: `ray job submit ... -- distill run ...` against a Ray
head started by the test (its own ports and temp dir, token authentication on), with an HTTP
teacher on 127.0.0.1 so no vLLM engine is needed. A job without --run-dir is refused before
any work; with an absolute --run-dir the run lands there and outlives the job.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill.pipeline import open_run
from helpers import REPO
from tests.teachers.http_server import ChatServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory, distill_home):
    """A one-node Ray head with the dashboard (job server); yields the env a client needs."""
    temp = Path(f"/tmp/rj{secrets.token_hex(3)}")  # Ray's socket paths must stay short
    gcs, dash = _free_port(), _free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "DISTILL_HOME": str(distill_home),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus", "2",
                            "--port", str(gcs), "--dashboard-port", str(dash),
                            "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
                            "--temp-dir", str(temp), "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    client = {**env, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash}"}
    try:
        deadline = time.monotonic() + 300   # a loaded 2-core machine took over 120 s once
        while True:  # the job agent starts a little after the head
            ready = subprocess.run([str(BIN / "ray"), "job", "submit", "--", "true"], env=client,
                                   capture_output=True, text=True, timeout=120)
            if ready.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        yield client
    finally:
        subprocess.run(["pkill", "-f", str(temp)], check=False)   # only this head's processes
        time.sleep(2)
        subprocess.run(["pkill", "-9", "-f", str(temp)], check=False)
        shutil.rmtree(temp, ignore_errors=True)


def _job_dir(tmp_path: Path, base_url: str) -> Path:
    work = tmp_path / "job"
    work.mkdir()
    recipe = yaml.safe_load((REPO / "workflows" / "recipes" / "smoke.yaml").read_text())
    recipe["teacher"].update(backend="openai", model="test-teacher",
                             endpoint={"base_url": base_url, "timeout_s": 30, "max_retries": 0})
    recipe["evaluate"] = {"enabled": False}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return work


def _submit(env: dict, work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), "job", "submit", "--working-dir", str(work), "--",
                           "distill", "run", "recipe.yaml", *args],
                          env=env, capture_output=True, text=True, timeout=500)


def test_a_job_without_a_run_dir_is_refused_before_any_work(head, tmp_path):
    with ChatServer() as server:
        done = _submit(head, _job_dir(tmp_path, server.base_url))
        assert len(server.received) == 0
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "temporary copy that Ray deletes" in out and "--run-dir" in out, out[-3000:]


def test_a_job_runs_the_workflow_into_the_run_dir_it_was_given(head, tmp_path):
    run_dir = tmp_path / "shared" / "runs" / "smoke"
    with ChatServer() as server:
        done = _submit(head, _job_dir(tmp_path, server.base_url), "--run-dir", str(run_dir))
        assert len(server.received) == 48
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    run = open_run(run_dir)
    assert {"prompts", "generate", "curate", "train", "publish"} <= set(run.stage_names())
    assert run.stage("generate").manifest["rows_in"] == 48


def test_without_the_token_the_cluster_refuses_the_client(head, tmp_path):
    env = {k: v for k, v in head.items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    with ChatServer() as server:
        done = _submit(env, _job_dir(tmp_path, server.base_url), "--run-dir", str(tmp_path / "r"))
    assert done.returncode != 0
    assert "token" in (done.stdout + done.stderr).lower()
