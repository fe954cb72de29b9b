"""Publishing to a hub for real: the real huggingface_hub client against a Hub-compatible server on
127.0.0.1 (hub_server.py), which records what the client sends.

Round trip (publish, snapshot_download into fresh folders, transformers loads and generates,
datasets.load_dataset reads both configs, ModelCard/DatasetCard parse), the wire (LFS through the
batch API, multipart, the CDN without the token), a connection dropped mid-upload and a re-run
that sends only what had not arrived, a refused overwrite (and --overwrite), a branch, a wrong
token, and local folders of another run. vLLM loading is in tests/workflows/test_smoke_workflow.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import DatasetCard, ModelCard, constants, snapshot_download

from distill.pipeline.errors import DistillError
from distill.students.publish import PublishConfig, publish_student
from tests.students.hub_server import HubServer

TOKEN = "hf_test_write_token_0123456789"
LINEAGE = {
    "recipe": "toy", "teacher": "smollm2-135m-instruct", "method": "lora",
    "teacher_hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "student_base": "smollm2-135m-instruct", "student_base_hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "data_counts": {"prompts": 2, "traces": 4, "curated": 3, "trained": 3, "rejected": {"curate:wrong_answer": 1}},
    "funnel": [{"stage": "curate", "rows_in": 4, "kept": 3, "rejected": {"wrong_answer": 1}}],
    "eval": {"student": {"arith": {"pass@1": 0.5, "ci95_low": 0.2, "ci95_high": 0.8, "cons@4": 0.5,
                                   "questions": 8, "samples_per_question": 4}},
             "base": {"arith": {"pass@1": 0.25, "ci95_low": 0.1, "ci95_high": 0.5, "cons@4": 0.25,
                                "questions": 8, "samples_per_question": 4}}},
    "eval_paired": {"arith": {"difference": 0.25, "ci95_low": -0.05, "ci95_high": 0.55,
                              "excludes_zero": False, "questions": 8}},
}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A hub whose token is in HF_TOKEN; no login file; the client online and on plain LFS."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login"))
    with HubServer(tmp_path / "store", tokens={TOKEN: "tester"}, orgs={"tester": ["distill-org"]},
                   multipart_bytes=512 * 1024) as server:
        yield server


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"row_id": ["a:0", "b:0", "b:1"], "prompt": ["What is 1 + 1?", "What is 2 + 2?",
                                                                     "What is 2 + 2?"],
                         "reasoning": ["1 plus 1", "2 plus 2", "two and two"], "answer_text": ["2", "4", "4"],
                         "completion_tokens": [3, 3, 3]})


def _rejected() -> pd.DataFrame:
    return pd.DataFrame({"stage": ["curate"], "reject_reason": ["wrong_answer"], "row_id": ["a:1"],
                         "text": ["3"], "completion_tokens": [1]})


def _cfg(hub: HubServer, **kw) -> PublishConfig:
    return PublishConfig(push=True, endpoint=hub.url, **kw)


def _publish(model_dir: Path, hub: HubServer, out: Path, lineage: dict = LINEAGE, **kw) -> dict:
    return publish_student(model_dir, _rows(), lineage, _cfg(hub, **kw), out, "distill-org/toy",
                           rejected=_rejected(), example_prompt="What is 1 + 1?")


def test_round_trip_through_the_real_client(tmp_path, hub, tiny_models):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = _publish(tiny_models["llama"], hub, tmp_path / "local")
    assert [p["repo_id"] for p in info["pushed"]] == ["distill-org/toy", "distill-org/toy-data"]
    assert all(p["transfer"] == "lfs" for p in info["pushed"])
    model = Path(snapshot_download("distill-org/toy", endpoint=hub.url, local_dir=tmp_path / "m"))
    data = Path(snapshot_download("distill-org/toy-data", repo_type="dataset", endpoint=hub.url,
                                  local_dir=tmp_path / "d"))

    tok = AutoTokenizer.from_pretrained(model)
    student = AutoModelForCausalLM.from_pretrained(model)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is 1 + 1?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = student.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert (model / "generation_config.json").exists() and tok.chat_template

    sft = load_dataset(str(data), split="train")
    assert sft.num_rows == 3 and set(sft.column_names) >= {"prompt", "reasoning", "answer_text"}
    rejected = load_dataset(str(data), "rejected", split="train")
    assert rejected["reject_reason"] == ["wrong_answer"]

    card = ModelCard.load(model / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["distill-org/toy-data"] and card.data.license == "apache-2.0"
    assert {(r.dataset_name, r.metric_type, r.metric_value) for r in card.data.eval_results} >= {
        ("arith", "pass@1", 0.5)}
    assert "within noise" in card.text and "How to use" in card.text
    assert DatasetCard.load(data / "README.md").data.configs[1]["config_name"] == "rejected"
    assert not (model / ".distill").exists()  # the local owner marker is never uploaded


def test_the_wire_is_what_the_hub_expects(tmp_path, hub, tiny_models):
    _publish(tiny_models["llama"], hub, tmp_path / "local")
    api = [r for r in hub.requests if r["host"] == "hub"]
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in api
               if not r["path"].startswith("/lfs-"))
    cdn = [r for r in hub.requests if r["host"] == "cdn"]
    assert cdn and all("authorization" not in r["headers"] for r in cdn)  # signed URLs, no token
    assert any("/lfs-part/" in r["path"] for r in cdn), "the model should go multipart"
    assert any("/lfs-upload/" in r["path"] for r in cdn), "the parquet should go in one PUT"
    commits = [r["json"] for r in api if r["path"].endswith("/commit/main")]
    kinds = {(op["key"], op["value"]["path"]) for c in commits for op in c if op["key"] != "header"}
    assert ("lfsFile", "model.safetensors") in kinds and ("file", "README.md") in kinds
    assert ("lfsFile", "data/train-00000.parquet") in kinds
    created = [r["json"] for r in api if r["path"] == "/api/repos/create"]
    assert [c["type"] for c in created] == ["model", "dataset"]
    assert all(c.get("visibility") == "private" or c.get("private") for c in created)
    assert TOKEN not in json.dumps(LINEAGE) + (tmp_path / "local" / "distill-org" / "toy" /
                                               "lineage.json").read_text()


def _sharded_model(folder: Path, shards: int = 6) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    for i in range(shards):
        (folder / f"model-{i:05d}-of-{shards:05d}.safetensors").write_bytes(os.urandom(96 * 1024))
    return folder


def test_a_dropped_connection_then_a_rerun_sends_only_what_had_not_arrived(tmp_path, hub, monkeypatch):
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda s: None)  # the client's backoff, not the test
    model = _sharded_model(tmp_path / "model")
    hub.cut_uploads(after=2)
    with pytest.raises(DistillError, match="broke off") as err:
        _publish(model, hub, tmp_path / "local")
    assert "run the same command again" in str(err.value)
    arrived = hub.lfs_objects()
    assert 2 <= len(arrived) < 6 and any(r.get("cut") for r in hub.requests)
    first = len(hub.requests)

    hub.heal()
    _publish(model, hub, tmp_path / "local")
    again = {r["path"].split("/")[2] for r in hub.requests[first:]
             if r["method"] == "PUT" and r["host"] == "cdn"}
    assert again and not again & arrived, "an object that had arrived was sent again"
    files = hub.files("distill-org/toy")
    assert {f"model-{i:05d}-of-00006.safetensors" for i in range(6)} <= set(files)
    local = tmp_path / "local" / "distill-org" / "toy"
    got = snapshot_download("distill-org/toy", endpoint=hub.url, local_dir=tmp_path / "down")
    for shard in model.glob("*.safetensors"):
        assert (Path(got) / shard.name).read_bytes() == (local / shard.name).read_bytes()


def test_an_existing_revision_is_not_overwritten_unless_asked(tmp_path, hub, tiny_models):
    _publish(tiny_models["llama"], hub, tmp_path / "a")
    head = hub.store.commit_of(hub.store.repo("model", "distill-org/toy"), "main")
    _publish(tiny_models["llama"], hub, tmp_path / "a")  # the same publication again: fine
    other = {**LINEAGE, "recipe": "another"}
    with pytest.raises(DistillError, match="already holds another publication") as err:
        _publish(tiny_models["qwen2"], hub, tmp_path / "b", lineage=other)
    assert "README.md (different content)" in str(err.value) and "--overwrite" in str(err.value)
    assert hub.store.commit_of(hub.store.repo("model", "distill-org/toy"), "main") == head

    (tmp_path / "b" / "distill-org" / "toy").mkdir(parents=True, exist_ok=True)
    info = _publish(tiny_models["qwen2"], hub, tmp_path / "b", lineage=other, overwrite=True)
    got = Path(snapshot_download("distill-org/toy", endpoint=hub.url, local_dir=tmp_path / "down",
                                 revision=info["pushed"][0]["commit"]))
    assert json.loads((got / "config.json").read_text())["model_type"] == "qwen2"
    assert "another" in (got / "README.md").read_text()


def test_a_branch_leaves_main_alone(tmp_path, hub, tiny_models):
    _publish(tiny_models["llama"], hub, tmp_path / "a")
    main = hub.files("distill-org/toy")
    _publish(tiny_models["qwen2"], hub, tmp_path / "b", lineage={**LINEAGE, "recipe": "second"},
             revision="run-2")
    assert hub.files("distill-org/toy") == main
    branch = Path(snapshot_download("distill-org/toy", endpoint=hub.url, revision="run-2",
                                    local_dir=tmp_path / "down"))
    assert json.loads((branch / "config.json").read_text())["model_type"] == "qwen2"


def test_a_wrong_token_says_so_without_showing_it(tmp_path, hub, tiny_models, monkeypatch):
    wrong = "hf_wrong_token_abcdefghijklmnop"
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(DistillError) as err:
        _publish(tiny_models["llama"], hub, tmp_path / "local")
    text = str(err.value)
    assert "refused the token from HF_TOKEN" in text and "401" in text and "hf auth login" in text
    assert wrong not in text and wrong[:12] not in text
    assert not [r for r in hub.requests if r["path"] == "/api/repos/create"]
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(DistillError, match="needs a hub token"):
        _publish(tiny_models["llama"], hub, tmp_path / "local")


def test_a_local_folder_of_another_run_is_not_replaced(tmp_path, tiny_models):
    def local(owner: str, **kw) -> dict:
        return publish_student(tiny_models["llama"], _rows(), LINEAGE, PublishConfig(**kw),
                               tmp_path / "hub", "toy", owner=owner)

    local("/runs/one")
    local("/runs/one")  # the same run again replaces its own
    with pytest.raises(DistillError, match="published by /runs/one") as err:
        local("/runs/two")
    assert "--overwrite" in str(err.value)
    local("/runs/two", overwrite=True)
    owner = json.loads((tmp_path / "hub" / "toy" / ".distill" / "owner.json").read_text())
    assert owner == {"run_dir": "/runs/two"}


def test_adapter_only_names_its_base_by_hub_id(tmp_path, hub, tiny_models):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    info = publish_student(tiny_models["llama"], _rows(), LINEAGE, _cfg(hub, adapter_only=True),
                           tmp_path / "local", "distill-org/toy", adapter_dir=adapter)
    got = Path(snapshot_download("distill-org/toy", endpoint=hub.url, local_dir=tmp_path / "down"))
    config = json.loads((got / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (got / "adapter_model.safetensors").exists() and not (got / "model.safetensors").exists()
    card = ModelCard.load(got / "README.md")
    assert card.data.library_name == "peft" and "PeftModel.from_pretrained" in card.text
    assert info["pushed"][0]["repo_id"] == "distill-org/toy"
    with pytest.raises(DistillError, match="no adapter"):
        publish_student(tiny_models["llama"], _rows(), LINEAGE, PublishConfig(adapter_only=True),
                        tmp_path / "x", "toy")


def test_a_push_without_a_token_stops_before_any_work(monkeypatch, tmp_path):
    from distill.pipeline.errors import RecipeError
    from distill.workflows.preflight import check_publish
    from distill.workflows.recipe import load_recipe
    from helpers import REPO

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login"))
    smoke = REPO / "workflows" / "recipes" / "smoke.yaml"
    with pytest.raises(RecipeError, match="no hub token"):
        check_publish(load_recipe(smoke, ["publish.push=true"]))
    with pytest.raises(RecipeError, match="makes no adapter"):
        check_publish(load_recipe(smoke, ["publish.adapter_only=true", "train.method=full"]))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    check_publish(load_recipe(smoke, ["publish.push=true"]))
