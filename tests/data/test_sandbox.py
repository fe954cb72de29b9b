"""The sandbox's contract: results, limits and errors, as root and as `nobody`.
The escape attempts are in test_sandbox_attacks.py, the forged verdicts in test_code_forgery.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest
from pydantic import ValidationError

from distill.data.sandbox import UID_BASE, SandboxLimits, SandboxUnavailable, run_sandboxed
from distill.pipeline.errors import DistillError
from tests.data.sandbox_host import nobody_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux namespaces")

AS_ROOT = os.geteuid() == 0
# The run uids of this process: UID_BASE + (pid % 2**22) * 64 + slot, slot < 64.
OUR_UIDS = range(UID_BASE + (os.getpid() % 2**22) * 64, UID_BASE + (os.getpid() % 2**22) * 64 + 64)


def quick(**kw) -> SandboxLimits:
    return SandboxLimits(**{"wall_time_s": 10, "cpu_time_s": 5, **kw})


def test_correct_program_reads_stdin_and_exits_cleanly():
    r = run_sandboxed("n = int(input())\nprint(sum(range(n + 1)))\n", stdin="100\n", limits=quick())
    assert (r.returncode, r.stdout, r.killed_reason, r.timed_out) == (0, "5050\n", None, False)


def test_program_gets_no_inherited_environment_and_no_root(monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_SECRET", "hunter2")
    code = "import os, json\nprint(json.dumps({'uid': os.getuid(), 'env': dict(os.environ)}))\n"
    seen = json.loads(run_sandboxed(code, limits=quick()).stdout)
    assert "hunter2" not in json.dumps(seen["env"])
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL"}
    if AS_ROOT:
        assert seen["uid"] in OUR_UIDS


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    # the wall limit is far away, so only RLIMIT_CPU can end this (even on a loaded machine)
    r = run_sandboxed("while True:\n    pass\n", limits=quick(cpu_time_s=1, wall_time_s=60))
    assert r.killed_reason == "cpu_limit"
    assert r.returncode in (-signal.SIGXCPU, -signal.SIGKILL)
    assert not r.timed_out


def test_sleeping_program_is_stopped_by_the_wall_limit():
    r = run_sandboxed("import time\nprint('start', flush=True)\ntime.sleep(600)\n",
                      limits=quick(wall_time_s=1))
    assert r.timed_out and r.killed_reason == "wall_timeout"
    assert r.stdout == "start\n" and r.returncode == -signal.SIGKILL


def test_gigabyte_allocation_fails_with_memory_error():
    code = "x = bytearray(1024 ** 3)\nprint('allocated')\n"
    r = run_sandboxed(code, limits=quick(memory_mb=256))
    assert "allocated" not in r.stdout
    assert r.returncode != 0 and r.killed_reason == "memory"
    assert "MemoryError" in r.stderr


def test_output_flood_is_cut_at_the_limit_and_killed():
    r = run_sandboxed("while True:\n    print('x' * 1000)\n", limits=quick(max_output_bytes=10_000))
    assert len(r.stdout.encode()) == 10_000 and set(r.stdout) <= {"x", "\n"}
    assert r.killed_reason == "output_limit"
    assert r.returncode == -signal.SIGKILL


def test_writing_past_the_scratch_space_fails_with_a_reason():
    code = "with open('/tmp/big', 'wb') as f:\n    f.write(b'x' * (9 << 20))\n"
    r = run_sandboxed(code, limits=quick(scratch_mb=8, file_size_mb=16))
    assert r.killed_reason == "scratch_full" and "No space left on device" in r.stderr


def test_a_sandbox_that_cannot_start_raises_instead_of_failing_the_program(monkeypatch):
    fd, fake = tempfile.mkstemp(prefix="not-python-", dir="/tmp")
    try:
        os.write(fd, b"\x7fELF but not really")
        os.close(fd)
        os.chmod(fake, 0o755)
        monkeypatch.setenv("DISTILL_SANDBOX_PYTHON", fake)
        with pytest.raises(SandboxUnavailable, match="sandbox setup failed: .*not-python"):
            run_sandboxed("print(1)", limits=quick())
    finally:
        os.unlink(fake)


def test_bad_settings_are_rejected_with_the_field_named():
    with pytest.raises(ValidationError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=1)
    with pytest.raises(DistillError, match=r"unknown sandbox language 'cobol' .*\n  fix: use one"):
        run_sandboxed("print(1)", language="cobol")


NOT_ROOT_CHECK = """
import json, os
from distill.data.sandbox import SandboxLimits, run_sandboxed
from distill.data.verify_code import CodeVerifyConfig, run_tests
cfg = CodeVerifyConfig(workers=1, limits=SandboxLimits(wall_time_s=10))
stdio = run_sandboxed("print(int(input()) * 2)", stdin="21", limits=cfg.limits)
honest = run_tests("def add(a, b):\\n    return a + b\\n", "assert add(1, 2) == 3", cfg)
forged = run_tests("import builtins\\nbuiltins.exec = lambda *a: None\\nadd = abs\\n",
                   "assert add(1, 2) == 3", cfg)
print(json.dumps({"uid": os.geteuid(), "stdout": stdio.stdout, "stderr": stdio.stderr,
                  "honest": honest.passed, "forged": forged.passed}))
"""


def test_programs_and_tests_run_when_not_root_too():
    command = nobody_python()
    if command is None:
        pytest.skip("needs root (to become nobody), setpriv, and a system python3 of our ABI")
    done = subprocess.run([*command[:-1], command[-1] + NOT_ROOT_CHECK], capture_output=True,
                          text=True, timeout=60, cwd="/", check=False)
    if "sandbox setup failed" in done.stderr:
        pytest.skip(f"no unprivileged user namespaces here: {done.stderr[-300:]}")
    seen = json.loads(done.stdout)
    assert seen["uid"] == 65534
    assert (seen["stdout"], seen["honest"], seen["forged"]) == ("42\n", True, False), seen


def test_the_boot_program_and_the_harness_are_plain_modules():
    from distill.data import sandbox_boot, sandbox_harness

    assert os.uname().machine in sandbox_boot.PIVOT_ROOT  # pivot_root's syscall number is known
    assert {p for p, _ in sandbox_boot._mounts_under("")} >= {"/proc"}  # reads this namespace
    assert sandbox_harness.wire.decode({"t": [1, {"s": [2]}]}, None) == (1, {2})
