"""Watch a running sandbox from the host: `Watch(proc, {"stdout": fd, ...}, wall_s, cap).collect()`.

Reads the boot process's pipes until they all close, keeping at most `cap` bytes of each; on the
wall clock or an overflow it asks boot (SIGUSR1) to SIGKILL the namespace's init, which takes
every process in the sandbox along, and kills boot's process group if boot does not answer.
`read_reports` parses the JSON lines boot, init and the harness wrote; `killed_reason` says why
a run ended early. Used by data/sandbox.py.
"""
from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import time


class Watch:
    """One running boot process: reads its pipes within the limits and kills it when due."""

    def __init__(self, proc: subprocess.Popen, fds: dict[str, int], wall_s: float, cap: int):
        self.proc, self.wall_s, self.cap = proc, wall_s, cap
        self.fds = fds
        self.out = {fd: bytearray() for fd in fds.values()}
        self.reason: str | None = None
        self.kill_deadline = math.inf

    def kill(self, reason: str) -> None:
        """Ask boot to SIGKILL the namespace's init, which takes every process in it along."""
        if self.reason is None:
            self.reason = reason
            self.kill_deadline = time.monotonic() + 2.0

    def collect(self) -> None:
        """Read every pipe until all close, enforcing the wall clock and the output cap."""
        deadline = time.monotonic() + self.wall_s
        with selectors.DefaultSelector() as sel:
            for fd in self.out:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
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
                    self._read(sel, key.fd)
        self.proc.wait()

    def _read(self, sel: selectors.BaseSelector, fd: int) -> None:
        chunk = os.read(fd, 65536)
        if not chunk:
            sel.unregister(fd)
            return
        buf = self.out[fd]
        buf += chunk[: self.cap - len(buf)]
        if len(buf) >= self.cap:
            self.kill("output_limit")

    def _force_kill(self) -> None:
        """Boot did not answer: kill its process group (init follows through PDEATHSIG)."""
        if self.proc.poll() is None:  # not reaped yet, so the group id cannot have been reused
            os.killpg(self.proc.pid, signal.SIGKILL)

    def text(self, name: str) -> str:
        return self.out[self.fds[name]].decode("utf-8", errors="replace")

    def reports(self, name: str) -> list[dict]:
        """The JSON lines read from pipe `name` (a cut-off last line is dropped)."""
        return parse_reports(bytes(self.out[self.fds[name]]))


def parse_reports(data: bytes) -> list[dict]:
    """One dict per complete JSON line of `data`; lines that do not parse are skipped."""
    reports = []
    for line in data.split(b"\n")[:-1]:
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict):
            reports.append(report)
    return reports


def read_reports(fd: int) -> list[dict]:
    """Everything left to read on `fd` (all its writers have exited), as JSON-line dicts."""
    data = b""
    os.set_blocking(fd, False)  # never wait on a straggler
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return parse_reports(data)


def killed_reason(reason: str | None, returncode: int, cpu_s: float, cpu_limit_s: float,
                  stderr: str) -> str | None:
    """Why the run ended early, from who killed it, its exit signal and its last words."""
    if reason:
        return reason
    hard_cpu = returncode == -signal.SIGKILL and cpu_s >= math.ceil(cpu_limit_s)
    last_words = stderr[-2000:] if returncode != 0 else ""
    if returncode == -signal.SIGXCPU or hard_cpu:
        return "cpu_limit"
    if returncode == -signal.SIGXFSZ or "File too large" in last_words:
        return "file_size"
    if "No space left on device" in last_words:
        return "scratch_full"
    if "MemoryError" in last_words:
        return "memory"
    if returncode == -signal.SIGKILL:
        return "killed"
    return None
