"""Code verification: real programs, real sandboxed runs, both common test formats."""
from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from distill.data.sandbox import SandboxLimits
from distill.data.verify_code import (
    CodeVerifyConfig,
    code_verdicts,
    extract_program,
    run_tests,
    verify_code_frame,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux namespaces")

CFG = CodeVerifyConfig(workers=2, limits=SandboxLimits(wall_time_s=10, cpu_time_s=5))
SQUARE_OK = "n = int(input())\nprint(n * n)\n"
SQUARE_WRONG = "n = int(input())\nprint(n + n)\n"
STDIO = {"inputs": ["2\n", "3\n", "10\n"], "outputs": ["4\n", "9", "100\n"]}
ADD_OK = "def add(a, b):\n    return a + b\n"
ADD_WRONG = "def add(a, b):\n    return a * b\n"
ASSERTS = "assert add(2, 2) == 4\nassert add(1, 2) == 3\nassert add(0, 5) == 5\n"


def answer(program: str, lang: str = "python") -> str:
    return f"Here is my solution.\n\n```{lang}\n{program}```\n\nIt runs in O(1)."


def test_extract_program_takes_the_last_python_block():
    text = ("First try:\n```python\nprint(1)\n```\nOutput:\n```\n1\n```\n"
            "Better:\n```python\nprint(2)\n```\nSample output:\n```text\n2\n```\n")
    assert extract_program(text) == "print(2)"
    assert extract_program("no code\n```\nprint(3)\n```") == "print(3)"
    assert extract_program("just prose, no fence") is None
    assert extract_program("```python\n\n```") is None
    assert extract_program("truncated\n```python\nprint(4)\n") is None  # never closed


def test_stdin_stdout_correct_and_wrong_solutions():
    ok = run_tests(SQUARE_OK, STDIO, CFG)
    assert (ok.passed, ok.n_passed, ok.n_total, ok.reason) == (True, 3, 3, None)
    wrong = run_tests(SQUARE_WRONG, STDIO, CFG)
    # 2 + 2 == 2 * 2, so the first case passes and the second fails; then it stops
    assert (wrong.passed, wrong.n_passed, wrong.n_total) == (False, 1, 3)
    assert wrong.reason == "wrong_answer"
    assert "expected '9'" in wrong.detail


def test_stdout_comparison_ignores_whitespace_layout_only():
    tests = [{"input": "1 2", "output": "3 4\n5"}]
    assert run_tests("print('3   4')\nprint(' 5 ')\n", tests, CFG).passed
    assert not run_tests("print('34 5')\n", tests, CFG).passed


def test_assert_style_correct_and_wrong_solutions():
    ok = run_tests(ADD_OK, ASSERTS, CFG)
    assert (ok.passed, ok.n_passed, ok.n_total) == (True, 3, 3)
    wrong = run_tests(ADD_WRONG, ASSERTS, CFG)
    assert (wrong.passed, wrong.n_passed, wrong.reason) == (False, 1, "wrong_answer")  # only 2*2


def test_mbpp_humaneval_and_call_based_formats():
    mbpp = {"test_list": ["assert add(1, 1) == 2", "assert math.isclose(add(0.1, 0.2), 0.3)"],
            "test_imports": ["import math"], "test_setup_code": ""}
    assert run_tests(ADD_OK, mbpp, CFG).passed
    humaneval = {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
                 "entry_point": "add"}
    assert run_tests(ADD_OK, humaneval, CFG).passed
    assert not run_tests(ADD_WRONG, humaneval, CFG).passed
    calls = {"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [[3], 7]}
    assert run_tests(ADD_OK, calls, CFG).passed
    leetcode = "class Solution:\n    def add(self, a, b):\n        return a - b\n"
    assert run_tests(leetcode, calls, CFG).reason == "wrong_answer"


def test_program_that_exits_before_the_asserts_does_not_pass():
    early_exit = ADD_WRONG + "import sys\nsys.exit(0)\n"
    verdict = run_tests(early_exit, ASSERTS, CFG)
    assert not verdict.passed and verdict.reason == "no_test_run"


def test_slow_solution_fails_with_a_reason():
    cfg = CodeVerifyConfig(workers=1, limits=SandboxLimits(wall_time_s=1, cpu_time_s=10))
    slow = "import time\ntime.sleep(60)\nprint(4)\n"
    verdict = run_tests(slow, STDIO, cfg)
    assert (verdict.passed, verdict.reason, verdict.n_passed) == (False, "wall_timeout", 0)
    looping = "def add(a, b):\n    while True:\n        pass\n"
    verdict = run_tests(looping, ASSERTS, cfg)
    assert not verdict.passed and verdict.reason == "wall_timeout"


def test_verify_code_frame_marks_each_row():
    df = pd.DataFrame({
        "answer_text": [answer(SQUARE_OK), answer(SQUARE_WRONG), "I cannot solve this.",
                        answer(ADD_OK), answer(ADD_WRONG), answer(SQUARE_OK)],
        "tests": [json.dumps(STDIO), STDIO, STDIO, ASSERTS, json.dumps(ASSERTS.splitlines()), None],
    }, index=[10, 11, 12, 13, 14, 15])
    out = verify_code_frame(df, CFG)
    assert out.index.tolist() == df.index.tolist()
    assert out.tolist() == [True, False, None, True, False, None]


def test_final_program_column_wins_over_the_answer_text():
    df = pd.DataFrame({"answer_text": [answer(SQUARE_WRONG), answer(SQUARE_WRONG)],
                       "final_program": [SQUARE_OK, None],
                       "tests": [STDIO, STDIO]})
    verdicts = code_verdicts(df, CFG)
    assert [v.passed for v in verdicts] == [True, False]  # the second falls back to answer_text


def test_bad_tests_name_the_row_and_the_fix():
    df = pd.DataFrame({"answer_text": [answer(ADD_OK)], "tests": [{"cases": [1, 2]}]}, index=["p7"])
    with pytest.raises(ValueError, match=r"row 'p7', column 'tests': unsupported tests format"):
        verify_code_frame(df, CFG)
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        run_tests(SQUARE_OK, {"inputs": ["1", "2"], "outputs": ["1"]}, CFG)
    with pytest.raises(KeyError, match="needs a 'tests' column"):
        verify_code_frame(pd.DataFrame({"answer_text": ["x"]}), CFG)
