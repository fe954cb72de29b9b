"""What the GPU on-policy recipe asks vLLM, Ray Data LLM and Ray Train for, without a GPU:
the student's sampling engine, the teacher's scoring engine (prompt log-probs of given tokens),
and the training workers. Nothing starts."""
from __future__ import annotations

import pytest

from distill.engines.scoring import answer_scores, sample_params, score_params
from distill.students.onpolicy import student_train_config
from distill.students.onpolicy_vllm import engine_specs
from distill.workflows.recipe import load_recipe
from helpers import REPO

R1_ONPOLICY = REPO / "workflows" / "recipes" / "r1_onpolicy" / "qwen2.5-math-1.5b.yaml"


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(R1_ONPOLICY)


def test_engines_of_a_round(recipe):
    cfg = recipe.onpolicy
    student, teacher = engine_specs("/runs/r/checkpoints/rounds/000008/model", cfg.teacher, cfg,
                                    [151645], seed=3, device="cuda")
    t = teacher.processor_config()
    assert t.model_source == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert (t.engine_kwargs["tensor_parallel_size"], t.engine_kwargs["max_model_len"]) == (4, 10240)
    assert "enforce_eager" not in t.engine_kwargs and t.runtime_env is None  # no CPU defaults
    assert t.placement_group_config is None  # Ray Data LLM's default: a GPU per tp rank
    assert (t.tokenize_stage, t.detokenize_stage) == (False, False)  # token ids in, ids out
    assert score_params(cfg.top_k) == {"max_tokens": 1, "temperature": 1.0,
                                       "prompt_logprobs": 20, "detokenize": False}
    s = student.processor_config()
    assert s.engine_kwargs["hf_overrides"] == {"max_position_embeddings": 131072}
    params = sample_params(student, "r1:7:0")
    assert params["logprobs"] == 0 and params["stop_token_ids"] == [151645]
    assert params["max_tokens"] == 8192 and "seed" in params  # per-request seed on GPU


def test_vllm_accepts_the_request_parameters(recipe):
    vllm = pytest.importorskip("vllm")
    student, _ = engine_specs("m", "t", recipe.onpolicy, [2], seed=0, device="cuda")
    assert vllm.SamplingParams(**score_params(20)).prompt_logprobs == 20
    assert vllm.SamplingParams(**sample_params(student, "x")).logprobs == 0


def test_training_workers(recipe):
    from distill.students.ray_train import scaling_config

    cfg = recipe.onpolicy
    tcfg = student_train_config(cfg, "/runs/r/train/model", recipe.train.think_format)
    assert (tcfg.method, tcfg.num_workers, tcfg.use_gpu, tcfg.max_steps) == ("full", 8, True, 200)
    sc = scaling_config(tcfg, use_gpu=True)
    assert sc.num_workers == 8 and sc.resources_per_worker["GPU"] == 1


def test_answer_scores_read_the_answer_positions_of_prompt_logprobs():
    # vLLM's prompt log-probs: None for the first token, then {token_id: {logprob, rank}}
    ids = [5, 6, 7, 8]
    plp = [None, {6: {"logprob": -0.1, "rank": 1}},
           {7: {"logprob": -2.0, "rank": 3}, 1: {"logprob": -0.5, "rank": 1},
            2: {"logprob": -1.0, "rank": 2}},
           {8: {"logprob": -0.3, "rank": 1}}]
    out = answer_scores(plp, ids, start=2, top_k=2)
    assert out["token_logprobs"] == [-2.0, -0.3]
    assert out["topk_ids"] == [[1, 2], [8]] and out["topk_logprobs"] == [[-0.5, -1.0], [-0.3]]
