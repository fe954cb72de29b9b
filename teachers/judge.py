"""A teacher as answer judge: `teacher_judge(cfg, seed)(prompts) -> completions`, in order.

The R1 paper asked DeepSeek-V3 whether a sample's answer matched the reference where rules could
not decide. data.verify builds the prompts and reads the YES/NO; this turns any teacher backend
(vLLM on Ray, or an OpenAI-compatible endpoint) into the callable it needs.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from distill.teachers.config import TeacherConfig


def teacher_judge(cfg: TeacherConfig, seed: int) -> Callable[[list[str]], list[str]]:
    """A callable sending each prompt as the user turn of the teacher's template (`plain` sends
    it as is), after its system prompt and worked examples; a failed request yields "" (undecided)."""
    from distill.teachers.base import make_teacher
    from distill.teachers.templates import build_messages

    shots = [(s.problem, s.answer) for s in cfg.few_shot]

    def judge(prompts: list[str]) -> list[str]:
        if cfg.backend == "vllm":
            from distill.pipeline.cluster import ensure_ray

            ensure_ray()
        requests = pd.DataFrame({"request_id": [f"judge:{i}" for i in range(len(prompts))],
                                 "messages": [build_messages(p, cfg.template, cfg.system_prompt, shots)
                                              for p in prompts]})
        answers: dict[str, str] = {}
        for frame in make_teacher(cfg, seed).generate(requests):
            for rid, text, err in zip(frame["request_id"], frame["text"], frame["error"]):
                answers[rid] = "" if (err is not None and not pd.isna(err)) else (text or "")
        return [answers.get(rid, "") for rid in requests["request_id"]]

    return judge
