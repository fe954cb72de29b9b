"""Decontamination against the bundled benchmarks and user files: rules, sources, index reuse."""
from __future__ import annotations

import json
import pickle
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from distill.data.benchmarks import BENCHMARKS, load_benchmark
from distill.data.decontam import (
    DecontamConfig,
    DecontamIndex,
    build_index,
    contamination_matches,
    contamination_sources,
    flag_contaminated,
)
from distill.data.decontam_words import normalize, words
from distill.pipeline.errors import DistillError, RecipeError

REPO = Path(__file__).resolve().parents[2]
MATH_TEST = REPO / ".." / "shared" / "data" / "prompts" / "math_test.jsonl"
LONG = ("A bag holds 7 red marbles and 5 blue marbles. Two marbles are drawn at random without "
        "replacement. What is the probability that both marbles are blue?")
BOILERPLATE = "Express your answer as a common fraction in simplest form."


@pytest.fixture(scope="module")
def default_index() -> DecontamIndex:
    return build_index(DecontamConfig())


def _jsonl(path: Path, problems: list[str]) -> str:
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": p}) + "\n"
                            for i, p in enumerate(problems)))
    return str(path)


def test_normalisation_drops_formatting_only():
    out = normalize(["$\\dfrac{1}{2}$ and \\left( x^2+1 \\right)\\quad done.",
                     "\\frac 1 2 AND (x^2 + 1) done", "\\leftarrow Ünïcode", None]).to_pylist()
    assert out[0].split() == out[1].split() == ["frac", "1", "2", "and", "x", "^", "2", "+", "1",
                                                 "done"]
    assert out[2].split() == ["leftarrow", "ünïcode"] and out[3] == ""
    same = ["42 * 55", "$42 \\times 55$", "42×55", "42 \\cdot 55", "42*55", "42 times 55"]
    tok, off = words(same + ["42 + 55", "x \\leq 3", "x <= 3", "x ≤ 3", "x < 3"])
    seqs = [tuple(tok[a:b]) for a, b in pairwise(off)]
    assert len(set(seqs[:6])) == 1 and len(seqs[0]) == 3 and seqs[6] != seqs[0]
    assert seqs[7] == seqs[8] == seqs[9] != seqs[10]


@pytest.mark.skipif(not MATH_TEST.is_file(), reason=f"{MATH_TEST} is absent (it sits beside the "
                    "repository as ../shared on our machines and in CI)")
def test_math_test_flags_every_math500_problem():
    df = pd.read_json(MATH_TEST, lines=True)
    math500_ids = set(load_benchmark("math500")["id"])
    in500 = df["id"].str.replace("math/", "math500/", n=1).isin(math500_ids)
    assert in500.sum() == 500
    cfg = DecontamConfig(benchmarks=["math500"])
    reasons = flag_contaminated(df, cfg)
    assert (reasons[in500] == "contaminated").all()
    # Boilerplate ("express your answer as a common fraction", Asymptote labels) shares 8-grams
    # with 504 of the other 4,500; requiring half of a problem's n-grams leaves its close
    # siblings only (43 when this was written).
    assert reasons[~in500].notna().sum() < 100
    assert flag_contaminated(df, cfg.model_copy(update={"min_coverage": 0.0}))[~in500].notna(
    ).sum() > 400


def test_bundled_benchmarks_are_flagged_against_themselves(default_index):
    for name in BENCHMARKS:
        bench = load_benchmark(name)
        sources = contamination_sources(bench, DecontamConfig(), index=default_index)
        assert all(name in s.split(",") for s in sources), name


def test_rows_holding_a_problem_are_flagged_and_boilerplate_is_not(tmp_path):
    short = "Compute $\\dbinom{31}{1}$."
    cfg = DecontamConfig(benchmarks=[], extra_paths=[_jsonl(tmp_path / "evals.jsonl",
                                                             [LONG + " " + BOILERPLATE, short])])
    rows = pd.DataFrame({"problem": [
        "Solve this: " + LONG.upper() + " " + BOILERPLATE + " Think step by step.",  # holds it
        "What is 3/4 of 8? " + BOILERPLATE,                                          # boilerplate
        "compute \\dbinom{31}{1}",                                                     # short, same
        "Compute $\\dbinom{31}{2}$.",                                                  # short, other
        "Compute $\\dbinom{31}{1}$ and then add seven to the result please.",         # holds it
        None]}, index=list("abcdef"))
    assert flag_contaminated(rows, cfg).notna().tolist() == [True, False, True, False, True,
                                                              False]
    loose = cfg.model_copy(update={"min_coverage": 0.0})
    assert flag_contaminated(rows, loose).notna().tolist() == [True, True, True, False, True,
                                                                False]
    strict = cfg.model_copy(update={"min_overlap": 100})   # more than LONG has: needs all of it
    assert flag_contaminated(rows, strict).notna().tolist() == [True, False, True, False, True,
                                                                 False]
    matches = contamination_matches(rows, cfg)
    assert matches["row"].tolist() == ["a", "c", "e"]
    assert matches["benchmark_id"].tolist() == ["q0", "q1", "q1"]
    assert matches["coverage"].tolist() == [1.0, 1.0, 1.0]


def test_short_problems_are_found_inside_longer_rows_with_their_operators(tmp_path):
    evals = ["What is $42 \\times 55$?", "Simplify $\\sqrt{242}$.", "What is 7 - 3?"]
    cfg = DecontamConfig(benchmarks=[], extra_paths=[_jsonl(tmp_path / "e.jsonl", evals)])
    rows = pd.Series({
        "before": "Here is a warm-up question for you. What is 42 * 55?",
        "after": "Simplify sqrt{242}. Then explain each step to a friend in plain words.",
        "both": "Please answer: what is 7 − 3? Show all of your work, step by step.",
        "times": "what is 42 \\cdot 55",
        "plus": "What is 42 + 55? Add them up and give the total as a whole number.",
        "minus": "what is 7 + 3",
        "split": "What is 42 and then * 55? Multiply the two numbers given here.",
        "longer number": "What is 42 * 551? Multiply the two numbers given here.",
        "empty": ""})
    flagged = flag_contaminated(rows.to_frame("problem"), cfg).notna()
    assert flagged.to_dict() == {"before": True, "after": True, "both": True, "times": True,
                                 "plus": False, "minus": False, "split": False,
                                 "longer number": False, "empty": False}
    sources = contamination_matches(rows.to_frame("problem"), cfg)
    assert sources.set_index("row")["benchmark_id"].to_dict() == {
        "before": "q0", "after": "q1", "both": "q2", "times": "q0"}
    twice = DecontamConfig(benchmarks=[], extra_paths=[cfg.extra_paths[0],
                                                       _jsonl(tmp_path / "f.jsonl", evals[:1])])
    assert contamination_sources(rows.to_frame("problem"), twice)["before"] == "e.jsonl,f.jsonl"


def test_sources_name_every_benchmark_that_matched(tmp_path, default_index):
    a = _jsonl(tmp_path / "a.jsonl", [LONG])
    b = _jsonl(tmp_path / "b.jsonl", [LONG, "Some other problem about seven hexagons and a cube."])
    cfg = DecontamConfig(extra_paths=[a, b])
    math500 = load_benchmark("math500")["problem"].iloc[0]
    df = pd.DataFrame({"problem": [LONG, math500, "A clean question about nothing at all."]})
    assert contamination_sources(df, cfg).tolist() == ["a.jsonl,b.jsonl", "math500", None]
    default_only = contamination_sources(df, DecontamConfig(), index=default_index)
    assert default_only.tolist() == [None, "math500", None]


def test_index_is_reusable_and_serialisable(tmp_path, default_index):
    cfg = DecontamConfig()
    df = load_benchmark("aime24").head(5)
    clone = pickle.loads(pickle.dumps(default_index))
    default_index.save(tmp_path / "index.pkl")
    loaded = DecontamIndex.load(tmp_path / "index.pkl")
    for index in (clone, loaded):
        assert flag_contaminated(df, cfg, index=index).eq("contaminated").all()
    with pytest.raises(DistillError, match="rebuild the index"):
        flag_contaminated(df, cfg.model_copy(update={"ngram": 13}), index=default_index)


def test_r1_traces_are_math500_problems(default_index):
    traces = pd.read_json(REPO / "tests" / "fixtures" / "r1traces" /
                          "math500_r1_distill_qwen7b_pilot.jsonl", lines=True)
    sources = contamination_sources(traces, DecontamConfig(), index=default_index)
    assert sources.eq("math500").all()


def test_disabled_and_bad_inputs(tmp_path):
    df = pd.DataFrame({"problem": [LONG], "question": [LONG]})
    assert flag_contaminated(df, DecontamConfig(enabled=False)).isna().all()
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(RecipeError, match="extra_paths: .*nope.jsonl does not exist"):
        build_index(DecontamConfig(extra_paths=[str(missing)]))
    no_col = tmp_path / "q.jsonl"
    no_col.write_text(json.dumps({"question": LONG}) + "\n")
    with pytest.raises(RecipeError, match="no `problem` column"):
        build_index(DecontamConfig(extra_paths=[str(no_col)]))
    with pytest.raises(ValueError, match="bundled"):
        DecontamConfig(benchmarks=["math501"])
    with pytest.raises(DistillError, match="(?s)'prompt'.*fix: pass column="):
        flag_contaminated(df, DecontamConfig(benchmarks=[]), column="prompt")
    assert flag_contaminated(df, DecontamConfig(benchmarks=[], extra_paths=[
        _jsonl(tmp_path / "e.jsonl", [LONG])]), column="question").eq("contaminated").all()
