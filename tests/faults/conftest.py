"""The fault suite's undisturbed run: the reference every disturbed run must equal."""
from __future__ import annotations

import pytest

from tests.faults.runs import KEY, KEY_ENV, run_stages_in_process, write_recipe
from tests.teachers.http_server import ChatServer


@pytest.fixture(scope="session")
def undisturbed(tmp_path_factory, distill_home):
    """(work folder, the seeded teacher server, the recipe using it, the undisturbed run's folder).
    The key variable is set while the session's fault tests run."""
    work = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as env, ChatServer(seeded=True) as server:
        env.setenv(KEY_ENV, KEY)
        recipe = write_recipe(work / "recipe.yaml", server.base_url)
        run_stages_in_process(recipe, work / "calm")
        yield work, server, recipe, work / "calm"
