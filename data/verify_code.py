"""Verify coding answers by running them against the prompt's tests in the sandbox.

    verdicts = verify_code_frame(df, CodeVerifyConfig(workers=2))   # Series of True/False/None

`df` has the program in `final_program` (if that column exists and the row has one) or as the
last ```python fenced block of `answer_text`, and the tests in `tests` (a dict/list, or its JSON
string). None means "could not verify": no program, or no tests. `code_verdicts(df, cfg)` gives
the details per row (passed, n_passed, n_total, reason, detail).

Test formats (`run_tests(program, tests, cfg)`):
- stdin/stdout pairs, as in APPS / TACO / LiveCodeBench: `{"inputs": [...], "outputs": [...]}`
  or a list of `{"input": ..., "output": ...}`; stdout must equal the output up to whitespace
  (both split on whitespace). Each case is its own sandboxed run.
- call-based, as in APPS / TACO with `fn_name`: `{"fn_name": "f", "inputs": [[args], ...],
  "outputs": [...]}`; `f` (or `Solution().f`) is called with the args.
- assert-style, as in MBPP / HumanEval: a string of `assert f(x) == y` statements, a list of
  them, `{"test_list": [...], "test_setup_code": ..., "test_imports": [...]}` (MBPP), or
  `{"test": "def check(candidate): ...", "entry_point": "f"}` (HumanEval). The sandbox's
  harness runs them against the program's functions, one sandboxed run per suite; each top-level
  assert counts as one test. The tests run in the harness's own process, which calls into the
  program's process and gets plain values back, and report over a pipe the program never holds:
  exiting early, patching exec/compile/builtins, printing success lines or returning custom
  `__eq__` objects cannot make a run pass (data/sandbox_harness.py says why).
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.data.sandbox import SandboxLimits, SandboxResult, run_sandboxed
from distill.pipeline.keys import RUNTIME

FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```",
                      re.MULTILINE | re.DOTALL)
PYTHON_TAGS = {"python", "py", "python3"}


class CodeVerifyConfig(BaseModel):
    """How coding answers are run against their tests."""

    model_config = ConfigDict(extra="forbid")

    limits: SandboxLimits = Field(
        default_factory=SandboxLimits,
        description="Sandbox limits for each run (one run per stdin/stdout case, one per "
        "assert suite).")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 2, gt=0,
        description="Rows verified at once (threads; each run is its own process).", json_schema_extra=RUNTIME)
    language: str = Field("python", description="Sandbox language the programs are written in.")
    stop_on_first_failure: bool = Field(
        True, description="Stop a row's stdin/stdout cases at the first failure, so a wrong or "
        "slow program costs one run, not one per case.")


class CodeVerdict(BaseModel):
    """The outcome of one program against its tests."""

    model_config = ConfigDict(extra="forbid")

    passed: bool = Field(description="True when every test passed.")
    n_passed: int = Field(description="Tests that passed (of those run).")
    n_total: int = Field(description="Tests the prompt has.")
    reason: str | None = Field(
        None, description="Why it failed: wrong_answer, runtime_error, no_test_run, no_tests, "
        "or the sandbox's killed_reason (wall_timeout, cpu_limit, memory, output_limit, ...).")
    detail: str | None = Field(
        None, description="The first failure's message or stderr tail, for people.")


def extract_program(answer_text: str | None) -> str | None:
    """The last ```python fenced block of the answer, else its last fenced block, else None."""
    blocks = FENCE_RE.findall(answer_text or "")
    python = [code for tag, code in blocks if tag.lower() in PYTHON_TAGS]
    chosen = python or [code for _, code in blocks]
    program = chosen[-1].strip("\n") if chosen else ""
    return program if program.strip() else None


def _text(value: Any) -> str:
    """A test input/output as text: lists are lines (APPS stores some outputs that way)."""
    if isinstance(value, list):
        return "\n".join(map(str, value))
    return str(value)


def _normalise(tests: dict | list | str) -> tuple[str, Any]:
    """("stdio", [(in, out), ...]) or ("asserts", (setup_code, [test_src, ...]))."""
    if isinstance(tests, str):
        return "asserts", _split_asserts(tests)
    if isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        return "asserts", _split_asserts("\n".join(tests))
    if isinstance(tests, list) and all(
            isinstance(t, dict) and {"input", "output"} <= t.keys() for t in tests):
        return "stdio", [(_text(t["input"]), _text(t["output"])) for t in tests]
    if isinstance(tests, dict) and {"inputs", "outputs"} <= tests.keys():
        ins, outs = tests["inputs"], tests["outputs"]
        if len(ins) != len(outs):
            raise ValueError(
                f"tests have {len(ins)} inputs but {len(outs)} outputs; they must pair up")
        if tests.get("fn_name"):
            calls = [_call_test(tests["fn_name"], i, o) for i, o in zip(ins, outs)]
            return "asserts", ("", calls)
        return "stdio", [(_text(i), _text(o)) for i, o in zip(ins, outs)]
    if isinstance(tests, dict) and "test_list" in tests:
        imports = "\n".join(tests.get("test_imports") or [])
        setup = imports + "\n" + (tests.get("test_setup_code") or "")
        return "asserts", (setup, _split_asserts("\n".join(tests["test_list"]))[1])
    if isinstance(tests, dict) and "test" in tests:
        check = f"\ncheck({tests['entry_point']})\n" if tests.get("entry_point") else ""
        return "asserts", ("", [tests["test"] + check])
    raise ValueError(
        "unsupported tests format; use {'inputs': [...], 'outputs': [...]} (stdin/stdout, add "
        "'fn_name' for call-based), a list of {'input', 'output'}, assert statements (a string "
        "or a list), {'test_list': [...]} (MBPP) or {'test': ..., 'entry_point': ...} (HumanEval)")


def _split_asserts(code: str) -> tuple[str, list[str]]:
    """Top-level asserts become the tests; every other statement is setup run before them."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"assert tests are not valid Python ({e.msg}, line {e.lineno})") from None
    setup, asserts = [], []
    for node in tree.body:
        source = ast.get_source_segment(code, node)
        (asserts if isinstance(node, ast.Assert) else setup).append(source)
    if not asserts:
        raise ValueError("assert-style tests contain no top-level assert statement")
    return "\n".join(setup), asserts


def _call_test(fn_name: str, args: Any, expected: Any) -> str:
    args = args if isinstance(args, list) else [args]
    return f"__distill_call({fn_name!r}, {json.dumps(args)!r}, {json.dumps(expected)!r})"


def _failure(result: SandboxResult) -> str | None:
    if result.killed_reason:
        return result.killed_reason
    return "runtime_error" if result.returncode != 0 else None


def _program_reason(status: int | None) -> str | None:
    """A reason from how the program's process ended, when a limit ended it."""
    if status is None or not os.WIFSIGNALED(status):
        return None
    return {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_size"}.get(os.WTERMSIG(status))


def _run_asserts(program: str, setup: str, tests: list[str], cfg: CodeVerifyConfig) -> CodeVerdict:
    """Run the tests in the sandbox's harness, which calls into the program from its own process
    and reports over its own pipe (data/sandbox_harness.py says why that cannot be faked)."""
    result = run_sandboxed(program, limits=cfg.limits, language=cfg.language,
                           tests={"setup": setup, "tests": tests})
    reports = result.harness or []
    start = next((r for r in reports if "program" in r), {})
    done = next((r for r in reports if "done" in r), None)
    results = [r for r in reports if "test" in r]
    n_passed = sum(r.get("ok") is True for r in results)
    passed = (done is not None and result.killed_reason is None and result.returncode == 0
              and n_passed == len(tests) == len(results))
    fail = next((r.get("error") for r in results if r.get("ok") is not True), None)
    status, kind = (done or {}).get("status"), start.get("program")
    if passed:
        reason, detail = None, None
    elif result.killed_reason or kind is None:
        reason, detail = _failure(result) or "no_test_run", fail or result.stderr[-500:] or None
    elif kind == "ready":
        reason, detail = _program_reason(status) or "wrong_answer", fail
    elif kind == "error":
        reason, detail = "runtime_error", start.get("detail")
    else:  # the program exited, or stopped answering, before the tests ran
        reason, detail = _program_reason(status) or "no_test_run", start.get("detail")
    return CodeVerdict(passed=passed, n_passed=n_passed, n_total=len(tests), reason=reason,
                       detail=detail)


def _run_stdio(program: str, cases: list[tuple[str, str]], cfg: CodeVerifyConfig) -> CodeVerdict:
    n_passed, first = 0, None
    for i, (stdin, expected) in enumerate(cases):
        result = run_sandboxed(program, stdin=stdin, limits=cfg.limits, language=cfg.language)
        same = result.stdout.split() == expected.split()
        reason = _failure(result) or (None if same else "wrong_answer")
        if reason is None:
            n_passed += 1
            continue
        if first is None:
            detail = result.stderr[-500:] if reason != "wrong_answer" else (
                f"case {i}: expected {expected[:200]!r}, got {result.stdout[:200]!r}")
            first = (reason, detail)
        if cfg.stop_on_first_failure:
            break
    reason, detail = first or (None, None)
    return CodeVerdict(passed=first is None, n_passed=n_passed, n_total=len(cases),
                       reason=reason, detail=detail)


def run_tests(program: str, tests: dict | list | str,
              cfg: CodeVerifyConfig | None = None) -> CodeVerdict:
    """Run `program` against `tests` (any format in the module docstring) in the sandbox."""
    cfg = cfg or CodeVerifyConfig()
    kind, payload = _normalise(tests)
    if kind == "stdio":
        if not payload:
            return CodeVerdict(passed=False, n_passed=0, n_total=0, reason="no_tests")
        return _run_stdio(program, payload, cfg)
    setup, asserts = payload
    return _run_asserts(program, setup, asserts, cfg)


def _row_program(row: pd.Series) -> str | None:
    final = row.get("final_program")
    if isinstance(final, str) and final.strip():
        return final
    answer = row.get("answer_text")
    return extract_program(answer) if isinstance(answer, str) else None


def _row_tests(value: Any, index: Any) -> dict | list | str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # a plain string of assert statements
    if isinstance(value, (dict, list)):
        return value
    if hasattr(value, "tolist"):  # a list column read back from Parquet arrives as an array
        return value.tolist()
    raise ValueError(f"row {index!r}: column 'tests' holds a {type(value).__name__}; "
                     "give a dict, a list or their JSON string")


def code_verdicts(df: pd.DataFrame,
                  cfg: CodeVerifyConfig | None = None) -> list[CodeVerdict | None]:
    """One CodeVerdict per row (None: no program or no tests), in row order; rows in parallel."""
    cfg = cfg or CodeVerifyConfig()
    if "tests" not in df.columns or not {"answer_text", "final_program"} & set(df.columns):
        raise KeyError("verify_code needs a 'tests' column and 'answer_text' or "
                       f"'final_program'; got columns {list(df.columns)}")
    jobs = []
    for index, row in df.iterrows():
        program, tests = _row_program(row), _row_tests(row["tests"], index)
        if program is not None and tests is not None:
            try:
                _normalise(tests)
            except ValueError as e:
                raise ValueError(f"row {index!r}, column 'tests': {e}") from None
        jobs.append((program, tests))

    def verdict(job: tuple) -> CodeVerdict | None:
        program, tests = job
        return None if program is None or tests is None else run_tests(program, tests, cfg)

    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        return list(pool.map(verdict, jobs))


def verify_code_frame(df: pd.DataFrame, cfg: CodeVerifyConfig | None = None) -> pd.Series:
    """True/False per row when its program passed/failed its tests, None when unverifiable."""
    verdicts = code_verdicts(df, cfg)
    return pd.Series([v.passed if v else None for v in verdicts], index=df.index, dtype=object,
                     name="code_verified")
