"""select_prompts: pass rates of a reference model decide which prompts the teacher sees.

Fast: the window's reasons (too_hard / too_easy, unscored prompts kept), the window checked in
the recipe, the stage off by default (generate reads the prompts stage). Slow: the smoke
recipe's tiny model (random weights: it never finishes an answer, so every scored prompt has
pass rate 0) on the real engine path; the window (0, 0.6) rejects the scored prompts as
too_hard, the prompt with a blank reference goes on unscored, and generate asks the teacher about it alone.
"""
from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest
from rich.console import Console

from distill.data.difficulty import SelectPromptsConfig, pass_rates, window_reasons
from distill.pipeline.errors import RecipeError
from distill.pipeline.runner import run_stages
from distill.pipeline.store import RunStore
from distill.workflows.distill import STAGES
from distill.workflows.fingerprints import resolvers
from distill.workflows.recipe import load_recipe
from helpers import REPO

SMOKE = REPO / "workflows" / "recipes" / "smoke.yaml"


def _stages(*names: str) -> list:
    return [s for s in STAGES if s.name in names]


def test_the_window_gives_each_prompt_its_reason():
    cfg = SelectPromptsConfig(too_hard_at_most=0.0, too_easy_at_least=0.6)
    rates = pd.Series([0.0, 0.125, 0.5, 0.6, 1.0, math.nan])
    assert window_reasons(rates, cfg).tolist() == ["too_hard", None, None, "too_easy", "too_easy", None]
    open_below = SelectPromptsConfig(too_hard_at_most=None, too_easy_at_least=0.5)
    assert window_reasons(rates, open_below).tolist() == [None, None, "too_easy", "too_easy",
                                                          "too_easy", None]
    with pytest.raises(ValueError, match="must be below too_easy_at_least"):
        SelectPromptsConfig(too_hard_at_most=0.5, too_easy_at_least=0.5)


def test_pass_rates_count_each_prompts_answers_in_sample_order():
    answers = pd.DataFrame({"prompt_id": ["b", "a", "a", "b", "a"], "sample_index": [1, 2, 0, 0, 1],
                            "answer": ["4", None, "3", "5", "3"],
                            "correct": [True, False, True, False, True]})
    out = pass_rates(answers).set_index("prompt_id")
    assert out.loc["a", "reference_pass_rate"] == pytest.approx(2 / 3)
    assert out.loc["b", "reference_correct"] == 1 and out.loc["b", "reference_samples"] == 2
    assert out.loc["a", "reference_answers"] == ["3", "3", None]
    assert out.loc["b", "reference_answers"] == ["5", "4"]


def test_an_empty_window_is_a_recipe_error_naming_the_keys():
    with pytest.raises(RecipeError, match=r"select_prompts.*too_hard_at_most \(0.7\) must be below"):
        load_recipe(SMOKE, ["select_prompts={too_hard_at_most: 0.7, too_easy_at_least: 0.6}"])


def test_off_by_default_and_then_it_writes_nothing(tmp_path, distill_home):
    recipe = load_recipe(SMOKE, ["prompts.limit=3"])
    assert recipe.select_prompts is None
    store = RunStore(tmp_path)
    run_stages(_stages("prompts", "select_prompts"), recipe, store,
               console=Console(file=io.StringIO()), resolvers=resolvers(SMOKE.parent),
               recipe_path=SMOKE)
    m = store.stage("select_prompts").manifest
    assert m["enabled"] is False and m["rows_in"] == 0 and m["kept"] == 0


@pytest.mark.slow
def test_the_reference_model_decides_which_prompts_the_teacher_sees(tmp_path, distill_home):
    source = tmp_path / "prompts.jsonl"
    rows = [{"problem": f"What is {a} + {a}?", "answer": str(2 * a)} for a in (11, 12, 13)]
    rows.append({"problem": "Name a prime number.", "answer": ""})   # blank: cannot be scored
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    window = ("select_prompts={samples: 2, too_hard_at_most: 0.0, too_easy_at_least: 0.6, "
              "sampling: {max_tokens: 8}}")
    recipe = load_recipe(SMOKE, [f"prompts.source={source}", "prompts.limit=null", window])
    store = RunStore(tmp_path / "run")
    run_stages(_stages("prompts", "select_prompts", "generate"), recipe, store,
               console=Console(file=io.StringIO()), resolvers=resolvers(SMOKE.parent),
               recipe_path=SMOKE)
    sel = store.stage("select_prompts")
    m = sel.manifest
    assert m["enabled"] and m["rows_in"] == 4 and m["unscored"] == 1
    assert m["rejected"] == {"too_hard": 3} and m["kept"] == 1
    rejected = sel.to_pandas(rejected=True)
    assert (rejected["reference_pass_rate"] == 0).all() and (rejected["reference_samples"] == 2).all()
    assert rejected["reject_reason"].eq("too_hard").all()
    traces = store.stage("generate").to_pandas()
    assert set(traces["problem"]) == {"Name a prime number."}   # the teacher saw only the kept one
    assert len(traces) == recipe.teacher.sampling.n
