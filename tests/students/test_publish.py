"""Publishing leaves no crash debris: a publish killed (SIGKILL) mid-copy leaves a staging folder
that the next publish removes, with results equal to an undisturbed publish; staging folders of
live publishes are kept."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from distill.students.publish import PublishConfig, publish_student, remove_stale_staging

REPO_ID = "toy-student"
LINEAGE = {"recipe": "toy", "teacher": "tiny-llama", "student_base": "tiny-llama", "method": "lora",
           "data_counts": {"prompts": 2, "traces": 4, "curated": 3, "trained": 3, "rejected": {}}}

# The child publishes with one write made to hang (after a signal file appears), so the test
# kills it at a known point: mid-copy of the model, or mid-write of the dataset folder.
CHILD = """
import json, os, shutil, sys, time
from functools import partial
from pathlib import Path
import pandas as pd
import distill.students.publish as pub

model_dir, hub_dir, flag, point, lineage = sys.argv[1:6]
def hang():
    Path(flag).touch()
    time.sleep(600)
if point == "model_copy":
    copied = []
    def slow_copy(src, dst):
        shutil.copy2(src, dst)
        copied.append(dst)
        if len(copied) == 3:
            hang()
    pub.shutil.copytree = partial(shutil.copytree, copy_function=slow_copy)
else:
    real = pub.write_atomic
    def write_atomic(path, data):
        if "-data" in str(path) and path.name == "README.md":
            hang()
        real(path, data)
    pub.write_atomic = write_atomic
rows = pd.DataFrame({"prompt": ["a", "b", "c"], "answer_text": ["1", "2", "3"]})
pub.publish_student(Path(model_dir), rows, json.loads(lineage), pub.PublishConfig(),
                    Path(hub_dir), "toy-student")
"""


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"prompt": ["a", "b", "c"], "answer_text": ["1", "2", "3"]})


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    for i in range(8):
        (folder / f"model-{i:05d}.safetensors").write_bytes(os.urandom(64 * 1024))
    (folder / "checkpoint-4").mkdir()  # not published
    (folder / "checkpoint-4" / "state.bin").write_bytes(b"x")
    return folder


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _debris(hub: Path) -> list[str]:
    return [p.name for p in hub.rglob("*") if ".staging" in p.name or p.name.endswith(".tmp")]


@pytest.mark.parametrize("point", ["model_copy", "dataset_write"])
def test_a_publish_killed_mid_write_leaves_nothing_a_rerun_does_not_clean(tmp_path, model_dir,
                                                                          point):
    hub, flag = tmp_path / "hub", tmp_path / "hanging"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(model_dir), str(hub), str(flag),
                              point, json.dumps(LINEAGE)])
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the child never hung"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _debris(hub), "the kill should have left a staging folder"

    publish_student(model_dir, _rows(), LINEAGE, PublishConfig(), hub, REPO_ID)
    assert _debris(hub) == []
    undisturbed = tmp_path / "undisturbed"
    publish_student(model_dir, _rows(), LINEAGE, PublishConfig(), undisturbed, REPO_ID)
    assert _tree(hub) == _tree(undisturbed)
    assert "checkpoint-4/state.bin" not in _tree(hub / REPO_ID)


def test_only_staging_folders_without_a_live_owner_are_removed(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    owner = subprocess.Popen(["sleep", "60"])  # a live publish, started before its folder
    finished = subprocess.Popen(["true"])
    finished.wait()
    try:
        time.sleep(0.05)
        live = hub / f".{REPO_ID}.staging{owner.pid}"
        reused = hub / f".{REPO_ID}-data.staging{owner.pid}"  # made long before that pid started
        dead = hub / f".{REPO_ID}.staging{finished.pid}"
        other = hub / f".other.staging{finished.pid}"
        for folder in (live, reused, dead, other):
            folder.mkdir()
        an_hour_ago = time.time() - 3600
        os.utime(reused, (an_hour_ago, an_hour_ago))
        assert remove_stale_staging(hub / REPO_ID) == [dead]
        assert remove_stale_staging(hub / f"{REPO_ID}-data") == [reused]
        assert live.exists() and other.exists()
    finally:
        owner.kill()
        owner.wait()
