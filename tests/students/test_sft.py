"""train_student end to end on a tiny model: artefacts, merge, rejects, batching modes, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill.pipeline.errors import DistillError, RecipeError
from distill.students.checkpoints import last_checkpoint
from distill.students.config import TrainConfig, validate_for_machine
from distill.students.sft import train_student

ROOT = Path(__file__).resolve().parents[2]


def _cfg(student: Path, **kw) -> TrainConfig:
    base = {"student": str(student), "max_length": 420, "per_device_batch_tokens": 1024, "max_steps": 6,
                "save_steps": 3, "logging_steps": 1, "learning_rate": 2e-3, "warmup_ratio": 0.0,
                "gradient_checkpointing": False}
    return TrainConfig(**{**base, **kw})


def _logits(model_or_path, ids):
    model = model_or_path if not isinstance(model_or_path, Path) else \
        AutoModelForCausalLM.from_pretrained(model_or_path, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_lora_run_writes_merged_model_adapter_and_r1_tokenizer(tiny_qwen2, traces, tmp_path):
    events = []
    res = train_student(traces, _cfg(tiny_qwen2, epochs=1), tmp_path / "run", progress=events.append)
    m = res.metrics
    assert len(res.kept_row_ids) + len(res.rejected) == len(traces)
    assert len(res.rejected) > 0 and set(res.rejected.reject_reason) == {"too_long_for_max_length"}
    assert set(res.rejected.row_id).isdisjoint(res.kept_row_ids)
    assert m["global_step"] == 6 and [h["step"] for h in m["loss_history"]] == list(range(1, 7))
    assert m["loss_history"][-1]["loss"] < m["loss_history"][0]["loss"]
    assert m["padding_fraction"] == 0.0 and m["attn_implementation"] == "sdpa_varlen"
    assert m["real_tokens"] > 0 and m["tokens_per_second"] > 0
    assert any("loss" in e for e in events)

    tok = AutoTokenizer.from_pretrained(res.model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n") and tok.eos_token == "<|im_end|>"
    merged = AutoModelForCausalLM.from_pretrained(res.model_dir, dtype=torch.float32)
    assert merged.generation_config.eos_token_id[0] == tok.convert_tokens_to_ids("<|im_end|>")
    assert merged.config.use_cache is True
    # the merged weights are base + adapter, and training moved them
    ids = torch.tensor([tok(prompt).input_ids])
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    base_logits = _logits(base, ids)
    with_adapter = PeftModel.from_pretrained(base, res.adapter_dir)
    torch.testing.assert_close(_logits(merged, ids), _logits(with_adapter, ids),
                               atol=1e-4, rtol=1e-4)
    assert (_logits(merged, ids) - base_logits).abs().max() > 1e-3


@pytest.mark.parametrize("batching", ["grouped", "padded"])
def test_full_finetune_with_padded_batching(tiny_models, traces, tmp_path, batching):
    extra = {"batch_size": 4} if batching == "padded" else {}
    cfg = _cfg(tiny_models["llama"], method="full", batching=batching, max_steps=3,
               learning_rate=1e-3, gradient_checkpointing=True, **extra)
    res = train_student(traces, cfg, tmp_path / "run")
    assert res.adapter_dir is None and res.metrics["attn_implementation"] == "sdpa"
    assert 0 < res.metrics["padding_fraction"] < 1
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert (_logits(res.model_dir, ids) - _logits(tiny_models["llama"], ids)).abs().max() > 1e-3


def test_truncate_keeps_overlong_rows(tiny_qwen2, traces, tmp_path):
    cfg = _cfg(tiny_qwen2, overlong="truncate", max_steps=1)
    res = train_student(traces, cfg, tmp_path / "run")
    assert len(res.kept_row_ids) == len(traces) and res.rejected.empty
    assert res.metrics["rows_truncated"] > 0


def test_bad_inputs_fail_with_the_fix(tiny_qwen2, traces, tmp_path):
    with pytest.raises(DistillError, match="answer_text"):
        train_student(traces.drop(columns=["answer_text"]), _cfg(tiny_qwen2), tmp_path)
    with pytest.raises(DistillError, match="max_length"):
        train_student(traces, _cfg(tiny_qwen2, max_length=16), tmp_path)
    with pytest.raises(RecipeError, match="QLoRA needs a CUDA GPU"):
        validate_for_machine(_cfg(tiny_qwen2, method="qlora"), has_cuda=False)
    with pytest.raises(ValidationError, match="per_device_batch_tokens"):
        _cfg(tiny_qwen2, max_length=4096, per_device_batch_tokens=1024)
    with pytest.raises(ValidationError, match="batch_size applies to batching: padded"):
        _cfg(tiny_qwen2, batch_size=4)
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(student="x", epoch=3)


def _checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder shaped like the Trainer's: state, whole safetensors, an optimizer zip."""
    import torch
    from safetensors.torch import save_file

    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, str(ckpt / "adapter_model.safetensors"))
    torch.save({"step": step}, ckpt / "optimizer.pt")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def test_last_checkpoint_skips_and_deletes_incomplete(tmp_path):
    _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 4)
    (tmp_path / "checkpoint-6").mkdir()                     # killed before its state was written
    assert last_checkpoint(tmp_path).name == "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()


@pytest.mark.parametrize("damage", ["state_cut", "weights_cut", "optimizer_cut"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    _checkpoint(tmp_path, 2)
    newest = _checkpoint(tmp_path, 4)
    target = {"state_cut": "trainer_state.json", "weights_cut": "adapter_model.safetensors",
              "optimizer_cut": "optimizer.pt"}[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(data[: len(data) // 2])   # a crash or a full disk cut it short
    assert last_checkpoint(tmp_path, clean=False).name == "checkpoint-2"
    assert last_checkpoint(tmp_path).name == "checkpoint-2"
    assert not newest.exists()


RESUME_SCRIPT = textwrap.dedent("""
    import sys, time, pandas as pd
    from pathlib import Path
    from distill.students.config import TrainConfig
    from distill.students.sft import train_student
    rows = pd.read_parquet(sys.argv[1])
    cfg = TrainConfig.model_validate_json(Path(sys.argv[2]).read_text())
    train_student(rows, cfg, Path(sys.argv[3]), progress=lambda e: time.sleep(0.3))
""")


def test_killed_run_resumes_from_its_last_checkpoint(tiny_qwen2, traces, tmp_path):
    cfg = _cfg(tiny_qwen2, max_steps=8, save_steps=2, logging_steps=1, save_total_limit=2)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    traces.to_parquet(tmp_path / "rows.parquet")
    (tmp_path / "run.py").write_text(RESUME_SCRIPT)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "rows.parquet"),
         str(tmp_path / "cfg.json"), str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline and last_checkpoint(out / "checkpoints", clean=False) is None:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(last_checkpoint(out / "checkpoints", clean=False).name.split("-")[1])
    assert not (out / "model").exists() and 2 <= killed_at < 8  # killed mid-run

    res = train_student(traces, cfg, out)  # same inputs, same out_dir: resumes
    assert res.metrics["resumed_from_step"] == killed_at and res.metrics["global_step"] == 8
    assert res.metrics["loss_history"][-1]["step"] == 8
    assert AutoModelForCausalLM.from_pretrained(res.model_dir) is not None
    state = pd.read_json(out / "checkpoints" / "checkpoint-8" / "trainer_state.json", typ="series")
    assert state["global_step"] == 8
