"""The fault suite, as a table: what was injected, and what came out.

    .venv/bin/python bench/faults.py                 # the whole suite (about 15-25 min on 2 cores)
    .venv/bin/python bench/faults.py -m "not slow"   # the fast part (the HTTP proxy, ~20 s)
    .venv/bin/python bench/faults.py -k disk         # any pytest selection of tests/faults

Runs the tests in tests/faults with pytest (the extra arguments go to pytest), each scenario
recording into a log (tests/faults/record.py): SIGKILL of the driver during each stage then a
re-run, a Ray worker killed mid-batch in generate and in curate, the HTTP teacher through a
fault-injecting proxy (429, 500, cut bodies, stalls, echoed keys), a full disk in generate,
curate, train and publish. Prints one row per scenario (fault, times injected, runs completed,
rows lost, rows doubled), pytest's own summary, and last the totals:

    faults <injected> completed <n> lost <n> doubled <n>

A scenario whose test failed before recording is missing from the table; pytest's summary line
says so (and the exit status is pytest's).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_suite(pytest_args: list[str]) -> tuple[list[dict], str, int]:
    """(recorded scenarios, pytest's summary line, pytest's exit status)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "faults.jsonl"
        args = pytest_args if any(a.startswith("-m") for a in pytest_args) else ["-m", "", *pytest_args]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings",
                               "tests/faults", *args], cwd=REPO, capture_output=True, text=True, check=False,
                              env={**os.environ, "DISTILL_FAULTS_LOG": str(log)})
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = lines[-1] if lines else proc.stderr.strip()[-300:]
    if proc.returncode not in (0, 5):
        sys.stderr.write(proc.stdout[-6000:])
    return rows, summary, proc.returncode


def table(rows: list[dict]) -> str:
    width = max([len("fault"), *(len(r["fault"]) for r in rows)])
    head = f"{'fault':<{width}}  injected  completed  lost  doubled"
    body = [f"{r['fault']:<{width}}  {r['injected']:>8}  {r['completed']:>9}  {r['lost']:>4}  "
            f"{r['doubled']:>7}" for r in rows]
    return "\n".join([head, "-" * len(head), *body])


def main() -> int:
    rows, summary, status = run_suite(sys.argv[1:])
    print(table(rows))
    print(f"pytest: {summary}")
    total = {k: sum(r[k] for r in rows) for k in ("injected", "completed", "lost", "doubled")}
    print(f"faults {total['injected']} completed {total['completed']} lost {total['lost']} "
          f"doubled {total['doubled']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
