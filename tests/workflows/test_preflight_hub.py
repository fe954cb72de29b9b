"""Hub ids are checked before any work, against a real HTTP server on 127.0.0.1 that answers the
hub's model-info route (`GET /api/models/{org}/{name}`, as huggingface_hub's `model_info` asks):
200 with the model's JSON for a known id, 404 with `X-Error-Code: RepoNotFound` for a typo.
Offline or unreachable: the local Hugging Face cache decides, else a warning, not a failure."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import constants as hf_constants

from distill.engines.models import check_hub_model
from distill.pipeline.errors import RecipeError
from tests.pipeline.test_recipe_errors import SMOKE, fails_before_work

KNOWN, TYPO, CACHED = "my-org/my-student", "my-org/my-student-typo", "my-org/cached-student"


class FakeHub(ThreadingHTTPServer):
    """The model-info route of a hub that holds only KNOWN; `paths` records what was asked."""

    def __init__(self):
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def asked(self) -> list[str]:
        """The model-info requests (huggingface_hub also fetches /api/agent-harnesses)."""
        return [p for p in self.paths if p.startswith("/api/models/")]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.paths.append(self.path)
        repo = self.path.split("?")[0].removeprefix("/api/models/")
        if repo == KNOWN:
            body, status, headers = {"id": KNOWN, "sha": "a" * 40, "private": False,
                                     "siblings": [{"rfilename": "config.json"}]}, 200, {}
        else:
            body, status = {"error": "Repository not found"}, 404
            headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The fake hub as the endpoint, online, with a local cache that holds CACHED only."""
    server = FakeHub()
    snapshot = tmp_path / "hf" / f"models--{CACHED.replace('/', '--')}"
    (snapshot / "snapshots" / ("b" * 40)).mkdir(parents=True)
    (snapshot / "snapshots" / ("b" * 40) / "config.json").write_text("{}")
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("b" * 40)
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    yield server
    server.shutdown()


def test_a_known_id_passes_after_asking_the_hub(hub):
    assert check_hub_model(KNOWN, "train.student") is None
    assert hub.asked == [f"/api/models/{KNOWN}"]


def test_a_typo_stops_with_the_field_the_id_and_the_fix(hub):
    with pytest.raises(RecipeError) as err:
        check_hub_model(TYPO, "train.student")
    msg = str(err.value)
    assert "train.student" in msg and TYPO in msg and hub.url in msg
    assert "check the spelling" in msg and "HF_TOKEN" in msg


def test_built_in_names_and_folders_are_not_asked(hub, tmp_path):
    assert check_hub_model("tiny-llama", "train.student") is None
    assert check_hub_model(str(tmp_path), "train.student") is None
    assert hub.asked == []


def test_offline_the_cache_decides_else_a_warning(hub, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert check_hub_model(CACHED, "teacher.model") is None
    note = check_hub_model(TYPO, "teacher.model")
    assert note.startswith("teacher.model: cannot check hub id") and "HF_HUB_OFFLINE is set" in note
    assert "not in the local Hugging Face cache" in note
    assert hub.asked == []


def test_an_unreachable_hub_falls_back_to_the_cache_else_a_warning(hub, monkeypatch):
    hub.shutdown()
    hub.server_close()  # nothing listens on the port now
    assert check_hub_model(CACHED, "train.student") is None
    note = check_hub_model(KNOWN, "train.student")
    assert "cannot reach the hub" in note and hub.url in note


def test_cli_stops_a_typo_before_any_work(tmp_path, distill_home, monkeypatch):
    """The real command, with the environment a user sets (HF_ENDPOINT, online)."""
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    try:
        out = fails_before_work(tmp_path, SMOKE, distill_home, "--set", f"train.student={TYPO}")
    finally:
        server.shutdown()
    assert f"train.student: '{TYPO}' is not a local folder" in out and server.url in out
    assert "check the spelling" in out
    assert server.asked == [f"/api/models/{TYPO}"]
