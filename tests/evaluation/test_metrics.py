"""pass@1 intervals at the edges, the paired student-minus-base comparison, and where both are
shown (CLI table, report summary, model card)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, t

from distill.evaluation.metrics import compare_models, mean_interval, paired_difference, summarise
from distill.evaluation.tables import markdown


def answers(per_question: list[list[bool]], model: str = "m") -> pd.DataFrame:
    """Scored rows: one list of sample verdicts per question."""
    out = [{"model": model, "benchmark": "b", "question_id": f"q{i}", "sample_idx": j,
            "correct": c, "answer_group": 0 if c else 1, "finish_reason": "stop"}
           for i, samples in enumerate(per_question) for j, c in enumerate(samples)]
    return pd.DataFrame(out)


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return ci.low, ci.high


@pytest.mark.parametrize("per_question, low_is_0, high_is_1", [
    ([[False] * 4] * 10, True, False),     # nothing solved: [0, >0], not [0, 0]
    ([[True] * 4] * 10, False, True),      # everything solved: [<1, 1], not [1, 1]
    ([[True, False, True, True]], False, False),  # one question: finite, not NaN
    ([[True]] * 3 + [[False]] * 2, False, False),  # n = 1 sample per question
])
def test_interval_stays_honest_at_the_edges(per_question, low_is_0, high_is_1):
    r = summarise(answers(per_question))
    lo, p, hi = r["ci95_low"], r["pass@1"], r["ci95_high"]
    assert all(math.isfinite(v) for v in (lo, p, hi))
    assert 0.0 <= lo <= p <= hi <= 1.0 and hi - lo > 0.05
    assert (lo == 0.0) is low_is_0 and (hi == 1.0) is high_is_1


def test_interval_is_wilson_where_the_samples_are_independent():
    # one question: its n samples are independent draws -> Wilson on k of n
    assert mean_interval(np.array([0.75]), 4)[1:] == pytest.approx(scipy_wilson(3, 4))
    # one sample per question: Wilson on k of q questions
    per_q = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    assert mean_interval(per_q, 5)[1:] == pytest.approx(scipy_wilson(3, 5))
    # nothing solved over 10 questions x 4 samples: the conservative q = 10, not 40 samples
    assert mean_interval(np.zeros(10), 40)[1:] == pytest.approx(scipy_wilson(0, 10))


def test_interval_matches_the_spread_between_questions():
    rng = np.random.default_rng(0)
    per_q = rng.binomial(8, rng.beta(1, 1, 400), 400) / 8
    _, lo, hi = mean_interval(per_q, 400 * 8)
    half_t = t.ppf(0.975, 399) * per_q.std(ddof=1) / math.sqrt(400)
    assert (hi - lo) / 2 == pytest.approx(half_t, rel=0.02)


def test_paired_difference_and_whether_it_excludes_zero():
    student = answers([[True] * 4] * 8, "student")
    base = answers([[False] * 4] * 8, "base")
    both = pd.concat([student, base], ignore_index=True)
    p = compare_models(both, "student", "base")["b"]
    assert p["difference"] == 1.0 and p["excludes_zero"] and p["questions"] == 8
    assert 0.0 < p["ci95_low"] < 1.0 and p["ci95_high"] == 1.0  # not the degenerate [1, 1]
    same = compare_models(pd.concat([student, student.assign(model="base")]), "student", "base")["b"]
    assert same["difference"] == 0.0 and same["ci95_low"] < 0.0 < same["ci95_high"]
    assert not same["excludes_zero"]
    one = paired_difference(np.array([1.0]), np.array([0.25]), 4, 4)
    assert -1.0 <= one["ci95_low"] < 0.75 < one["ci95_high"] <= 1.0
    assert compare_models(student, "student", "base") == {}


def test_paired_difference_only_counts_shared_questions():
    student = answers([[True, True]] * 3 + [[False, False]], "student")
    base = answers([[False, False]] * 3, "base")  # never saw q3
    p = compare_models(pd.concat([student, base], ignore_index=True), "student", "base")["b"]
    assert p["questions"] == 3 and p["difference"] == 1.0


def test_paired_interval_is_close_to_a_paired_t_interval_away_from_the_edges():
    rng = np.random.default_rng(1)
    ease = rng.normal(0, 1.5, 300)
    base = rng.binomial(4, 1 / (1 + np.exp(-ease))) / 4
    student = rng.binomial(4, 1 / (1 + np.exp(-ease - 0.5))) / 4
    p = paired_difference(student, base, 1200, 1200)
    d = student - base
    half_t = t.ppf(0.975, 299) * d.std(ddof=1) / math.sqrt(300)
    assert p["difference"] == pytest.approx(d.mean())
    assert (p["ci95_high"] - p["ci95_low"]) / 2 == pytest.approx(half_t, rel=0.1)


def summary() -> dict:
    student, base = answers([[True, True]] * 6, "student"), answers([[False, True]] * 6, "base")
    both = pd.concat([student, base], ignore_index=True)
    rules = {"template": "the model's chat template", "prefill": "<think>\n",
             "stop_tokens": ["<|im_end|>"], "stop_token_ids": [2], "stop_strings": []}
    from distill.evaluation.evaluate import protocol_summary

    return {"results": {m: {"b": summarise(g)} for m, g in both.groupby("model", sort=False)},
            "paired": compare_models(both, "student", "base"),
            "protocol": protocol_summary({"student": rules, "base": {**rules, "prefill": ""}})}


def test_tables_show_the_paired_comparison_and_the_rules():
    text = markdown(summary())
    assert "| student | b | 1.000 |" in text and "| base | b | 0.500 |" in text
    assert "| b | +0.500 |" in text and "| yes |" in text
    assert "pre-fill '<think>\\n'" in text and "stops at <|im_end|>" in text
    assert "tie goes to the group answered first" in text
    old = markdown({"results": summary()["results"]})  # a manifest from before version 2
    assert "| student | b |" in old and "paired" not in old and "Rules" not in old


def test_model_card_and_cli_report_the_paired_comparison(capsys):
    from distill.students.cards import CardNames, model_card
    from distill.workflows import cli

    s = summary()
    lineage = {"student_base": "tiny", "teacher": "t", "method": "lora", "recipe": "r",
               "data_counts": {}, "eval": s["results"], "eval_paired": s["paired"],
               "eval_protocol": s["protocol"]}
    card = model_card(lineage, CardNames("org/repo", "org/repo-data", "mit", "mit"))
    assert markdown(s, verdict=False) in card and "the student is better than its base" in card
    cli.console.width = 200
    cli._print_results(s)
    out = capsys.readouterr().out
    assert "student minus base" in out and "+0.500" in out and "pre-fill" in out
    assert "verdict: b: the student is better than its base" in out


def test_the_verdict_says_whether_a_difference_is_within_noise():
    from distill.evaluation.tables import verdict

    noisy = verdict("b", {"difference": 0.031, "ci95_low": -0.03, "ci95_high": 0.092,
                          "excludes_zero": False, "questions": 64})
    assert "within noise" in noisy and "interval includes 0" in noisy
    needed = int(noisy.split("about ")[1].split(" questions")[0].replace(",", ""))
    assert 200 < needed < 300  # (half-width / difference)^2 x 64
    worse = verdict("b", {"difference": -0.2, "ci95_low": -0.3, "ci95_high": -0.1,
                          "excludes_zero": True, "questions": 64})
    assert worse.startswith("b: the student is worse than its base: -0.200 pass@1")
