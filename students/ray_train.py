"""Multi-worker SFT through Ray Train: `train_with_ray(None, cfg, out_dir, dataset=ds)`;
train_student calls it when `cfg.num_workers > 1`.

    TorchTrainer(_train_loop, datasets={"train": ds}, dataset_config=OwnBlock(), ...)

Every worker runs students.sft.train_rows (or the `run` function given, e.g. an on-policy
round): Ray Train's TorchTrainer sets up torch.distributed (gloo on CPU, NCCL on GPU) and the
RANK/WORLD_SIZE env that transformers' Trainer reads, so the Trainer runs data parallel, or
sharded with `strategy: fsdp` (FSDP2 through accelerate) / `deepspeed_zero3` (a ZeRO-3 config
through TrainingArguments(deepspeed=...)); those two are for GPU clusters, so here they are
built and tested as data. SFT's rows reach the workers through Ray Data: each worker reads its
own block of the curated set with `ray.train.get_dataset_shard("train")` (students.sft_shard:
every row on exactly one worker, by row_id), tokenizes and packs it, and steps in lockstep with
the others (students.sft.run_training, own_rows). An on-policy round's examples are one list
that travels once through the object store, and each worker takes every num_workers-th batch.
Rank 0 writes the checkpoints (out_dir/checkpoints) and the final model, so on a multi-node
cluster out_dir must be storage every node sees (NFS, a mounted bucket); Ray's own run state
goes to out_dir/ray. Progress dicts from rank 0 come back live through a Ray queue and are
passed to `progress` here; every worker's final metrics come back the same way.
Facts (Ray 2.60, Train V2 default): TorchTrainer + a transformers Trainer + peft LoRA trains on
2 CPU workers with resources_per_worker={"CPU": 1}; V2's controller takes no CPU. Ray Train's
default DataConfig splits with streaming_split(equal=True), which drops up to n-1 rows.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.students.config import TrainConfig

_FINAL = "__final_metrics__"


def scaling_config(cfg: TrainConfig, *, use_gpu: bool, cpus_per_gpu_worker: int = 8):
    """Ray ScalingConfig: one CPU per CPU worker; one GPU (and some CPUs for the dataloader and
    tokenizer threads) per GPU worker."""
    from ray.train import ScalingConfig

    per_worker = {"CPU": cpus_per_gpu_worker, "GPU": 1} if use_gpu else {"CPU": 1}
    return ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                         resources_per_worker=per_worker)


def fsdp_config(cfg: TrainConfig) -> dict[str, Any]:
    """TrainingArguments.fsdp_config for FSDP2 full sharding. Wrapping falls back to the model's
    `_no_split_modules` (its decoder layer); activation checkpointing is FSDP's own (transformers
    warns that gradient_checkpointing under FSDP costs a redundant all-gather)."""
    return {
        "version": 2,
        "reshard_after_forward": True,  # ZeRO-3-like: params gathered per layer, freed after
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "activation_checkpointing": cfg.gradient_checkpointing,
        "cpu_ram_efficient_loading": True,  # rank 0 reads the weights, others get a broadcast
        "state_dict_type": "FULL_STATE_DICT",  # final save is one HF-loadable model
    }


def deepspeed_zero3_config(cfg: TrainConfig) -> dict[str, Any]:
    """A DeepSpeed ZeRO-3 config; "auto" values are filled by transformers from TrainingArguments
    (batch size, accumulation, clipping, precision, optimizer, scheduler)."""
    return {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            "stage3_gather_16bit_weights_on_model_save": True,  # save_model writes a full model
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",  # 1: one planned (packed) batch per step
        "wall_clock_breakdown": False,
    }


def strategy_args(cfg: TrainConfig) -> dict[str, Any]:
    """Extra TrainingArguments for cfg.strategy."""
    if cfg.strategy == "fsdp":
        return {"fsdp": True, "fsdp_config": fsdp_config(cfg)}
    if cfg.strategy == "deepspeed_zero3":
        return {"deepspeed": deepspeed_zero3_config(cfg)}
    return {}


def _train_loop(config: dict) -> None:
    import importlib

    import ray
    import ray.train

    module, name = config["run"].split(":")
    run = getattr(importlib.import_module(module), name)
    cfg = TrainConfig.model_validate(config["cfg"])
    if config["data"] is None:  # this worker's own part of the rows, through Ray Data
        from distill.students.sft_shard import TRAIN, read_shard

        data = read_shard(ray.train.get_dataset_shard(TRAIN))
    else:
        data = ray.get(config["data"])
    queue = config["queue"]
    rank = ray.train.get_context().get_world_rank()
    progress = queue.put if rank == 0 else None
    metrics = run(data, cfg, Path(config["out_dir"]), progress=progress,
                  extra_args=strategy_args(cfg), **config["run_kwargs"])
    metrics["world_size"] = ray.train.get_context().get_world_size()
    # Train V2 keeps reported metrics only with checkpoints: send them ourselves
    queue.put({_FINAL: metrics, "rank": rank})
    ray.train.report({"global_step": metrics["global_step"]})


def _drain(queue, progress: Callable[[dict], None] | None, stop: threading.Event,
           final: dict[int, dict]) -> None:
    from ray.util.queue import Empty

    while True:
        try:
            item = queue.get(timeout=0.5)
        except Empty:
            if stop.is_set():
                return
            continue
        if _FINAL in item:
            final[item["rank"]] = item[_FINAL]
        elif progress is not None:
            progress(item)


def train_with_ray(data: list[dict] | None, cfg: TrainConfig, out_dir: Path, *,
                   progress: Callable[[dict], None] | None = None,
                   use_gpu: bool | None = None, run: str = "distill.students.sft:run_training",
                   run_kwargs: dict[str, Any] | None = None,
                   dataset: Any = None) -> list[dict[str, Any]]:
    """Train on `cfg.num_workers` Ray Train workers; returns every worker's metrics, by rank.
    Each worker calls `run` ("module:function") with (its data, cfg, out_dir, progress=,
    extra_args=, **run_kwargs). Its data: with `dataset` (students.sft_shard.exact_blocks, one
    block per worker), the rows of its own block, read with `get_dataset_shard` (SFT passes
    run="distill.students.sft:train_rows"); otherwise the same `data` list on every worker
    (on-policy rounds), which travels once through the object store."""
    import ray
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    if not ray.is_initialized():
        ray.init()
    if use_gpu is None:
        use_gpu = cfg.use_gpu if cfg.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    out_dir = Path(out_dir).resolve()
    from distill.pipeline.cluster import on_this_node

    queue = Queue(actor_options=on_this_node())  # on a worker node it would die with it
    own = {}
    if dataset is not None:
        from distill.students.sft_shard import TRAIN, OwnBlock

        own = {"datasets": {TRAIN: dataset}, "dataset_config": OwnBlock()}
    config = {"cfg": cfg.model_dump(), "data": None if own else ray.put(data), "queue": queue,
              "out_dir": str(out_dir), "run": run, "run_kwargs": run_kwargs or {}}
    trainer = TorchTrainer(
        _train_loop, train_loop_config=config, **own,
        scaling_config=scaling_config(cfg, use_gpu=use_gpu),
        run_config=RunConfig(name="sft", storage_path=str(out_dir / "ray"),
                             failure_config=FailureConfig(max_failures=0)))
    stop, final = threading.Event(), {}
    drainer = threading.Thread(target=_drain, args=(queue, progress, stop, final), daemon=True)
    drainer.start()
    try:
        trainer.fit()
    finally:
        stop.set()
        drainer.join()
        queue.shutdown()
    if len(final) != cfg.num_workers:
        raise RuntimeError(f"Ray Train finished but only workers {sorted(final)} sent metrics; "
                           "see the worker logs")
    return [final[r] for r in range(cfg.num_workers)]
