"""Multi-worker SFT through Ray Train on 2 CPU workers; FSDP / ZeRO-3 settings checked as data."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from distill.pipeline.errors import RecipeError
from distill.students.chat import build_examples
from distill.students.config import TrainConfig, validate_for_machine
from distill.students.loading import load_tokenizer
from distill.students.packing import plan_batches
from distill.students.ray_train import deepspeed_zero3_config, scaling_config, strategy_args
from distill.students.sft import train_student, training_args


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _cfg(student, **kw) -> TrainConfig:
    base = {"student": str(student), "max_length": 420, "per_device_batch_tokens": 1024, "epochs": 1,
                "logging_steps": 1, "save_steps": 50, "gradient_checkpointing": False}
    return TrainConfig(**{**base, **kw})


def _plan_size(rows, cfg) -> int:
    examples = build_examples(load_tokenizer(cfg), rows.prompt.tolist(), rows.reasoning.tolist(),
                              rows.answer_text.tolist(), think_format="r1", max_length=420)
    return len(plan_batches([e["length"] for e in examples], mode="packed", token_budget=1024))


def test_two_cpu_workers_train_on_their_own_rows(ray_cluster, tiny_models, traces, tmp_path):
    cfg = _cfg(tiny_models["llama"], num_workers=2)
    events = []
    res = train_student(traces, cfg, tmp_path / "run", progress=events.append)
    assert res.metrics["world_size"] == 2
    # every kept row trained on exactly one worker, the rest rejected; each worker got one of the
    # two halves of the rows in row_id order (by content, not by file or block order)
    first, second = (set(ids) for ids in res.worker_row_ids)
    assert first.isdisjoint(second) and first | second == set(res.kept_row_ids)
    assert first | second | set(res.rejected.row_id) == set(traces.row_id)
    assert len(res.kept_row_ids) == len(set(res.kept_row_ids)) == res.metrics["rows_kept"]
    ordered = sorted(traces.row_id)
    half = len(ordered) // 2
    assert first <= set(ordered[:half]) and second <= set(ordered[half:])
    assert res.metrics["rows_per_worker"] == [len(first), len(second)]
    # data parallel over each worker's own batches: as many steps as the busier worker has
    kept = traces[traces.row_id.isin(res.kept_row_ids)]
    per_worker = [_plan_size(kept[kept.row_id.isin(ids)], cfg) for ids in (first, second)]
    assert res.metrics["global_step"] == max(per_worker) < sum(per_worker)
    assert all(math.isfinite(h["loss"]) for h in res.metrics["loss_history"])
    assert [e["step"] for e in events if "loss" in e] == list(range(1, res.metrics["global_step"] + 1))
    assert AutoModelForCausalLM.from_pretrained(res.model_dir) is not None
    assert (res.adapter_dir / "adapter_config.json").exists()

    # the same rows in another order and other blocks: the same shards and the same weights
    shuffled = traces.sample(frac=1, random_state=3)
    blocks = ray.data.from_pandas([shuffled.iloc[:7], shuffled.iloc[7:13], shuffled.iloc[13:]])
    again = train_student(blocks, cfg, tmp_path / "again")
    assert again.worker_row_ids == res.worker_row_ids
    assert _weights(again.adapter_dir) == _weights(res.adapter_dir)


def _weights(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(adapter_dir / "adapter_model.safetensors").items()}


def test_gpu_scaling_config_and_strategies_as_data():
    cfg = TrainConfig(student="m", num_workers=4, strategy="fsdp", max_length=1024,
                      per_device_batch_tokens=4096)
    sc = scaling_config(cfg, use_gpu=True)
    assert sc.num_workers == 4 and sc.use_gpu and sc.resources_per_worker["GPU"] == 1
    cpu = scaling_config(cfg.model_copy(update={"num_workers": 2}), use_gpu=False)
    assert cpu.resources_per_worker == {"CPU": 1} and not cpu.use_gpu

    # transformers accepts the FSDP settings and turns them into accelerate's FSDP2 plugin args
    args = training_args(cfg, Path("/tmp/unused"), **strategy_args(cfg))
    assert args.fsdp and args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["reshard_after_forward"] is True
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert args.gradient_checkpointing is False  # FSDP does its own, without the extra gather

    ds = deepspeed_zero3_config(cfg)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert {k for k, v in ds.items() if v == "auto"} == {
        "gradient_accumulation_steps", "gradient_clipping", "train_batch_size",
        "train_micro_batch_size_per_gpu"}
    zero3 = cfg.model_copy(update={"strategy": "deepspeed_zero3"})
    assert strategy_args(zero3) == {"deepspeed": ds}
    assert strategy_args(cfg.model_copy(update={"strategy": "ddp"})) == {}


def test_sharded_strategies_need_gpus_and_workers():
    with pytest.raises(ValidationError, match="num_workers >= 2"):
        TrainConfig(student="m", strategy="fsdp")
    cfg = TrainConfig(student="m", strategy="fsdp", num_workers=2)
    with pytest.raises(RecipeError, match="strategy fsdp is for CUDA GPU clusters"):
        validate_for_machine(cfg, has_cuda=False)
