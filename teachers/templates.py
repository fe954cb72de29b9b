"""Prompt templates: TEMPLATES["r1_math"].format(problem=...) -> the user message."""
from __future__ import annotations

from collections.abc import Sequence

from distill.pipeline.errors import RecipeError

TEMPLATES: dict[str, str] = {
    # The DeepSeek-R1 paper's and open-r1's math prompt.
    "r1_math": "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "plain": "{problem}",
    # For small instruct models (quickstart): ask for working, then the boxed number.
    "short_math": "{problem}\nThink step by step, then give the final answer as \\boxed{{number}}.",
    # Plain instruct models that do not box answers (SmolLM2 in the quickstart).
    "final_answer": "{problem} Show your calculation, then write 'Final answer: <number>'.",
    "code": "{problem}\nWrite a complete Python program. Reason first, then give the final code in "
            "one ```python block.",
}


def render_user_message(template: str, problem: str) -> str:
    """Fill `template` (a TEMPLATES name) with the problem text."""
    try:
        return TEMPLATES[template].format(problem=problem)
    except KeyError:
        raise RecipeError(f"teacher.template: unknown template {template!r}",
                          fix=f"use one of {sorted(TEMPLATES)}") from None


def build_messages(problem: str, template: str, system_prompt: str | None,
                   few_shot: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """The chat messages for one prompt: optional system turn, the worked examples as earlier
    (user, assistant) turns, then the templated user turn."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for shot_problem, shot_answer in few_shot:
        messages += [{"role": "user", "content": render_user_message(template, shot_problem)},
                     {"role": "assistant", "content": shot_answer}]
    messages.append({"role": "user", "content": render_user_message(template, problem)})
    return messages
