"""The run report: one self-contained page that a real browser renders without errors, and the
same content as Markdown.

A run directory is written here as the stages leave it (run.json, manifests, kept and rejected
Parquet) with realistic variety: rejected traces of several reasons, verified samples with math
levels, a loss curve, an evaluation with a paired comparison. Headless Chromium (Debian's
package) loads the page through the DevTools protocol (tests/workflows/browser.py): no console
errors, no network requests, every image decoded; the screenshot is kept in the test's folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.pipeline.store import RunStore, open_run, write_json, write_parquet
from distill.workflows.report import write_report
from helpers import run_cli
from tests.workflows.browser import CHROMIUM, render_page

REASONS = ["wrong_answer", "truncated", "duplicate_exact"]


def _stage(store: RunStore, name: str, kept: pd.DataFrame, rejected: pd.DataFrame, **manifest) -> None:
    key = f"{name}{'0' * 60}"[:64]
    folder = store.stage_dir(name, key)
    write_parquet(kept, folder / "data" / "part-0.parquet")
    if len(rejected):
        write_parquet(rejected, folder / "rejected" / "part-0.parquet")
    counts = rejected["reject_reason"].value_counts().to_dict() if len(rejected) else {}
    write_json(folder / "manifest.json", {"stage": name, "key": key, "rows_in": len(kept) + len(rejected),
                                          "kept": len(kept), "rejected": counts, "seconds": 12.5,
                                          **manifest})
    store.record(name, key, "toy", {})


def fake_run(root: Path) -> RunStore:
    """A finished run of 40 prompts x 4 samples, as the stages write it."""
    rng = np.random.default_rng(0)
    store = RunStore(root)
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(40)],
                            "problem": [f"What is {i} + {i}?" for i in range(40)],
                            "level": [f"Level {1 + i % 4}" for i in range(40)]})
    _stage(store, "prompts", prompts, pd.DataFrame())
    traces = prompts.loc[prompts.index.repeat(4)].reset_index(drop=True)
    traces["sample_index"] = traces.groupby("prompt_id").cumcount()
    traces["completion_tokens"] = rng.integers(20, 400, len(traces))
    traces["reasoning"] = [f"Let me add. <step {i}> " * 20 for i in range(len(traces))]
    traces["answer_text"] = "The answer is \\boxed{4}."
    traces["reference"] = "4"
    traces["correct"] = rng.random(len(traces)) < np.linspace(0.1, 0.9, len(traces))
    _stage(store, "generate", traces, pd.DataFrame(), prompt_tokens=9000, completion_tokens=int(
        traces["completion_tokens"].sum()), cost=0.42, generated_rows=160, cached_rows=0, prompts=40,
        samples_per_prompt=4, finish_reasons={"stop": 150, "length": 10}, reproducible_sampling=False)
    reason = np.where(~traces["correct"], "wrong_answer", None)
    reason[rng.random(len(traces)) < 0.08] = "truncated"
    reason[(reason == None) & (rng.random(len(traces)) < 0.1)] = "duplicate_exact"
    traces["reject_reason"] = reason
    _stage(store, "curate", traces[traces["reject_reason"].isna()].drop(columns="reject_reason"),
           traces[traces["reject_reason"].notna()])
    kept = traces[traces["reject_reason"].isna()].drop(columns="reject_reason")
    _stage(store, "train", kept, pd.DataFrame(), metrics={"loss_history": [
        {"step": s, "loss": 2.5 * np.exp(-s / 30) + 0.4} for s in range(5, 101, 5)]})
    results = {m: {"arith": {"pass@1": p, "ci95_low": p - 0.08, "ci95_high": p + 0.08, "cons@4": p + 0.05,
                             "questions": 64, "samples_per_question": 4}}
               for m, p in (("student", 0.31), ("base", 0.22))}
    _stage(store, "evaluate", pd.DataFrame({"model": ["student"], "correct": [True]}), pd.DataFrame(),
           results=results, paired={"arith": {"difference": 0.09, "ci95_low": 0.01, "ci95_high": 0.17,
                                              "excludes_zero": True, "questions": 64}},
           protocol={"parsing": "last boxed", "cons": "majority", "interval": "Wilson",
                     "paired": "MOVER", "models": {}})
    return store


def test_the_report_holds_every_part_and_the_markdown_says_the_same(tmp_path):
    store = fake_run(tmp_path / "run")
    files = write_report(store)
    assert [f.name for f in files[:2]] == ["index.html", "summary.md"]
    page, md = files[0].read_text(), files[1].read_text()
    for heading in ("Funnel", "Teacher", "Trace lengths", "Teacher pass rate", "Training",
                    "Evaluation", "Example traces"):
        assert f">{heading}</h2>" in page and f"## {heading}" in md
    assert "the student is better than its base" in page and "the student is better" in md
    assert "Level 1" in page and "Level 4" in md  # pass rate by level
    for reason in REASONS:
        assert reason in page and reason in md
    assert page.count("<details>") >= 4  # reasoning collapsed, per example
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "the page must not load anything"
    assert page.count("data:image/png;base64,") == 5
    for chart in ("funnel", "lengths", "teacher_pass_rates", "loss", "pass_rates"):
        assert (files[0].parent / f"{chart}.png").stat().st_size > 1000


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (Debian: "
                    "apt-get install chromium; .ci/run installs it)")
def test_the_page_renders_in_a_real_browser_without_errors(tmp_path):
    files = write_report(fake_run(tmp_path / "run"))
    seen = render_page(files[0], tmp_path / "report.png")
    assert seen.console == [] and seen.exceptions == [], (seen.console, seen.exceptions)
    assert seen.requests == [], f"the page fetched {seen.requests}"
    assert len(seen.images) == 5 and all(i["ok"] and i["width"] > 300 for i in seen.images), seen.images
    assert seen.title == "distill report: toy"
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_report_command_writes_the_page(tmp_path, distill_home):
    fake_run(tmp_path / "run")
    out = run_cli(["report", str(tmp_path / "run")], home=distill_home, cwd=tmp_path).stdout
    assert "index.html" in out and (tmp_path / "run" / "report" / "index.html").exists()
    assert open_run(tmp_path / "run").stage("curate").manifest["kept"] > 0
