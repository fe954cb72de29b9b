"""The smoke recipe end to end through the real CLI: real vLLM (CPU), Ray, training, publishing.

One run is shared by the module's tests (engine starts cost ~20-40 s each on 2 cores).
"""
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
from distill.pipeline import open_run
from helpers import REPO, run_cli

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"
STAGES = ["prompts", "generate", "curate", "train", "evaluate", "publish"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, distill_home):
    work = tmp_path_factory.mktemp("smoke")
    proc = run_cli(["run", str(SMOKE), "--run-dir", str(work / "run")], home=distill_home, cwd=work)
    return work, proc


def test_every_stage_ran_and_wrote_parquet_and_manifest(smoke_run):
    work, proc = smoke_run
    for name in STAGES:
        assert f"{name}" in proc.stdout and "ran" in proc.stdout
    run = open_run(work / "run")
    for name in STAGES:
        out = run.stage(name)
        m = out.manifest
        assert m["stage"] == name and out.path.name == f"{name}-{m['key'][:12]}"
        assert m["rows_in"] == m["kept"] + sum(m["rejected"].values()), name
        kept, rejected = out.to_pandas(), out.to_pandas(rejected=True)
        assert len(kept) == m["kept"] and len(rejected) == sum(m["rejected"].values())
        assert pd.read_parquet(out.path / "data").shape[0] == m["kept"]  # plain pandas works too
        if len(rejected):
            assert rejected["reject_reason"].notna().all()
    prompts, gen = run.stage("prompts").manifest, run.stage("generate").manifest
    assert prompts["kept"] == 24
    assert gen["rows_in"] == 24 * 2 and gen["prompts"] == 24
    traces = run.stage("generate").to_pandas()
    assert {"prompt_id", "sample_index", "text", "prompt_tokens", "completion_tokens",
            "finish_reason"} <= set(traces.columns)
    assert not traces[["prompt_id", "sample_index"]].duplicated().any()
    assert (traces["completion_tokens"] > 0).all()
    assert set(traces["finish_reason"]) <= {"stop", "length"}
    ds = run.stage("curate").to_dataset()
    assert ds.num_rows == run.stage("curate").manifest["kept"]


def test_evaluation_reports_both_models_with_interval(smoke_run):
    work, proc = smoke_run
    manifest = open_run(work / "run").stage("evaluate").manifest
    results = manifest["results"]
    assert set(results) == {"student", "base"}
    for model in results.values():
        r = model["arithmetic_test"]
        assert r["questions"] == 8 and r["samples_per_question"] == 2
        assert 0.0 <= r["ci95_low"] <= r["pass@1"] <= r["ci95_high"] <= 1.0
        assert r["ci95_high"] > r["ci95_low"]  # honest even when nothing is solved
    paired = manifest["paired"]["arithmetic_test"]
    assert paired["questions"] == 8 and paired["ci95_low"] <= paired["difference"] <= paired["ci95_high"]
    rules = manifest["protocol"]["models"]
    assert set(rules) == {"student", "base"}
    assert all(r["stop_token_ids"] for r in rules.values())  # both stop at the end-of-turn token
    assert "pass@1" in proc.stdout and "student minus base" in proc.stdout
    assert "student minus base" in (work / "run" / "report" / "summary.md").read_text().lower()


def test_published_folder_loads_with_transformers(smoke_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, _ = smoke_run
    folder = work / "run" / "hub" / "smoke-student"  # each run publishes into its own folder
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2
    assert tok.chat_template
    assert list(folder.glob("*.safetensors"))
    card = (folder / "README.md").read_text()
    assert "tiny-llama (not on the hub)" in card and "arithmetic_test" in card  # no hub id: no base_model
    assert "model-index:" in card and "within noise" in card
    assert "Student minus base" in card and "stops at" in card  # paired comparison, eval rules
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["data_counts"]["prompts"] == 24
    assert lineage["data_counts"]["traces"] == 48
    data = pd.read_parquet(work / "run" / "hub" / "smoke-student-data" / "data")
    assert len(data) == lineage["data_counts"]["trained"]
    assert [m["role"] for m in data["messages"][0]] == ["user", "assistant"]  # as trained


def test_report_plots_exist(smoke_run):
    work, _ = smoke_run
    for name in ("index.html", "funnel.png", "lengths.png", "loss.png", "pass_rates.png", "summary.md"):
        assert (work / "run" / "report" / name).stat().st_size > 0


HUB_TOKEN = "hf_smoke_test_token_0123456789"
VLLM_LOAD = """
import sys
from vllm import LLM, SamplingParams

if __name__ == "__main__":
    llm = LLM(sys.argv[1], enforce_eager=True, dtype="bfloat16", max_model_len=512, seed=0)
    out = llm.chat([{"role": "user", "content": "What is 2 + 2?"}],
                   SamplingParams(max_tokens=8, temperature=0.0),
                   use_tqdm=False)   # vLLM's bar divides by its elapsed time, 0 on a fast machine
    print("GENERATED", len(out[0].outputs[0].token_ids))
"""


def test_publish_command_round_trip_to_a_hub(smoke_run, distill_home, tmp_path, monkeypatch):
    """`distill publish` to a Hub-compatible server; the student downloaded into a fresh folder
    loads and generates with vLLM (CPU); a wrong token is refused without being shown."""
    from huggingface_hub import ModelCard, constants, snapshot_download

    from distill.pipeline.cluster import CPU_ENGINE_ENV
    from tests.students.hub_server import HubServer

    work, _ = smoke_run
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": HUB_TOKEN}
    with HubServer(tmp_path / "store", tokens={HUB_TOKEN: "tester"}) as hub:
        args = ["publish", str(work / "run"), "--repo-id", "tester/smoke", "--endpoint", hub.url]
        out = run_cli(args, home=distill_home, cwd=work, extra_env=env).stdout
        assert "pushed model tester/smoke@main" in out and "pushed dataset tester/smoke-data@main" in out
        wrong = run_cli(args, home=distill_home, cwd=work, check=False,
                        extra_env={**env, "HF_TOKEN": "hf_not_the_right_one_0123456789"})
        assert wrong.returncode == 2 and "refused the token from HF_TOKEN" in wrong.stdout
        assert "hf_not_the_right_one" not in wrong.stdout + wrong.stderr
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        folder = snapshot_download("tester/smoke", endpoint=hub.url, token=HUB_TOKEN,
                                   local_dir=tmp_path / "download")
    assert ModelCard.load(Path(folder) / "README.md").data.eval_results
    script = tmp_path / "load_vllm.py"
    script.write_text(VLLM_LOAD)
    proc = subprocess.run([sys.executable, str(script), folder], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **CPU_ENGINE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert "GENERATED" in proc.stdout, proc.stderr[-3000:]
    assert int(proc.stdout.split("GENERATED")[1].split()[0]) > 0


def test_status_and_show(smoke_run, distill_home):
    work, _ = smoke_run
    status = run_cli(["status", str(work / "run")], home=distill_home, cwd=work).stdout
    for name in STAGES:
        assert name in status
    assert "done" in status and "not done" not in status
    shown = run_cli(["show", str(work / "run"), "generate", "--limit", "3"], home=distill_home, cwd=work).stdout
    assert "prompt_id" in shown and "(48 rows)" in shown


def test_rerun_runs_nothing(smoke_run, distill_home):
    work, _ = smoke_run
    again = run_cli(["run", str(SMOKE), "--run-dir", str(work / "run")], home=distill_home, cwd=work).stdout
    lines = [line for line in again.splitlines() if line.split()[:1] and line.split()[0] in STAGES]
    assert len(lines) == len(STAGES)
    assert all(line.split()[1] == "skipped" for line in lines), again


def test_changed_curate_setting_reruns_from_curate(smoke_run, distill_home):
    work, _ = smoke_run
    before = open_run(work / "run").stage("generate").manifest["finished_at"]
    out = run_cli(["run", str(SMOKE), "--run-dir", str(work / "run"),
                   "--set", "curate.filters.too_short.min_tokens=5"], home=distill_home, cwd=work).stdout
    status = {line.split()[0]: line.split()[1] for line in out.splitlines()
              if line.split()[:1] and line.split()[0] in STAGES}
    assert status == {"prompts": "skipped", "generate": "skipped", "curate": "ran",
                      "train": "ran", "evaluate": "ran", "publish": "ran"}
    run = open_run(work / "run")
    assert run.stage("generate").manifest["finished_at"] == before
    assert run.stage("curate").manifest["config"]["curate"]["filters"]["too_short"]["min_tokens"] == 5


def test_kill_during_generate_then_resume(tmp_path, distill_home):
    """SIGKILL the whole process group once some shards exist; the re-run finishes with every
    (prompt, sample) exactly once and reuses the finished shards."""
    run_dir = tmp_path / "run"
    args = ["run", str(SMOKE), "--run-dir", str(run_dir), "--set", "prompts.limit=160",
            "--set", "evaluate.enabled=false", "--set", "publish.enabled=false"]
    env = {**os.environ, "DISTILL_HOME": str(distill_home)}
    proc = subprocess.Popen([sys.executable, "-m", "distill.workflows.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    shards: list[Path] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            shards = [p for p in run_dir.glob("cache/generate-*/shards/*.parquet") if not p.name.startswith(".")]
            if shards:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert shards, "no shard was written before the deadline"
    assert not list(run_dir.glob("generate-*/manifest.json")), "killed too late: generate finished"
    run_cli(args, home=distill_home, cwd=tmp_path)
    gen = open_run(run_dir).stage("generate")
    m = gen.manifest
    assert 0 < m["cached_rows"] < 320
    assert m["cached_rows"] + m["generated_rows"] == 320
    traces = gen.to_pandas()
    assert len(traces) == 320
    assert not traces[["prompt_id", "sample_index"]].duplicated().any()
    assert traces.groupby("prompt_id").size().eq(2).all()
