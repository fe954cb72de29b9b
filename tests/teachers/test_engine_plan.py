"""What the R1 teacher of each r1_distill recipe asks Ray Data LLM and vLLM for, without a GPU.

The EngineSpec is built by teachers.base.VLLMTeacher itself (device "cuda", so the CPU defaults
stay out); its processor config is the real ray.data.llm vLLMEngineProcessorConfig, and Ray
Data LLM's own vLLM stage is built from it the way build_processor builds it, which is where
Ray decides the executor backend, the GPUs per replica and the placement group. Nothing starts:
no engine, no Ray cluster (the placement group request is recorded, not made).
"""
from __future__ import annotations

from functools import partial

import pytest
from distill.engines.vllm import EngineSpec
from distill.pipeline.cluster import CPU_ENGINE_ENV, vllm_is_cpu_build
from distill.teachers.base import VLLMTeacher
from distill.pipeline.keys import stage_key
from distill.workflows.recipe import Recipe, load_recipe, recipe_files
from distill.workflows.stages.generate import GenerateStage
from helpers import REPO, RESOLVERS

R1_RECIPES = recipe_files(REPO / "workflows" / "recipes" / "r1_distill")  # bases (_*.yaml) left out
SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"
TWO_H100_NODES = ["teacher.engine.pipeline_parallel_size=2", "teacher.accelerator_type=H100"]


def gpu_spec(recipe: Recipe) -> EngineSpec:
    teacher = VLLMTeacher(recipe.teacher.model_copy(update={"device": "cuda"}), recipe.seed)
    assert teacher.model == recipe.teacher.model, "a hub id passes through unresolved"
    return teacher.spec


@pytest.fixture(scope="module")
def engine_stage():
    """Ray Data LLM's vLLM stage class (importing it imports vllm: ~10 s here, once)."""
    from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStage

    return vLLMEngineStage


def build_stage(engine_stage, config):
    """The vLLM engine stage exactly as ray.llm's build_vllm_engine_processor constructs it
    (the fields that decide scheduling), from a vLLMEngineProcessorConfig."""
    return engine_stage(
        fn_constructor_kwargs={
            "batch_size": config.batch_size,
            "max_concurrent_batches": config.max_concurrent_batches,
            "model": config.model_source, "engine_kwargs": dict(config.engine_kwargs),
            "task_type": config.task_type, "max_pending_requests": config.max_pending_requests,
            "dynamic_lora_loading_path": config.dynamic_lora_loading_path,
            "placement_group_config": config.placement_group_config,
            "should_continue_on_error": config.should_continue_on_error,
            "log_engine_metrics": config.log_engine_metrics},
        map_batches_kwargs={"zero_copy_batch": True, "accelerator_type": config.accelerator_type,
                            "runtime_env": config.runtime_env})


def requested_placement_group(stage, monkeypatch) -> dict:
    """Call the stage's ray_remote_args_fn with Ray's placement_group recorded, not created."""
    import ray.util

    seen: dict = {}

    def record(bundles, strategy="PACK", **kwargs):
        seen.update(bundles=bundles, strategy=strategy, **kwargs)
        return object()

    monkeypatch.setattr(ray.util, "placement_group", record)
    args = stage.map_batches_kwargs["ray_remote_args_fn"]()
    strategy = args["scheduling_strategy"]
    assert strategy.placement_group_capture_child_tasks, "vLLM's workers must join the group"
    return seen


@pytest.mark.parametrize("path", R1_RECIPES, ids=lambda p: p.name)
def test_r1_teacher_engine_kwargs_and_sampling(path):
    recipe = load_recipe(path)
    spec = gpu_spec(recipe)
    assert not spec.on_cpu()
    kwargs = spec.engine_kwargs()
    assert kwargs["tensor_parallel_size"] == 8
    assert kwargs["pipeline_parallel_size"] == 1
    assert kwargs["max_model_len"] == 32768 + 2048
    assert kwargs["seed"] == recipe.seed           # engine-level seed: reproducible samples
    assert "enforce_eager" not in kwargs            # CUDA graphs stay on on GPU
    assert spec.placement() is None                 # Ray Data LLM's default: a GPU per tp*pp rank
    assert spec.sampling_params() == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768}
    assert spec.concurrency == recipe.teacher.concurrency >= 1
    assert spec.accelerator_type == "H200"


@pytest.mark.parametrize("path", R1_RECIPES, ids=lambda p: p.name)
def test_r1_teacher_processor_config(path):
    recipe = load_recipe(path)
    spec = gpu_spec(recipe)
    config = spec.processor_config()
    assert type(config).__name__ == "vLLMEngineProcessorConfig"
    assert config.model_source == "deepseek-ai/DeepSeek-R1"
    assert config.engine_kwargs == {**spec.engine_kwargs(), "task_type": "generate"}
    assert config.placement_group_config is None
    assert config.concurrency == recipe.teacher.concurrency
    assert config.batch_size == recipe.teacher.batch_size
    assert config.accelerator_type == "H200"
    assert config.runtime_env is None               # the CPU engine's env vars stay out
    assert config.should_continue_on_error and not config.log_engine_metrics
    # vLLM tokenises and detokenises; the chat template is applied on the driver
    assert (config.chat_template_stage, config.tokenize_stage, config.detokenize_stage) == \
        (False, False, False)


def test_one_node_tp8_plan_in_ray_data_llm(engine_stage, monkeypatch):
    """tp 8 on one 8xH200 node: Ray executor, no GPU on the engine actor itself, a placement
    group of 8 one-GPU bundles on H200 nodes."""
    recipe = load_recipe(R1_RECIPES[0])
    stage = build_stage(engine_stage, gpu_spec(recipe).processor_config())
    ekw = stage.fn_constructor_kwargs["engine_kwargs"]
    assert ekw["distributed_executor_backend"] == "ray"
    mb = stage.map_batches_kwargs
    assert mb["num_gpus"] == 0
    fn = mb["ray_remote_args_fn"]
    assert isinstance(fn, partial) and fn.args == (8, "H200", None)
    pg = requested_placement_group(stage, monkeypatch)
    assert pg["bundles"] == [{"GPU": 1, "CPU": 1, "accelerator_type:H200": 0.001}] * 8
    assert pg["strategy"] == "PACK"


def test_two_node_tp8_pp2_plan_in_ray_data_llm(engine_stage, monkeypatch):
    """The H100 alternative each recipe documents (tp 8 x pp 2 over two 8xH100-80GB nodes):
    16 one-GPU bundles under PACK, which Ray fills best-effort and so spreads over two nodes
    (STRICT_PACK could never place 16 GPUs on an 8-GPU node)."""
    recipe = load_recipe(R1_RECIPES[0], TWO_H100_NODES)
    spec = gpu_spec(recipe)
    kwargs = spec.engine_kwargs()
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"]) == (8, 2)
    stage = build_stage(engine_stage, spec.processor_config())
    assert stage.fn_constructor_kwargs["engine_kwargs"]["distributed_executor_backend"] == "ray"
    assert stage.map_batches_kwargs["num_gpus"] == 0
    pg = requested_placement_group(stage, monkeypatch)
    assert len(pg["bundles"]) == 16
    assert all(b == {"GPU": 1, "CPU": 1, "accelerator_type:H100": 0.001} for b in pg["bundles"])
    assert pg["strategy"] == "PACK"
    # the traces do not depend on the layout: same generate key as the one-node plan
    stage = GenerateStage()
    one_node = load_recipe(R1_RECIPES[0])
    assert stage_key(stage, recipe, {}, RESOLVERS) == stage_key(stage, one_node, {}, RESOLVERS)


def test_cpu_engine_spec(engine_stage, tmp_path):
    """device cpu: eager mode, bf16, one CPU bundle, the CPU engine's env vars, and the uni
    executor with one CPU and no GPU in Ray Data LLM."""
    t = load_recipe(SMOKE).teacher
    spec = EngineSpec(model=str(tmp_path), sampling=t.sampling, seed=7, engine=t.engine,
                      device="cpu", batch_size=t.batch_size, concurrency=t.concurrency)
    assert spec.on_cpu()
    kwargs = spec.engine_kwargs()
    assert kwargs["enforce_eager"] is True and kwargs["dtype"] == "bfloat16"
    assert kwargs["seed"] == 7 and kwargs["max_model_len"] == t.engine["max_model_len"]
    assert "seed" not in spec.sampling_params()    # a per-request seed kills the CPU engine
    assert spec.placement() == {"bundles": [{"CPU": 1}]}
    config = spec.processor_config()
    assert config.placement_group_config == {"bundle_per_worker": None,
                                             "bundles": [{"CPU": 1.0, "GPU": 0.0}],
                                             "strategy": "PACK"}
    env = config.runtime_env["env_vars"]
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and env == dict(CPU_ENGINE_ENV)
    stage = build_stage(engine_stage, config)
    assert stage.fn_constructor_kwargs["engine_kwargs"]["distributed_executor_backend"] == "uni"
    mb = stage.map_batches_kwargs
    assert mb["num_cpus"] == 1 and "num_gpus" not in mb and "ray_remote_args_fn" not in mb


def test_auto_device_is_cpu_with_vllm_cpu():
    if not vllm_is_cpu_build():
        pytest.skip("this machine has the CUDA vLLM build")
    spec = EngineSpec(model="x", sampling=load_recipe(SMOKE).teacher.sampling)
    assert spec.on_cpu() and spec.engine_kwargs()["enforce_eager"] is True
