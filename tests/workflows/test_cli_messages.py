"""The command line answers mistakes and interruptions with a message, never a traceback: a
recipe that is not UTF-8 or is a folder, `show --columns` with an unknown column, and Ctrl-C
during `distill run` (exit 130, what was kept, the command that resumes)."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from distill.pipeline.errors import RecipeError
from distill.pipeline.runner import run_stages
from distill.pipeline.store import RunStore
from distill.workflows.cli import app
from distill.workflows.recipe import load_recipe
from helpers import REPO
from tests.pipeline.test_runner import MakeRows, Toy
from tests.teachers.http_server import Behaviour, ChatServer

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def test_a_recipe_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(SMOKE.read_bytes().replace(b"name: smoke", b"name: sm\xf6ke"))
    with pytest.raises(RecipeError,
                       match=r"(?s)not UTF-8 text \(line 5, byte 0xf6\).*save the recipe as UTF-8"):
        load_recipe(path)


def test_a_recipe_folder_is_a_message(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\n")
    code, out = _cli("run", str(tmp_path))
    assert code == 2 and f"{tmp_path} is a folder, not a recipe file" in out and "a.yaml" in out


def test_show_with_an_unknown_column_lists_the_columns(tmp_path):
    run_stages([MakeRows()], Toy(), RunStore(tmp_path), console=Console(file=io.StringIO()),
               resolvers={})
    code, out = _cli("show", str(tmp_path), "make", "--columns", "x,nope")
    assert code == 2 and "--columns: 'nope' not among the columns of make's kept rows" in out
    assert "choose from: x" in out
    code, out = _cli("show", str(tmp_path), "make", "--columns", "x")
    assert code == 0 and "(3 rows)" in out


def _first_shard(run_dir, proc, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not list(run_dir.glob("cache/generate-*/shards/shard-*.parquet")):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.05)


def test_ctrl_c_exits_130_and_says_what_was_kept_and_how_to_resume(tmp_path, distill_home):
    """A real `distill run` with an HTTP teacher that answers slowly; SIGINT once a shard is
    written."""
    with ChatServer(default=Behaviour(jitter_s=0.8)) as server:
        recipe = yaml.safe_load(SMOKE.read_text())
        recipe["teacher"].update(backend="openai", model="test-teacher", shard_rows=4, endpoint={
            "base_url": server.base_url, "timeout_s": 30, "max_retries": 0, "concurrency": 2})
        recipe["evaluate"] = {"enabled": False}
        path, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
        path.write_text(yaml.safe_dump(recipe))
        env = {**os.environ, "DISTILL_HOME": str(distill_home), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "distill.workflows.cli", "run", str(path),
                                 "--run-dir", str(run_dir)], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _first_shard(run_dir, proc)
        proc.send_signal(signal.SIGINT)
        out = " ".join(proc.communicate(timeout=60)[0].split())
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert "interrupted during stage 'generate'" in out and "kept: finished stages prompts" in out
    assert "generate's" in out and "finished shard" in out
    assert f"resume: distill run {path} --run-dir {run_dir}" in out
