"""Math verification: verdicts, the process pool, agreement with math-verify, and the judge.

The reference is math-verify called directly: an extracted answer as the `\\boxed{answer}` it came
from, a whole answer text as is (`boxed` and the plain text below), never our own helpers."""
from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest
from math_verify import parse, verify

from distill.data.benchmarks import BENCHMARKS, load_benchmark
from distill.data.parsing import parse_frame
from distill.data.verify import (
    IN_PROCESS_MAX,
    JudgeConfig,
    VerifyConfig,
    WholeText,
    parse_verdict,
    verify_frame,
    verify_math,
    verify_one,
)

TRACES = Path(__file__).parents[1] / "fixtures" / "r1traces"


@pytest.fixture(scope="module")
def traces() -> pd.DataFrame:
    raw = pd.concat([pd.read_json(p, lines=True) for p in sorted(TRACES.glob("*.jsonl"))],
                    ignore_index=True)
    return parse_frame(raw.rename(columns={"answer_text": "source_answer"}),
                       text_column="full_response")


def boxed(answer: str) -> str:
    """How math-verify meets an answer that came out of a box: inside that box."""
    return answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"


def agrees(ours: bool | None, direct: bool) -> bool:
    """Ours True exactly where math-verify says True; None (undecided) only where it says False."""
    return direct if ours is True else not direct


def test_verdicts_true_false_and_undecided():
    pairs = [("\\frac{1}{2}", "0.5"), ("2", "The answer is $\\boxed{3}$"),
             ("6 - 5i", "6-5i"), ("5", None), ("", "5"), ("5", "\\frac{"), ("10", "ten")]
    assert verify_math(pairs, workers=1) == [True, False, True, None, None, None, False]


def test_an_item_past_its_timeout_is_undecided():
    long_answer = " ".join(f"Step {i}: $x_{i} = {i}^2$." for i in range(400))
    long_answer += f" So $\\boxed{{{uuid.uuid4().int % 1000}}}$"  # fresh text: no parse cache
    assert verify_one("7", long_answer, timeout_s=1e-4) is None
    assert verify_one("7", "$\\boxed{7}$", timeout_s=5.0) is True  # the alarm was cleared


def test_agreement_with_math_verify_on_real_traces(traces):
    gold = traces["ground_truth"].tolist()
    texts = traces["answer_text"].tolist()
    ours = verify_math([(g, WholeText(t)) for g, t in zip(gold, texts)], workers=1)
    for g, t, o in zip(gold, texts, ours):
        assert agrees(o, bool(t) and verify(parse(boxed(g)), parse(t))), (g, t, o)
    finals = traces["final_answer"].tolist()
    ours = verify_math(list(zip(gold, finals)), workers=1)
    for g, p, o in zip(gold, finals, ours):
        assert agrees(o, bool(p) and verify(parse(boxed(g)), parse(boxed(p)))), (g, p, o)
    # The truncated trace has no answer part: undecided, not wrong.
    assert ours[traces.index[~traces["think_closed"]][0]] is None
    assert sum(v is True for v in ours) == 33
    # The source's own is_correct labels differ on five rows: its comparator missed
    # \dfrac == \frac (3 rows, one inside \left( \right)) and 90 == 90^\circ, and it took "5"
    # from the reasoning of the trace cut at 32,768 tokens (wrong either way; ours: undecided).
    differs = traces.loc[[o is not t for o, t in zip(ours, traces["is_correct"])]]
    assert sorted(zip(differs["model_short_name"], differs["item_id"])) == [
        ("R1-Distill-Llama-8B", "math500_0002"), ("R1-Distill-Qwen-7B", "math500_0000"),
        ("R1-Distill-Qwen-7B", "math500_0002"), ("R1-Distill-Qwen-7B", "math500_0007"),
        ("R1-Distill-Qwen-7B", "math500_0009")]


def test_agreement_on_math500_solutions_vs_answers():
    bench = load_benchmark("math500")
    pairs = list(zip(bench["answer"], bench["solution"]))
    ours = verify_math(pairs, workers=1)
    direct = [verify(parse(boxed(a)), parse(s)) for a, s in pairs]
    assert all(agrees(o, d) for o, d in zip(ours, direct))
    assert sum(v is True for v in ours) >= 495  # 500 of 500 when this test was written


@pytest.mark.parametrize("gold, text", [("55", "42 + 13 = 55, so we get 55"), ("18", "18 dollars"),
                                        ("18", "18 km/h"), ("18", "18 m^2")])
def test_a_whole_answer_text_gets_math_verifys_own_verdict(gold, text):
    """The answer_fallback verifies the whole answer text: no `$...$` around it."""
    assert verify(parse(gold), parse(text))  # math-verify called directly on the same strings
    assert verify_math([(gold, WholeText(text))], workers=1) == [True]
    # curate's answer_fallback copies the whole answer text into final_answer:
    rows = pd.DataFrame({"reference": [gold, gold], "answer_text": [text, f"So $\\boxed{{{text}}}$"],
                         "final_answer": [text, text]})
    assert verify_frame(rows, VerifyConfig(workers=1)).tolist() == [True, bool(
        verify(parse(boxed(gold)), parse(boxed(text))))]  # the second was extracted from a box


def test_bundled_benchmark_golds_are_judged_as_math_verify_judges_them():
    """Each gold against itself and against its own boxed form, as answer and as whole text."""
    golds = [g for name in sorted(BENCHMARKS) for g in load_benchmark(name)["answer"]]
    direct = [verify(parse(boxed(g)), parse(boxed(g))) for g in golds]
    for preds in (golds, [boxed(g) for g in golds], [WholeText(boxed(g)) for g in golds]):
        ours = verify_math(list(zip(golds, preds)), workers=1)
        assert [o is True for o in ours] == direct
    assert all(direct)  # every bundled gold reads as math and equals itself


def test_process_pool_gives_the_in_process_verdicts(traces):
    pairs = list(zip(traces["ground_truth"], traces["final_answer"])) * 2
    assert len(pairs) < IN_PROCESS_MAX  # so force the pool path
    assert verify_math(pairs, workers=2, in_process_max=0) == verify_math(pairs, workers=1)


def test_works_from_a_non_main_thread():
    """math-verify's signal.alarm fails in threads (Ray actor UDFs); we route to a pool."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(
        verify_math([("\\frac{1}{2}", "0.5"), ("3", "4")], workers=1)))
    worker.start()
    worker.join(timeout=120)
    assert result == [[True, False]]


def test_verify_frame_math_and_none(traces):
    cfg = VerifyConfig(workers=1)
    correct = verify_frame(traces, cfg, reference_column="ground_truth")
    assert correct.name == "correct" and correct.index.equals(traces.index)
    assert correct.tolist() == verify_math(list(zip(traces["ground_truth"],
                                                    traces["final_answer"])), workers=1)
    nothing = verify_frame(traces, VerifyConfig(method="none"))
    assert nothing.isna().all() and len(nothing) == len(traces)
    with pytest.raises(KeyError, match="'reference'.*reference_column"):
        verify_frame(traces, cfg)


def _teacher(prompts: list[str]) -> list[str]:
    """A deterministic stand-in judge: equal after dropping \\text{}, case and end punctuation."""
    def norm(s: str) -> str:
        return re.sub(r"\\text\{(.*?)\}", r"\1", s).strip().strip(".!").lower()

    out = []
    for p in prompts:
        ref = p.split("Reference answer:\n")[1].split("\n\n")[0]
        ans = p.split("Student's final answer:\n")[1].split("\n\n")[0]
        if "??" in ans:
            out.append("I am not sure.")
        else:
            verdict = "YES" if norm(ref) == norm(ans) else "NO"
            out.append("<think>compare them</think>\n" + verdict)
    return out


@pytest.fixture()
def judged_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "problem": ["p1", "p2", "p3", "p4", "p5", "p6"],
        "reference": ["5", "5", "\\text{north-east}", "\\text{even}", "\\text{Paris}", "7"],
        "final_answer": ["5", "6", "north-east", "even.", "Paris!", "??"],
    })


def test_judge_sees_only_undecided_rows(judged_rows):
    seen: list[str] = []

    def judge(prompts):
        seen.extend(prompts)
        return _teacher(prompts)

    rules = verify_frame(judged_rows, VerifyConfig(workers=1))
    assert rules.tolist() == [True, False, None, None, False, None]
    out = verify_frame(judged_rows, VerifyConfig(method="judge", workers=1), judge=judge)
    assert out.tolist() == [True, False, True, True, False, None]
    assert len(seen) == 3 and "Problem:\np3" in seen[0] and "north-east" in seen[0]


def test_judge_can_also_review_wrong_verdicts(judged_rows):
    cfg = VerifyConfig(workers=1, judge=JudgeConfig(enabled=True, applies_to="undecided_and_wrong"))
    out = verify_frame(judged_rows, cfg, judge=_teacher)
    assert out.tolist() == [True, False, True, True, True, None]


def test_judge_errors_name_the_fix(judged_rows):
    with pytest.raises(ValueError, match="no judge callable"):
        verify_frame(judged_rows, VerifyConfig(method="judge", workers=1))
    with pytest.raises(ValueError, match="one per prompt"):
        verify_frame(judged_rows, VerifyConfig(method="judge", workers=1), judge=lambda p: [])


@pytest.mark.parametrize("completion, verdict", [
    ("YES", True), ("no.", False), ("Verdict: Yes", True), ("<think>yes? no...</think>\nNO", False),
    ("", None), ("It depends.", None), (None, None)])
def test_parse_verdict(completion, verdict):
    assert parse_verdict(completion) is verdict


def test_code_method_runs_the_programs_against_their_tests():
    program = "```python\ndef f(x):\n    return x + {}\n```"
    df = pd.DataFrame({"answer_text": [program.format(1), program.format(0), "no code"],
                       "tests": ["assert f(1) == 2"] * 3}, index=[7, 8, 9])
    out = verify_frame(df, VerifyConfig(method="code", code={"workers": 1}))
    assert out.name == "correct" and out.to_dict() == {7: True, 8: False, 9: None}


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="timeout"):
        VerifyConfig(timeout=3)
