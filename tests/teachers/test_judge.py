"""The judge verifier backed by a real teacher: an OpenAI-compatible server on 127.0.0.1."""
from __future__ import annotations

import pandas as pd
from distill.data.verify import JudgeConfig, VerifyConfig, verify_frame
from distill.teachers.config import HttpEndpointConfig, TeacherConfig
from distill.teachers.judge import teacher_judge

from tests.teachers.http_server import Behaviour, ChatServer


def test_judge_rescues_what_rules_cannot_read_and_skips_what_they_decided():
    rows = pd.DataFrame({
        "problem": ["Capital of Italy?", "How many apples?", "What is 2 plus 2?"],
        "reference": ["Rome", "ten apples", "4"],
        "final_answer": ["\\text{Milan}", "\\text{Ten Apples}", "4"],
    })
    with ChatServer(default=Behaviour(mode="judge")) as srv:
        cfg = TeacherConfig(backend="openai", model="judge-model",
                            endpoint=HttpEndpointConfig(base_url=srv.base_url, max_retries=0))
        judge = teacher_judge(cfg, seed=0)
        cfg_verify = VerifyConfig(method="judge", workers=1,
                                  judge=JudgeConfig(applies_to="undecided_and_wrong"))
        verdicts = verify_frame(rows, cfg_verify, judge=judge)
        asked = len(srv.received)
    assert verdicts.tolist() == [False, True, True]
    assert asked == 2  # the row math-verify decided (4 == 4) never reached the judge
