"""Prompt templates and worked examples: the teacher sees the examples, the student does not."""
from __future__ import annotations

import pandas as pd

from distill.teachers.templates import build_messages, render_user_message
from distill.workflows.recipe import load_recipe
from distill.workflows.stages.generate import build_requests
from distill.workflows.stages.train import sft_rows
from helpers import REPO

SHOTS = [("What is 2 + 3?", "2 + 3 = 5. Final answer: 5")]


def test_worked_examples_are_earlier_turns_before_the_problem():
    messages = build_messages("What is 7 + 8?", "final_answer", "Be brief.", SHOTS)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == render_user_message("final_answer", "What is 2 + 3?")
    assert messages[2]["content"] == SHOTS[0][1]
    assert messages[3]["content"] == render_user_message("final_answer", "What is 7 + 8?")


def test_teacher_requests_carry_the_examples_and_the_sft_prompt_does_not():
    recipe = load_recipe(REPO / "workflows" / "recipes" / "smoke.yaml",
                         ["teacher.few_shot=[{problem: 'What is 2 + 3?', answer: '5'}]"])
    prompts = pd.DataFrame({"prompt_id": ["p"], "problem": ["What is 7 + 8?"], "reference": ["15"]})
    requests = build_requests(prompts, recipe)
    assert all(len(m) == 3 and m[1]["content"] == "5" for m in requests["messages"])
    curated = requests.drop(columns=["messages"]).assign(reasoning="", answer_text="15")
    sft = sft_rows(curated, recipe)
    assert set(sft["prompt"]) == {render_user_message(recipe.teacher.template, "What is 7 + 8?")}
