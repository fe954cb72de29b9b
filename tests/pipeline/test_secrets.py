"""Configured secrets are masked in every error, stored file and printed line (pipeline.secrets)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from distill.pipeline.errors import DistillError
from distill.pipeline.secrets import (
    MASK,
    RedactedStream,
    looks_like_env_name,
    redact,
    redact_frame,
    redacted_traceback,
    watch_env,
)
from distill.pipeline.store import write_json, write_parquet

CANARY = "sk-canary-5f0c1d2e3b4a69788796a5b4"


@pytest.fixture
def canary(monkeypatch):
    monkeypatch.setenv("DISTILL_CANARY_KEY", CANARY)
    watch_env("DISTILL_CANARY_KEY")
    return CANARY


def test_watched_variables_and_the_hf_token_are_masked(canary, monkeypatch, tmp_path):
    assert redact(f"bad key {canary}!") == f"bad key {MASK}!"
    monkeypatch.setenv("HF_TOKEN", "hf_AbCdEfGh1234567890")
    assert redact("token hf_AbCdEfGh1234567890") == f"token {MASK}"
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "token").write_text("hf_FromTheLoginFile42\n")  # `huggingface-cli login`
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert redact("x hf_FromTheLoginFile42") == f"x {MASK}"
    assert redact("short ones stay: abc") == "short ones stay: abc"
    assert redact(f"cut short: ...{canary[:12]}") == f"cut short: ...{MASK}"  # a fragment too
    assert redact(f"{canary[:7]} {canary}{canary}") == f"{canary[:7]} {MASK}{MASK}"


def test_errors_files_and_consoles_never_hold_a_secret(canary, tmp_path, capsys):
    err = DistillError(f"the server said {canary}", fix=f"not {canary}")
    assert canary not in str(err) and canary not in err.fix and MASK in str(err)
    frame = pd.DataFrame({"text": ["fine", f"echo {canary}"], "n": [1, 2],
                          "messages": [[{"content": "hi"}], []]})
    assert redact_frame(frame.iloc[:1]) is not None and redact_frame(frame)["text"][1] == f"echo {MASK}"
    assert frame["text"][1] == f"echo {canary}"  # the caller's frame is left alone
    write_parquet(frame, tmp_path / "rows.parquet")
    write_json(tmp_path / "manifest.json", {"error": f"echo {canary}"})
    for path in tmp_path.iterdir():
        assert canary.encode() not in path.read_bytes()
    assert pd.read_parquet(tmp_path / "rows.parquet")["text"].tolist() == ["fine", f"echo {MASK}"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"error": f"echo {MASK}"}
    RedactedStream().write(f"printed {canary}\n")
    assert capsys.readouterr().out == f"printed {MASK}\n"


def test_child_processes_know_the_watched_variables(canary):
    import subprocess
    import sys

    code = "from distill.pipeline.secrets import redact; print(redact('key ' + __import__('os')" \
           ".environ['DISTILL_CANARY_KEY']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"key {MASK}"  # as a Ray worker started after the recipe loaded


def test_a_traceback_is_masked(canary):
    try:
        raise RuntimeError(f"the hub said Bearer {canary}")
    except RuntimeError as exc:
        text = redacted_traceback(exc)
    assert "RuntimeError: the hub said Bearer [redacted]" in text and canary not in text


@pytest.mark.parametrize("name, ok", [("DEEPSEEK_API_KEY", True), ("my_key", True),
                                      ("OPENAI_API_KEY_2", True), ("sk-abc123", False),
                                      ("hf_AbCdEfGhIjKlMnOpQr12", False), ("", False)])
def test_a_variable_name_is_told_from_a_key(name, ok):
    assert looks_like_env_name(name) is ok
