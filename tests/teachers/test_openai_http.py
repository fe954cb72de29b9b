"""HttpTeacher against a real OpenAI-compatible server on 127.0.0.1 (tests/teachers/http_server.py)."""
from __future__ import annotations

import socket
import threading
import time

import pandas as pd
import pytest
from distill.pipeline.errors import DistillError
from distill.teachers.base import make_teacher
from distill.teachers.config import HttpEndpointConfig, SamplingConfig, TeacherConfig
from distill.teachers.openai_http import RESULT_COLUMNS, HttpTeacher, request_seed
from distill.teachers.templates import build_messages

from tests.teachers.http_server import Behaviour, ChatServer, answer_for, count_tokens

pytestmark = pytest.mark.timeout(60)
PROBLEMS = [f"What is {a} plus {b}?" for a, b in [(12, 30), (13, 31), (14, 32), (15, 33), (16, 34),
                                                   (17, 35), (18, 36), (19, 37), (20, 38), (21, 39)]]


@pytest.fixture
def serve():
    started = []

    def start(**kwargs) -> ChatServer:
        started.append(ChatServer(**kwargs).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def teacher(server: ChatServer | str, *, shard_rows: int = 100, force_think: bool = False,
            sampling: SamplingConfig | None = None, **endpoint) -> HttpTeacher:
    url = server if isinstance(server, str) else server.base_url
    endpoint = {"timeout_s": 10.0, "max_retries": 2, "concurrency": 4, "api_key_env": "DISTILL_TEST_KEY",
                **endpoint}
    cfg = TeacherConfig(backend="openai", model="test-teacher", shard_rows=shard_rows,
                        force_think=force_think, sampling=sampling or SamplingConfig(),
                        endpoint=HttpEndpointConfig(base_url=url, **endpoint))
    return HttpTeacher(cfg, seed=7, backoff_s=0.01, max_backoff_s=0.05)


def requests_for(problems: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"p{i}:0" for i in range(len(problems))],
                         "messages": [build_messages(p, "plain", None) for p in problems]})


def run_all(t: HttpTeacher, problems: list[str]) -> pd.DataFrame:
    frames = list(t.generate(requests_for(problems)))
    out = pd.concat(frames, ignore_index=True)
    assert sorted(out["request_id"]) == sorted(f"p{i}:0" for i in range(len(problems)))
    return out.set_index("request_id")


def test_answers_usage_frames_and_request_body(serve, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test")
    server = serve()
    sampling = SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=512, stop=["</answer>"])
    frames = list(teacher(server, shard_rows=3, sampling=sampling).generate(requests_for(PROBLEMS)))
    assert [len(f) for f in frames] == [3, 3, 3, 1]
    assert all(list(f.columns) == RESULT_COLUMNS for f in frames)
    out = pd.concat(frames).set_index("request_id")
    first = out.loc["p0:0"]
    assert first["text"] == "<think>\nWe need 12 plus 30.\n12 + 30 = 42.\n</think>\n\nThe answer is \\boxed{42}."
    for i, problem in enumerate(PROBLEMS):
        row = out.loc[f"p{i}:0"]
        assert row["text"] == answer_for(problem)[0]
        assert row["reasoning"] is None and row["error"] is None and row["finish_reason"] == "stop"
        assert row["prompt_tokens"] == count_tokens(problem)
        assert row["completion_tokens"] == count_tokens(answer_for(problem)[0])
    bodies = {r.prompt: r.body for r in server.received}
    body = bodies[PROBLEMS[0]]
    assert body["model"] == "test-teacher" and body["n"] == 1 and body["stop"] == ["</answer>"]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.95, 512)
    assert body["messages"] == [{"role": "user", "content": PROBLEMS[0]}]
    assert body["seed"] == request_seed(7, "p0:0")
    assert len({b["seed"] for b in bodies.values()}) == len(PROBLEMS)  # k samples differ
    assert {r.authorization for r in server.received} == {"Bearer sk-test"}


def test_no_key_variable_means_no_authorization_and_no_stop_field(serve, monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    server = serve()
    run_all(teacher(server), PROBLEMS[:2])
    assert {r.authorization for r in server.received} == {None}
    assert all("stop" not in r.body for r in server.received)


def test_registry_builds_it_and_concurrency_is_bounded(serve):
    server = serve(default=Behaviour(mode="slow", delay_s=0.3))
    cfg = teacher(server).cfg.model_copy(update={"endpoint": HttpEndpointConfig(
        base_url=server.base_url, concurrency=3)})
    t = make_teacher(cfg, 0)
    assert isinstance(t, HttpTeacher)
    out = pd.concat(t.generate(requests_for(PROBLEMS[:9])))
    assert out["error"].isna().all() and len(out) == 9
    assert server.max_active == 3


@pytest.mark.parametrize("mode,field", [("reasoning", "reasoning_content"), ("reasoning_vllm", "reasoning")])
def test_reasoning_field(serve, mode, field):
    server = serve(default=Behaviour(mode=mode))
    out = run_all(teacher(server), PROBLEMS[:1])
    content, reasoning = answer_for(PROBLEMS[0], mode)
    assert out.loc["p0:0", "text"] == content == "The answer is \\boxed{42}."
    assert out.loc["p0:0", "reasoning"] == reasoning == "We need 12 plus 30.\n12 + 30 = 42."
    assert out.loc["p0:0", "completion_tokens"] == count_tokens(content, reasoning)


@pytest.mark.parametrize("fail_with", [503, 429, 500, "drop", "busy"])
def test_transient_failures_are_retried_then_succeed(serve, fail_with):
    server = serve(rules={"12 plus": Behaviour(fail_first=2, fail_with=fail_with)})
    out = run_all(teacher(server, max_retries=2), PROBLEMS[:3])
    assert out["error"].isna().all()
    assert out.loc["p0:0", "text"] == answer_for(PROBLEMS[0])[0]
    assert server.count("12 plus") == 3 and server.count("13 plus") == 1


@pytest.mark.parametrize("fail_with,error", [
    (503, "HTTP 503 after 3 attempts"), (429, "HTTP 429 after 3 attempts"),
    ("drop", "connection error (RemoteProtocolError) after 3 attempts"),
    ("busy", "finish_reason insufficient_system_resource after 3 attempts"),
])
def test_persistent_failures_become_error_rows_and_keep_the_others(serve, fail_with, error):
    server = serve(rules={"12 plus": Behaviour(fail_first=99, fail_with=fail_with)})
    out = run_all(teacher(server, max_retries=2), PROBLEMS[:4])
    assert out.loc["p0:0", "error"] == error
    assert out.loc["p0:0", "finish_reason"] == "error" and out.loc["p0:0", "text"] == ""
    assert out.drop(index="p0:0")["error"].isna().all()
    assert server.count("12 plus") == 3


def test_retry_after_is_respected(serve):
    server = serve(default=Behaviour(fail_first=1, fail_with=429, retry_after="1"))
    out = run_all(teacher(server), PROBLEMS[:1])
    assert out["error"].isna().all()
    first, second = server.received
    assert second.at - first.at >= 0.9  # our own backoff is 10 ms here: the wait is the server's


def test_timeouts_are_retried_then_reported(serve):
    server = serve(rules={"12 plus": Behaviour(mode="slow", delay_s=30)})
    out = run_all(teacher(server, timeout_s=0.3, max_retries=1), PROBLEMS[:2])
    assert out.loc["p0:0", "error"] == "timeout after 2 attempts"
    assert out.loc["p1:0", "error"] is None
    assert server.count("12 plus") == 2


def test_keepalive_lines_are_fine_but_count_toward_the_timeout(serve):
    server = serve(rules={"12 plus": Behaviour(mode="trickle", delay_s=0.3),
                          "13 plus": Behaviour(mode="trickle", delay_s=30)})
    out = run_all(teacher(server, timeout_s=1.0, max_retries=0), PROBLEMS[:2])
    assert out.loc["p0:0", "error"] is None and out.loc["p0:0", "text"] == answer_for(PROBLEMS[0])[0]
    assert out.loc["p1:0", "error"] == "timeout after 1 attempts"


def test_unreachable_server_is_a_connection_error_row():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_all(teacher(f"http://127.0.0.1:{port}/v1", max_retries=1), PROBLEMS[:2])
    assert set(out["error"]) == {"connection error (ConnectError) after 2 attempts"}


@pytest.mark.parametrize("mode,error", [
    ("garbage", "malformed response: not JSON: b'<html>502 Bad Gateway</html>'"),
    ("no_choices", 'malformed response: no choices in {"id": "chatcmpl-test", "object": "chat.completion"}'),
    ("empty", "malformed response: empty content (finish_reason 'stop')"),
])
def test_malformed_200_is_an_error_row_without_retry(serve, mode, error):
    server = serve(rules={"12 plus": Behaviour(mode=mode)})
    out = run_all(teacher(server), PROBLEMS[:3])
    assert out.loc["p0:0", "error"] == error
    assert out.drop(index="p0:0")["error"].isna().all()
    assert server.count("12 plus") == 1


@pytest.mark.parametrize("status", [400, 422])
def test_client_errors_are_not_retried_and_carry_the_server_message(serve, status):
    server = serve(rules={"12 plus": Behaviour(mode="status", status=status)})
    out = run_all(teacher(server), PROBLEMS[:3])
    assert out.loc["p0:0", "error"] == f"HTTP {status}: This model's maximum context length is 16 tokens."
    assert out.drop(index="p0:0")["error"].isna().all()
    assert server.count("12 plus") == 1


def test_401_stops_the_run_with_the_key_variable_and_the_fix(serve, monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    server = serve(api_key="sk-right")
    with pytest.raises(DistillError) as err:
        list(teacher(server, concurrency=2).generate(requests_for(PROBLEMS)))
    text = str(err.value)
    assert "HTTP 401: Incorrect API key provided" in text
    assert "DISTILL_TEST_KEY" in text and "is not set" in text and "fix:" in text
    assert server.count() <= 2  # stopped at once, not one 401 per row
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-right")
    assert run_all(teacher(server), PROBLEMS[:2])["error"].isna().all()


def test_401_after_some_rows_yields_the_finished_ones_first(serve):
    server = serve()
    answer = server.behaviour

    def revoke_after_first(prompt: str) -> Behaviour:
        server.api_key = "sk-revoked"  # every later request is refused
        return answer(prompt)

    server.behaviour = revoke_after_first
    frames = []
    with pytest.raises(DistillError, match="HTTP 401"):
        for frame in teacher(server, concurrency=1).generate(requests_for(PROBLEMS[:3])):
            frames.append(frame)  # noqa: PERF402  (keep what came before the raise)
    assert len(frames) == 1 and list(frames[0]["request_id"]) == ["p0:0"]
    assert frames[0]["error"].isna().all()


def test_wrong_base_url_stops_the_run_naming_it(serve):
    server = serve()
    with pytest.raises(DistillError, match=r"(?s)HTTP 404.*teacher.endpoint.base_url"):
        list(teacher(server.base_url.removesuffix("/v1") + "/v2").generate(requests_for(PROBLEMS[:2])))


def test_force_think_warns_and_sends_the_conversation_unchanged(serve):
    server = serve()
    with pytest.warns(UserWarning, match="force_think has no effect"):
        out = run_all(teacher(server, force_think=True), PROBLEMS[:1])
    assert out.loc["p0:0", "error"] is None
    assert server.received[0].body["messages"] == [{"role": "user", "content": PROBLEMS[0]}]


def test_closing_early_cancels_the_requests_in_flight(serve):
    server = serve(default=Behaviour(mode="trickle", delay_s=30), rules={"12 plus": Behaviour()})
    gen = teacher(server, concurrency=2, shard_rows=1, timeout_s=60).generate(requests_for(PROBLEMS[:2]))
    assert list(next(gen)["request_id"]) == ["p0:0"]
    arrived = time.monotonic() + 10  # on a loaded machine p1 may still be on its way: wait for it
    while server.count() < 2 and time.monotonic() < arrived:
        time.sleep(0.02)
    gen.close()  # p1 is mid-answer: its connection is closed, not waited for
    assert not [t for t in threading.enumerate() if t.name == "distill-http"]
    deadline = time.monotonic() + 10  # a bound on waiting, not a speed check
    while server.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.count() == 2 and server.aborted == 1


def test_no_requests_no_frames(serve):
    server = serve()
    assert list(teacher(server).generate(requests_for([]))) == []
    assert server.count() == 0
