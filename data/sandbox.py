"""Run untrusted code in a sandbox: `run_sandboxed(code, stdin="...", limits=SandboxLimits())`.

Returns a `SandboxResult` (returncode, stdout, stderr, timed_out, killed_reason, wall_s). It never
raises for anything the program does; it raises `SandboxUnavailable` when the sandbox itself
cannot be set up, so a misconfigured machine never looks like "every program failed".
`run_sandboxed(code, tests={"setup": ..., "tests": [...]})` runs assert-style tests against the
program's functions with data/sandbox_harness.py, whose verdicts (`SandboxResult.harness`)
arrive over a pipe only the harness holds; see that module for why a program cannot forge them.

How (Linux): the boot program data/sandbox_boot.py (its docstring has the details) unshares
mount, network, PID, IPC, UTS and cgroup namespaces (as root; not root, inside a user namespace
of the caller's uid) and builds a jail on one size-capped tmpfs: a read-only root holding only
the host's system directories (read-only) and a minimal /dev, a private /proc, and writable
/box (the cwd), /tmp and /dev/shm sharing the one cap (`scratch_mb`). Nothing of the host's
/run, /var, /tmp, /home or /etc exists inside, so neither do its unix sockets; the network
namespace has only a loopback that is down. The program runs as an unprivileged uid unique to
this run (as root) with rlimits, no_new_privs and a minimal environment, chrooted (so it cannot
create user namespaces); when it exits, the kernel kills every process left in the namespace.
Here, the wall clock and output sizes are enforced: on expiry or overflow boot is told to kill
init (SIGKILL of the whole process group if boot does not answer). Code, stdin and the boot
spec travel in memfds: nothing touches the host's disk.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from distill.data.sandbox_lang import (
    LANGUAGES,
    SAFE_PATH,
    SandboxUnavailable,
    harness_files,
    jail_paths,
)
from distill.data.sandbox_watch import Watch, killed_reason, read_reports
from distill.pipeline.errors import DistillError

__all__ = ["SandboxLimits", "SandboxResult", "SandboxUnavailable", "run_sandboxed"]

BOOT = Path(__file__).with_name("sandbox_boot.py")
UID_BASE = 1_000_000_000  # run uids: UID_BASE + (pid % 2**22) * 64 + slot, all < 2**31


class SandboxLimits(BaseModel):
    """Resource limits for one sandboxed run."""

    model_config = ConfigDict(extra="forbid")

    cpu_time_s: float = Field(
        5.0, gt=0, description="CPU seconds per process (RLIMIT_CPU, rounded up).")
    wall_time_s: float = Field(
        10.0, gt=0, description="Wall-clock seconds before the whole run is killed.")
    memory_mb: int = Field(
        512, ge=64, description="Address space per process in MiB (RLIMIT_AS).")
    file_size_mb: int = Field(
        16, gt=0, description="Largest file the program may write in MiB (RLIMIT_FSIZE).")
    scratch_mb: int = Field(
        64, gt=0, description="Space the program may write in all, in MiB: its cwd, /tmp and "
        "/dev/shm share one tmpfs of this size (held in memory while it runs).")
    max_processes: int = Field(
        16, gt=0, description="Processes and threads the program may have at once "
        "(RLIMIT_NPROC, on a uid of the run's own).")
    max_output_bytes: int = Field(
        1_000_000, gt=0, description="Bytes kept of stdout and of stderr each; "
        "writing more kills the run.")


class SandboxResult(BaseModel):
    """What one sandboxed run did."""

    model_config = ConfigDict(extra="forbid")

    returncode: int = Field(description="Exit status of the program; -N: killed by signal N.")
    stdout: str = Field(description="Standard output, at most max_output_bytes (utf-8).")
    stderr: str = Field(description="Standard error, at most max_output_bytes.")
    timed_out: bool = Field(description="True when the wall-clock limit ended the run.")
    killed_reason: str | None = Field(
        description="wall_timeout, cpu_limit, memory, file_size, scratch_full, output_limit, "
        "killed, or None.")
    wall_s: float = Field(description="Wall-clock seconds the run took.")
    harness: list[dict] | None = Field(
        None, description="The test harness's reports, in order (runs given `tests` only).")


_slot_lock = threading.Lock()
_slots_in_use: set[int] = set()


def _acquire_uid() -> tuple[int, int]:
    """(uid, slot): a uid no other live run on this host uses, as RLIMIT_NPROC counts per uid."""
    with _slot_lock:
        slot = next(i for i in itertools.count() if i not in _slots_in_use)
        if slot >= 64:
            raise SandboxUnavailable("more than 64 concurrent sandboxed runs in one process",
                                     fix="lower the number of verification workers")
        _slots_in_use.add(slot)
    return UID_BASE + (os.getpid() % 2**22) * 64 + slot, slot


def _release_uid(slot: int) -> None:
    with _slot_lock:
        _slots_in_use.discard(slot)


def _boot_spec(limits: SandboxLimits, uid: int, argv: list[str], files: dict[str, str],
               paths: list[str], status_fd: int, result_fd: int | None) -> dict:
    """What data/sandbox_boot.py builds and runs (it reads this as JSON)."""
    cpu, mib = math.ceil(limits.cpu_time_s), 1024 * 1024
    inodes = max(1024, limits.scratch_mb * 64)
    return {
        "root": os.geteuid() == 0, "uid": uid, "gid": uid, "argv": argv, "files": files,
        "ro_paths": paths, "status_fd": status_fd, "result_fd": result_fd,
        "tmpfs": f"size={limits.scratch_mb}m,nr_inodes={inodes},mode=755",
        "env": {"PATH": SAFE_PATH, "HOME": "/box", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8"},
        "rlimits": {
            "RLIMIT_CPU": [cpu, cpu + 1],  # SIGXCPU at the soft limit, SIGKILL a second later
            "RLIMIT_AS": [limits.memory_mb * mib] * 2,
            "RLIMIT_FSIZE": [limits.file_size_mb * mib] * 2,
            # + the namespace's init, and the harness when it runs the tests
            "RLIMIT_NPROC": [limits.max_processes + 1 + (result_fd is not None)] * 2,
            "RLIMIT_CORE": [0, 0],
            "RLIMIT_NOFILE": [256, 256],
        },
    }


def _memfd(name: str, data: bytes) -> int:
    """An in-memory file holding `data`, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


SETUP_FAILED_HINT = (
    "it needs root with CAP_SYS_ADMIN, or unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0); in a "
    "container, run it with --cap-add SYS_ADMIN --security-opt seccomp=unconfined")


def run_sandboxed(code: str, *, stdin: str = "", limits: SandboxLimits | None = None,
                  language: str = "python", tests: dict | None = None) -> SandboxResult:
    """Run `code` with `stdin` in a fresh sandbox under `limits`; see the module docstring.

    With `tests` ({"setup": str, "tests": [str, ...]}), the language's harness runs them
    against the program (stdin is then unused) and `SandboxResult.harness` holds its reports.
    """
    limits = limits or SandboxLimits()
    if language not in LANGUAGES:
        raise DistillError(f"unknown sandbox language {language!r} (code verification's "
                           "`language`)", fix=f"use one of {sorted(LANGUAGES)}")
    lang, root = LANGUAGES[language], os.geteuid() == 0
    if tests is not None and lang.harness_argv is None:
        raise DistillError(f"the {language} sandbox cannot run assert-style tests",
                           fix="give stdin/stdout tests for this language")
    exe = lang.interpreter(root)
    files = {f"box/{lang.filename}": code, **(harness_files() if tests is not None else {})}
    uid, slot = _acquire_uid() if root else (os.getuid(), -1)
    pipes: dict[str, int] = {}  # our ends: read here, closed here
    theirs: list[int] = []  # boot's ends: closed here once boot holds them
    proc, start = None, time.monotonic()
    try:
        pipes["status"], status_w = _pipe(theirs)
        argv, result_w = lang.argv(exe), None
        if tests is not None:
            pipes["harness"], result_w = _pipe(theirs)
            argv, stdin = lang.harness_argv(exe, result_w), json.dumps(tests)
        spec = _boot_spec(limits, uid, argv, files, jail_paths(lang.paths(exe)), status_w,
                          result_w)
        theirs.append(spec_fd := _memfd("spec", json.dumps(spec).encode()))
        theirs.append(stdin_fd := _memfd("stdin", stdin.encode("utf-8", "replace")))
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(BOOT), str(spec_fd)], stdin=stdin_fd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env={"PATH": SAFE_PATH},
            start_new_session=True, pass_fds=[fd for fd in theirs if fd != stdin_fd])
        while theirs:
            os.close(theirs.pop())
        watched = {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(),
                   **{k: v for k, v in pipes.items() if k == "harness"}}
        watch = Watch(proc, watched, limits.wall_time_s, limits.max_output_bytes)
        with proc.stdout, proc.stderr:
            watch.collect()
        reports = read_reports(pipes["status"])
    finally:
        if proc is not None and proc.poll() is None:  # interrupted here (e.g. Ctrl-C)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for fd in [pipes.get("status"), pipes.get("harness"), *theirs]:
            if fd is not None:
                os.close(fd)
        if root:
            _release_uid(slot)
    return _result(watch, reports, limits, time.monotonic() - start, tests is not None)


def _pipe(theirs: list[int]) -> tuple[int, int]:
    """A pipe: (our read end, boot's write end, also listed in `theirs`)."""
    r, w = os.pipe()
    theirs.append(w)
    return r, w


def _result(watch: Watch, reports: list[dict], limits: SandboxLimits, wall_s: float,
            harness: bool) -> SandboxResult:
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise SandboxUnavailable(f"sandbox setup failed: {errors[0]}", fix=SETUP_FAILED_HINT)
    report = next((r for r in reports if "status" in r), {})
    if "status" in report:
        returncode = os.waitstatus_to_exitcode(report["status"])
    else:  # killed before init could report
        returncode = -signal.SIGKILL
    stdout, stderr = watch.text("stdout"), watch.text("stderr")
    reason = killed_reason(watch.reason, returncode, report.get("cpu_s", 0.0),
                           limits.cpu_time_s, stderr)
    return SandboxResult(returncode=returncode, stdout=stdout, stderr=stderr,
                         timed_out=reason == "wall_timeout", killed_reason=reason, wall_s=wall_s,
                         harness=watch.reports("harness") if harness else None)
