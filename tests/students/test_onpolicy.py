"""On-policy distillation on tiny in-process models: the held-out reverse KL falls, a run
resumes from its checkpoint, and teachers are matched (or refused) by their vocabulary."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from distill.pipeline.errors import DistillError
from distill.students.onpolicy_config import OnPolicyConfig


def _rows(n: int = 10, held: int = 4) -> pd.DataFrame:
    shot = [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"}]
    user = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(n)]
    return pd.DataFrame({"prompt_id": [str(i) for i in range(n)], "student_messages": user,
                         "teacher_messages": [shot + u for u in user],
                         "held_out": [i < held for i in range(n)]})


def _cfg(**kw) -> OnPolicyConfig:
    return OnPolicyConfig(**{"prompts_per_step": 3, "max_new_tokens": 12, "held_out": 4,
                             "learning_rate": 3e-3, "save_steps": 2, "logging_steps": 1, **kw})


@pytest.fixture(scope="module")
def models(distill_home):
    from distill.engines.models import resolve_model

    return resolve_model("tiny-qwen2"), resolve_model("tiny-llama")  # one tokenizer, two models


def test_completion_logits_are_the_full_forward_at_the_answer_positions(models):
    import torch
    from transformers import AutoModelForCausalLM

    from distill.students.onpolicy_batch import completion_logits

    model = AutoModelForCausalLM.from_pretrained(models[1], dtype=torch.float32)
    prompts, answers = [[5, 6, 7, 8, 9, 10], [11, 12]], [[20, 21], [30, 31, 32, 33]]
    logits, mask = completion_logits(model, prompts, answers)  # left-padded, last T + 1 kept
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    for b, (p, a) in enumerate(zip(prompts, answers)):
        full = model(torch.tensor([p + a])).logits[0, len(p) - 1:len(p) - 1 + len(a)]
        assert torch.allclose(logits[b, :len(a)], full, atol=1e-5)


def test_reverse_kl_falls_and_a_run_resumes_from_its_checkpoint(models, tmp_path):
    from transformers import AutoModelForCausalLM

    from distill.students.onpolicy import distill_on_policy

    student, teacher = models
    first = distill_on_policy(_rows(), None, student, teacher, _cfg(steps=2), tmp_path,
                              think_format="plain")
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    shutil.rmtree(tmp_path / "model")
    again = distill_on_policy(_rows(), None, student, teacher, _cfg(steps=4), tmp_path,
                              think_format="plain")
    m = again.metrics
    assert m["resumed_from_step"] == 2 and m["global_step"] == 4
    assert m["reverse_kl_before"] == first.metrics["reverse_kl_before"]  # measured once
    assert m["reverse_kl_after"] < m["reverse_kl_before"], m
    assert m["reverse_kl_change"]["ci95_high"] < 0 and m["held_out"]["prompts"] == 4
    assert [h["step"] for h in m["history"]] == [1, 2, 3, 4] and m["history"][-1]["on_policy"] == 1
    assert AutoModelForCausalLM.from_pretrained(again.model_dir).config.use_cache


def test_off_policy_steps_take_the_curated_traces(models, tmp_path):
    from distill.students.onpolicy import distill_on_policy

    student, teacher = models
    traces = pd.DataFrame({"prompt_id": [str(i) for i in range(4, 10)], "reasoning": "",
                           "answer_text": [str(2 * i) for i in range(4, 10)]})
    out = distill_on_policy(_rows(), traces, student, teacher, _cfg(steps=2, lmbda=0.0),
                            tmp_path, think_format="plain")
    assert [h["on_policy"] for h in out.metrics["history"]] == [0.0, 0.0]
    assert all(h["completion_tokens"] < 6 for h in out.metrics["history"])  # "8<|im_end|>"


def _renamed_tokenizer(src: str, out: Path, old: str, new: str) -> Path:
    """A copy of a model folder whose special token `old` is spelled `new` (same id)."""
    shutil.copytree(src, out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = out / name
        path.write_text(path.read_text().replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]))
    return out


def test_family_special_tokens_are_matched_by_text_and_end_of_turn(models, tmp_path):
    from transformers import AutoTokenizer

    from distill.students.onpolicy_vocab import vocab_map

    student = AutoTokenizer.from_pretrained(models[0])
    renamed = _renamed_tokenizer(models[1], tmp_path / "t", "<|im_end|>", "<|eot|>")
    teacher = AutoTokenizer.from_pretrained(renamed)
    vmap = vocab_map(student, teacher, "renamed")
    eot = student.convert_tokens_to_ids("<|im_end|>")
    assert teacher.convert_ids_to_tokens(vmap.teacher_ids([eot])) == ["<|eot|>"]
    assert vmap.student_cols == vmap.teacher_cols == list(range(len(student)))


def test_another_tokenizer_is_refused_unless_uld(models, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.engines.tiny import build_tokenizer
    from distill.students.onpolicy_batch import divergence, encode_prompts, sample
    from distill.students.onpolicy_teacher import load_teacher

    other = tmp_path / "other"
    shutil.copytree(models[1], other)
    build_tokenizer(seed=1, vocab_size=900).save_pretrained(other)
    student_tok = AutoTokenizer.from_pretrained(models[0])
    with pytest.raises(DistillError, match="cross_tokenizer: uld"):
        load_teacher(str(other), student_tok, _cfg())
    teacher, teacher_tok, vmap, align = load_teacher(str(other), student_tok,
                                                     _cfg(cross_tokenizer="uld"))
    assert vmap is None and align is not None
    student = AutoModelForCausalLM.from_pretrained(models[0])
    prompts = encode_prompts(_rows(2, 0), student_tok, teacher_tok)
    torch.manual_seed(0)
    completions = sample(student, student_tok, [p.student for p in prompts], n=1, max_new_tokens=8)
    loss, _, mask = divergence(student, teacher, prompts, completions, vmap=None,
                               beta=1.0, estimator="full", align=align)
    assert mask.sum() > 0 and loss.requires_grad and torch.isfinite(loss)


def _hf_engines(monkeypatch):
    """engines.scoring's two calls answered by transformers in this process (no vLLM)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.engines import scoring

    def logprobs(model_dir: str, ids: list[int]) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)

    def sample_tokens(spec, frame):
        model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32)
        out = []
        for ids in frame["token_ids"]:
            seq = model.generate(torch.tensor([list(ids)]), do_sample=True, max_new_tokens=6,
                                 pad_token_id=0)[0].tolist()
            lp = logprobs(spec.model, seq)
            answer = range(len(ids), len(seq))
            out.append([seq[len(ids):], [lp[p - 1, seq[p]].item() for p in answer]])
        return frame[["request_id"]].assign(completion_ids=[o[0] for o in out],
                                            completion_logprobs=[o[1] for o in out])

    def score_tokens(spec, frame, top_k):
        rows = []
        for ids, start in zip(frame["token_ids"], frame["start"]):
            lp = logprobs(spec.model, list(ids))[start - 1:len(ids) - 1]
            top = lp.topk(top_k, -1)
            rows.append({"token_logprobs": lp.gather(-1, torch.tensor(ids[start:]).unsqueeze(-1))
                         .squeeze(-1).tolist(), "topk_ids": top.indices.tolist(),
                         "topk_logprobs": top.values.tolist()})
        return frame[["request_id"]].assign(**{k: [r[k] for r in rows] for k in rows[0]})

    monkeypatch.setattr(scoring, "sample_tokens", sample_tokens)
    monkeypatch.setattr(scoring, "score_tokens", score_tokens)


@pytest.mark.parametrize("estimator", ["sampled", "topk"])
def test_vllm_rounds_with_engines_stubbed(models, tmp_path, monkeypatch, estimator):
    """backend vllm's rounds (samples, scores, shards, training, merged round models, resume)
    with transformers answering for the engines; tests/students/test_onpolicy_vllm_cpu.py runs
    the real engines."""
    from distill.students.onpolicy_vllm import distill_on_policy_vllm

    _hf_engines(monkeypatch)
    student, teacher = models
    cfg = _cfg(backend="vllm", estimator=estimator, steps=3, rollout_steps=2, held_out_samples=1,
               top_k=5)
    out = distill_on_policy_vllm(_rows(), None, student, teacher, cfg, tmp_path,
                                 think_format="plain")
    m = out.metrics
    assert m["rounds"] == 2 and m["global_step"] == 3 and (out.model_dir / "config.json").exists()
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["round-0000.parquet",
                                                                       "round-0001.parquet"]
    assert (tmp_path / "checkpoints" / "rounds" / "000002" / "model" / "config.json").exists()
    assert m["held_out"]["estimator"] == "sampled" and m["held_out"]["tokens_before"] > 0
    assert [h["step"] for h in m["history"]][-1] == 3
