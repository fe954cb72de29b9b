"""Progress: plain lines for logs (a step's start, every 5%, its end) with rate, ETA, tokens/s and
the latest loss; a live bar with the same figures on a terminal."""
from __future__ import annotations

import io

from rich.console import Console

from distill.pipeline import progress as progress_module
from distill.pipeline.progress import stage_progress


def _clock(monkeypatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_logs_get_a_line_per_five_percent_with_rate_eta_and_tokens(monkeypatch):
    now = _clock(monkeypatch)
    out = Console(file=io.StringIO(), force_terminal=False, width=200)
    with stage_progress(out, "generate") as update:
        for done in range(0, 513, 8):  # 8 samples of 40 tokens a second
            update("samples", done, 512, tokens=done * 40)
            now[0] += 1.0
        update("samples", 512, 512, tokens=512 * 40)  # the end is said once
    lines = out.file.getvalue().splitlines()
    assert lines[0] == "  generate: samples 0/512 (0%)"
    assert 20 <= len(lines) <= 22, lines  # about one per 5%
    assert lines[10].startswith("  generate: samples 256/512 (50%) · 8.0/s · ETA 0m32s · 320 tok/s")
    assert lines[-1] == "  generate: samples 512/512 (100%) · 8.0/s · in 1m04s · 320 tok/s"


def test_slow_steps_show_seconds_each_and_the_loss(monkeypatch):
    now = _clock(monkeypatch)
    out = Console(file=io.StringIO(), force_terminal=False, width=200)
    with stage_progress(out, "train") as update:
        update("optimizer steps", 0, 4)
        now[0] += 30
        update("optimizer steps", 1, 4, loss=2.5)
    assert out.file.getvalue().splitlines()[-1] == (
        "  train: optimizer steps 1/4 (25%) · 30 s each · ETA 1m30s · loss 2.5")


def test_a_terminal_gets_a_live_bar_with_the_figures(monkeypatch):
    now = _clock(monkeypatch)
    out = Console(file=io.StringIO(), force_terminal=True, width=160)
    with stage_progress(out, "evaluate") as update:
        update("student answers", 0, 100)
        now[0] += 10
        update("student answers", 50, 100)
    text = out.file.getvalue()
    assert "student answers" in text and "5.0/s" in text and "ETA 0m10s" in text
