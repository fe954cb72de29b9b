"""Run untrusted code in a sandbox: `run_sandboxed(code, stdin="...", limits=SandboxLimits())`.

Returns a `SandboxResult` (returncode, stdout, stderr, timed_out, killed_reason, wall_s). It never
raises for anything the program does; it raises `SandboxUnavailable` when the sandbox itself
cannot be set up, so a misconfigured machine never looks like "every program failed".

How (Linux; the boot step `_BOOT` is stdlib-only Python run with `python -I -S`):
- boot unshares network, mount and PID namespaces. The network namespace has only a loopback
  that is down, so every connection fails. In the mount namespace every mount is re-mounted
  read-only (bind remounts: the host is untouched), /tmp, /var/tmp, /dev/shm and /run/lock are
  small private tmpfs, and only the fresh scratch directory (the cwd) is writable.
- boot forks an init (PID 1 of the new namespace) that mounts a private /proc, drops to an
  unprivileged uid/gid unique to this run, with no groups and `no_new_privs`, then forks the
  program with rlimits (CPU seconds, address space, file size, processes via RLIMIT_NPROC on
  that uid, no core files) and a minimal environment (no inherited variables or secrets).
  When the program exits, init exits, and the kernel kills every process left in the namespace
  (a fork bomb or a daemonised child cannot outlive the run, and nothing is left as a zombie).
- here, the wall clock and output size are enforced: on expiry or overflow boot is told to kill
  init (SIGKILL of the whole process group if boot does not answer). The scratch dir is deleted.

As root (our machines, CI) all of that holds. Not root: boot uses an unprivileged user
namespace for the same namespaces (where the kernel allows one); the program keeps the caller's
uid, and RLIMIT_NPROC counts within that user namespace.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
UID_BASE = 1_000_000_000  # run uids: UID_BASE + (pid % 2**22) * 64 + slot, all < 2**31


class SandboxUnavailable(RuntimeError):
    """The sandbox could not be set up on this machine (not a failure of the program)."""


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
        16, gt=0, description="Largest file the program may write in MiB (RLIMIT_FSIZE); "
        "also the size of each private tmpfs (/tmp, /dev/shm, ...).")
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
        description="wall_timeout, cpu_limit, memory, file_size, output_limit, killed, or None.")
    wall_s: float = Field(description="Wall-clock seconds the run took.")


class Language(NamedTuple):
    """How to run a program: the file the code goes in, and the argv (given the interpreter)."""

    filename: str
    argv: Callable[[str], list[str]]
    interpreter: Callable[[bool], str]


def _world_executable(path: str) -> bool:
    """True if a uid that is neither owner nor group can reach and run `path`."""
    real = Path(os.path.realpath(path))
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)


def python_interpreter(drops_uid: bool) -> str:
    """The Python the sandboxed program runs on: $DISTILL_SANDBOX_PYTHON, this one, or python3.

    When the program runs as another uid (root mode) the interpreter must be reachable by
    "others" (a pyenv Python under /root, mode 700, is not), so the system python3 is used.
    """
    candidates = [os.environ.get("DISTILL_SANDBOX_PYTHON"), sys.executable,
                  shutil.which("python3", path=SAFE_PATH)]
    for c in filter(None, candidates):
        if not drops_uid or _world_executable(c):
            return c
    raise SandboxUnavailable(
        f"no Python the sandbox uid can run: {sys.executable} is not reachable by other users "
        "(a parent directory lacks o+x); install a system python3 (apt-get install python3) "
        "or set DISTILL_SANDBOX_PYTHON to a world-executable interpreter")


LANGUAGES: dict[str, Language] = {
    "python": Language("main.py", lambda exe: [exe, "-I", "-B", "main.py"], python_interpreter),
}

_BOOT = r'''
import ctypes, json, os, re, resource, signal, sys
spec = json.loads(sys.argv[1])
status = spec["status_fd"]
os.set_inheritable(status, False)  # the program never gets it: exec closes it
def report(**kw):
    os.write(status, (json.dumps(kw) + "\n").encode())
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args}: {os.strerror(err)}")
NEWNS, NEWNET, NEWPID, NEWUSER = 0x20000, 0x40000000, 0x20000000, 0x10000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
KEEP = {"nosuid": NOSUID, "nodev": NODEV, "noexec": NOEXEC, "noatime": 1024,
        "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
def namespaces():
    if spec["root"]:
        return call("unshare", NEWNS | NEWNET | NEWPID)
    uid, gid = os.getuid(), os.getgid()
    call("unshare", NEWUSER | NEWNS | NEWNET | NEWPID)
    maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
    for name, text in maps:
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
def filesystem():
    scratch = spec["scratch"].encode()
    call("mount", None, b"/", None, REC | PRIVATE, None)
    keep = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f.read().splitlines()]
    for m in mounts:  # bind remounts change this namespace's view only, never the filesystem
        target = re.sub(r"\\([0-7]{3})", lambda g: chr(int(g.group(1), 8)), m[4]).encode()
        flags = sum(KEEP.get(o, 0) for o in m[5].split(","))
        call("mount", None, target, None, REMOUNT | BIND | RDONLY | flags, None)
    for d in spec["tmpfs"]:
        if os.path.isdir(d):
            opts = spec["tmpfs_opts"].encode()
            call("mount", b"tmpfs", d.encode(), b"tmpfs", NOSUID | NODEV, opts)
    os.makedirs(scratch, exist_ok=True)
    call("mount", f"/proc/self/fd/{keep}".encode(), scratch, None, BIND, None)
    call("mount", None, scratch, None, REMOUNT | BIND | NOSUID | NODEV, None)
    os.chdir(scratch)
    os.close(keep)
def become_init():
    try:
        call("mount", b"proc", b"/proc", b"proc", NOSUID | NODEV | NOEXEC, None)
    except OSError:
        pass  # a private /proc only hides the host's processes; the PID namespace still holds
    if spec["root"]:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    call("prctl", 38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries stay inert
    call("prctl", 1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with boot
def run_program():
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # ignored ones survive exec
        signal.signal(sig, signal.SIG_DFL)
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(value))
    os.execve(spec["argv"][0], spec["argv"], spec["env"])
def init():
    program = os.fork()
    if program == 0:
        try:
            run_program()
        except BaseException as e:
            report(error=f"exec {spec['argv'][0]}: {e}")
        os._exit(125)
    while True:
        pid, wstatus, usage = os.wait4(-1, 0)
        if pid == program:
            report(status=wstatus, cpu_s=usage.ru_utime + usage.ru_stime)
            os._exit(0)  # the kernel now kills whatever is left in the namespace
child = 0
def stop(signum, frame):
    if child:
        os.kill(child, signal.SIGKILL)
signal.signal(signal.SIGUSR1, stop)
try:
    namespaces()
    filesystem()
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        become_init()
        init()
except BaseException as e:
    report(error=f"{type(e).__name__}: {e}")
    os._exit(125)
while True:
    pid, wstatus = os.waitpid(child, 0)
    if pid == child:
        os._exit(0)
'''

_slot_lock = threading.Lock()
_slots_in_use: set[int] = set()


def _acquire_uid() -> tuple[int, int]:
    """(uid, slot): a uid no other live run on this host uses, as RLIMIT_NPROC counts per uid."""
    with _slot_lock:
        slot = next(i for i in itertools.count() if i not in _slots_in_use)
        if slot >= 64:
            raise SandboxUnavailable("more than 64 concurrent sandboxed runs in one process")
        _slots_in_use.add(slot)
    return UID_BASE + (os.getpid() % 2**22) * 64 + slot, slot


def _release_uid(slot: int) -> None:
    with _slot_lock:
        _slots_in_use.discard(slot)


def _boot_spec(limits: SandboxLimits, scratch: str, uid: int, argv: list[str],
               status_fd: int) -> dict:
    root = os.geteuid() == 0
    cpu = math.ceil(limits.cpu_time_s)
    mib = 1024 * 1024
    return {
        "root": root, "uid": uid, "gid": uid, "scratch": scratch, "argv": argv,
        "status_fd": status_fd, "tmpfs": list(TMPFS_DIRS),
        "tmpfs_opts": f"size={limits.file_size_mb}m,mode=1777",
        "env": {"PATH": SAFE_PATH, "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8"},
        "rlimits": {
            "RLIMIT_CPU": [cpu, cpu + 1],  # SIGXCPU at the soft limit, SIGKILL a second later
            "RLIMIT_AS": [limits.memory_mb * mib] * 2,
            "RLIMIT_FSIZE": [limits.file_size_mb * mib] * 2,
            "RLIMIT_NPROC": [limits.max_processes + 1] * 2,  # + the namespace's init
            "RLIMIT_CORE": [0, 0],
            "RLIMIT_NOFILE": [256, 256],
        },
    }


class _Run:
    """One running boot process: reads its output within the limits and kills it when due."""

    def __init__(self, proc: subprocess.Popen, limits: SandboxLimits):
        self.proc, self.limits = proc, limits
        self.out = {proc.stdout: bytearray(), proc.stderr: bytearray()}
        self.reason: str | None = None
        self.kill_deadline = math.inf

    def kill(self, reason: str) -> None:
        """Ask boot to SIGKILL the namespace's init, which takes every process in it along."""
        if self.reason is None:
            self.reason = reason
            self.kill_deadline = time.monotonic() + 2.0

    def collect(self) -> None:
        """Read stdout/stderr until both close, enforcing the wall clock and the output cap."""
        deadline = time.monotonic() + self.limits.wall_time_s
        with selectors.DefaultSelector() as sel:
            for f in self.out:
                os.set_blocking(f.fileno(), False)
                sel.register(f, selectors.EVENT_READ)
            while sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    self.kill("wall_timeout")
                if self.reason is not None:
                    if now >= self.kill_deadline:
                        self._force_kill()
                        break
                    if self.proc.poll() is None:  # re-sent: boot may not have its handler yet
                        os.kill(self.proc.pid, signal.SIGUSR1)
                wake = 0.05 if self.reason is not None else deadline - now
                for key, _ in sel.select(timeout=max(wake, 0.0)):
                    self._read(sel, key.fileobj)
        self.proc.wait()

    def _read(self, sel: selectors.BaseSelector, f) -> None:
        chunk = os.read(f.fileno(), 65536)
        if not chunk:
            sel.unregister(f)
            return
        buf, cap = self.out[f], self.limits.max_output_bytes
        buf += chunk[: cap - len(buf)]
        if len(buf) >= cap:
            self.kill("output_limit")

    def _force_kill(self) -> None:
        """Boot did not answer: kill its process group (init follows through PDEATHSIG)."""
        if self.proc.poll() is None:  # not reaped yet, so the group id cannot have been reused
            os.killpg(self.proc.pid, signal.SIGKILL)

    def text(self, f) -> str:
        return self.out[f].decode("utf-8", errors="replace")


SETUP_FAILED_HINT = (
    "it needs root with CAP_SYS_ADMIN, or unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0); in a "
    "container, run it with --cap-add SYS_ADMIN --security-opt seccomp=unconfined")


def _read_status(fd: int) -> dict:
    """Boot's and init's reports: the program's wait status and CPU time, or a setup error."""
    data = b""
    os.set_blocking(fd, False)  # every writer has exited by now; never wait on a straggler
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    reports = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise SandboxUnavailable(f"sandbox setup failed: {errors[0]}; {SETUP_FAILED_HINT}")
    return next((r for r in reports if "status" in r), {})


def _killed_reason(run: _Run, returncode: int, cpu_s: float, limits: SandboxLimits,
                   stderr: str) -> str | None:
    """Why the run ended early, from who killed it, its exit signal and its last words."""
    if run.reason:
        return run.reason
    hard_cpu = returncode == -signal.SIGKILL and cpu_s >= math.ceil(limits.cpu_time_s)
    if returncode == -signal.SIGXCPU or hard_cpu:
        return "cpu_limit"
    if returncode == -signal.SIGXFSZ or (returncode != 0 and "File too large" in stderr[-2000:]):
        return "file_size"
    if returncode != 0 and "MemoryError" in stderr[-2000:]:
        return "memory"
    if returncode == -signal.SIGKILL:
        return "killed"
    return None


def run_sandboxed(code: str, *, stdin: str = "", limits: SandboxLimits | None = None,
                  language: str = "python") -> SandboxResult:
    """Run `code` with `stdin` in a fresh sandbox under `limits`; see the module docstring."""
    limits = limits or SandboxLimits()
    if language not in LANGUAGES:
        raise ValueError(f"unknown sandbox language {language!r}; known: {sorted(LANGUAGES)}")
    lang = LANGUAGES[language]
    root = os.geteuid() == 0
    argv = lang.argv(lang.interpreter(root))
    uid, slot = _acquire_uid() if root else (os.getuid(), -1)
    scratch = tempfile.mkdtemp(prefix="distill-sbx-")
    status_r, status_w = os.pipe()
    start, proc = time.monotonic(), None
    try:
        Path(scratch, lang.filename).write_text(code, encoding="utf-8")
        if root:
            for p in (scratch, os.path.join(scratch, lang.filename)):
                os.chown(p, uid, uid)
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write(stdin.encode("utf-8"))
            stdin_file.seek(0)
            spec = _boot_spec(limits, scratch, uid, argv, status_w)
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, json.dumps(spec)],
                stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch,
                env={"PATH": SAFE_PATH}, start_new_session=True, pass_fds=(status_w,))
        os.close(status_w)
        status_w = -1
        run = _Run(proc, limits)
        with proc.stdout, proc.stderr:
            run.collect()
        report = _read_status(status_r)
    finally:
        if proc is not None and proc.poll() is None:  # interrupted here (e.g. Ctrl-C)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)
        if root:
            _release_uid(slot)
    wall_s = time.monotonic() - start
    if "status" in report:
        returncode = os.waitstatus_to_exitcode(report["status"])
    else:  # killed before init could report
        returncode = -signal.SIGKILL
    stdout, stderr = run.text(proc.stdout), run.text(proc.stderr)
    reason = _killed_reason(run, returncode, report.get("cpu_s", 0.0), limits, stderr)
    return SandboxResult(returncode=returncode, stdout=stdout, stderr=stderr,
                         timed_out=reason == "wall_timeout", killed_reason=reason, wall_s=wall_s)
