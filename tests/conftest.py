"""Shared test setup: one model cache per session (tiny models are built in-process once)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub at test time (hub ids resolve from the cache)


@pytest.fixture(scope="session")
def distill_home(tmp_path_factory) -> Path:
    """A session-wide DISTILL_HOME so built models are shared by every test that needs them."""
    home = Path(os.environ.get("DISTILL_TEST_HOME") or tmp_path_factory.mktemp("distill_home"))
    os.environ["DISTILL_HOME"] = str(home)
    return home


@pytest.fixture(autouse=True, scope="module")
def _ray_ends_with_its_module():
    """A Ray started in-process by one test module (a stage's ensure_ray) is shut down with it,
    so the next module's own `ray.init` starts clean."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
