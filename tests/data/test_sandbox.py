"""The sandbox contains real hostile programs: each test runs one and checks the host side."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from distill.data.sandbox import (
    UID_BASE,
    SandboxLimits,
    SandboxUnavailable,
    _world_executable,
    run_sandboxed,
)
from pydantic import ValidationError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux namespaces")

REPO = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0
# The run uids of this process: UID_BASE + (pid % 2**22) * 64 + slot, slot < 64.
OUR_UIDS = range(UID_BASE + (os.getpid() % 2**22) * 64, UID_BASE + (os.getpid() % 2**22) * 64 + 64)


def quick(**kw) -> SandboxLimits:
    return SandboxLimits(**{"wall_time_s": 10, "cpu_time_s": 5, **kw})


def sandbox_pids() -> list[int]:
    """Processes (anywhere on the host) running as one of this test process's sandbox uids."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uid_line.split()[1]) in OUR_UIDS:
            pids.append(int(entry))
    return pids


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


def test_writes_outside_the_scratch_dir_never_reach_the_host():
    tag = uuid.uuid4().hex
    targets = [f"/tmp/escape_{tag}", str(REPO / f"escape_{tag}"), f"/dev/shm/escape_{tag}",
               f"/var/tmp/escape_{tag}", f"{Path.home()}/escape_{tag}"]
    code = (
        "import json, os\n"
        f"targets = {targets!r}\n"
        "outcome = {}\n"
        "for t in targets:\n"
        "    try:\n"
        "        with open(t, 'w') as f:\n"
        "            f.write('escaped')\n"
        "        outcome[t] = 'wrote'\n"
        "    except OSError as e:\n"
        "        outcome[t] = e.strerror\n"
        "with open('inside.txt', 'w') as f:\n"
        "    f.write('ok')\n"
        "print(json.dumps({'outcome': outcome, 'inside': open('inside.txt').read(),"
        " 'cwd': os.getcwd()}))\n"
    )
    seen = json.loads(run_sandboxed(code, limits=quick()).stdout)
    assert seen["inside"] == "ok"  # the scratch dir itself is writable
    # A repository under /tmp is hidden by the sandbox's private /tmp: not found is denied too.
    denied = ("Read-only file system", "Permission denied", "No such file or directory")
    assert seen["outcome"][str(REPO / f"escape_{tag}")] in denied
    for target in targets:
        assert not os.path.exists(target), f"{target} escaped ({seen['outcome'][target]})"
    assert not os.path.exists(seen["cwd"]), "the scratch dir must be deleted after the run"


def test_network_connection_to_a_local_server_never_arrives():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(2)
    port = server.getsockname()[1]
    with server:
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # the server does work
            server.accept()[0].close()
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('refused', e.errno)\n"
        )
        r = run_sandboxed(code, limits=quick())
        server.settimeout(0.5)
        with pytest.raises(socket.timeout):
            server.accept()
    assert r.stdout.startswith("refused"), r.stdout + r.stderr


@pytest.mark.skipif(not AS_ROOT, reason="per-run uids (and so this count) exist only as root")
def test_fork_bomb_is_capped_and_leaves_no_process_behind():
    bomb = ("import os\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n")
    limits = quick(max_processes=8, wall_time_s=2, cpu_time_s=2)
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(sandbox_pids()))
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = run_sandboxed(bomb, limits=limits)
    finally:
        done.set()
        watcher.join()
    assert r.killed_reason in ("wall_timeout", "cpu_limit")
    assert 1 < peak[0] <= limits.max_processes + 1  # it did fork, never past RLIMIT_NPROC (+ init)
    assert sandbox_pids() == []


@pytest.mark.skipif(not AS_ROOT, reason="per-run uids (and so this count) exist only as root")
def test_daemonised_child_does_not_outlive_the_run():
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    time.sleep(600)\n"
            "print('parent exits')\n")
    r = run_sandboxed(code, limits=quick())
    assert r.returncode == 0 and r.stdout == "parent exits\n"
    assert sandbox_pids() == []


def test_a_sandbox_that_cannot_start_raises_instead_of_failing_the_program(monkeypatch):
    fd, fake = tempfile.mkstemp(prefix="not-python-", dir="/tmp")
    try:
        os.write(fd, b"\x7fELF but not really")
        os.close(fd)
        os.chmod(fake, 0o755)
        monkeypatch.setenv("DISTILL_SANDBOX_PYTHON", fake)
        with pytest.raises(SandboxUnavailable, match="sandbox setup failed: exec"):
            run_sandboxed("print(1)", limits=quick())
    finally:
        os.unlink(fake)


def test_bad_settings_are_rejected_with_the_field_named():
    with pytest.raises(ValidationError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=1)
    with pytest.raises(ValueError, match="unknown sandbox language 'cobol'"):
        run_sandboxed("print(1)", language="cobol")


NOT_ROOT_CHECK = """
import json, os, socket, uuid
from distill.data.sandbox import SandboxLimits, run_sandboxed
server = socket.create_server(("127.0.0.1", 0))
escape = f"/tmp/escape_{uuid.uuid4().hex}"
code = (f"open({escape!r}, 'w').write('x')\\n"
        "import socket\\n"
        "try:\\n"
        f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)\\n"
        "except OSError as e:\\n"
        "    print(e.strerror)\\n")
r = run_sandboxed(code, limits=SandboxLimits(wall_time_s=10))
server.settimeout(0.5)
try:
    server.accept()
    arrived = True
except socket.timeout:
    arrived = False
print(json.dumps({"uid": os.geteuid(), "stdout": r.stdout, "stderr": r.stderr,
                  "arrived": arrived, "escaped": os.path.exists(escape)}))
"""


def _unprivileged_command() -> list[str] | None:
    """How to run this repo's code as `nobody`: the system python3 plus our site-packages."""
    python, setpriv = shutil.which("python3", path="/usr/bin:/bin"), shutil.which("setpriv")
    site = sysconfig.get_paths()["purelib"]
    if not (AS_ROOT and python and setpriv):
        return None
    same_abi = f"{sys.version_info.major}.{sys.version_info.minor}" in os.path.realpath(python)
    if not (same_abi and _world_executable(python) and os.access(site, os.R_OK)
            and all(p.stat().st_mode & 0o005 for p in [Path(site), *Path(site).parents])):
        return None
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i",
            "PATH=/usr/bin:/bin", python, "-c",
            # addsitedir runs the site's .pth files, which map the `distill` namespace
            f"import site; site.addsitedir({site!r})\n" + NOT_ROOT_CHECK]


def test_contains_network_and_writes_when_not_root_too():
    command = _unprivileged_command()
    if command is None:
        pytest.skip("needs root (to become nobody), setpriv, and a system python3 of our ABI")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/",
                          check=False)
    if "sandbox setup failed" in done.stderr:
        pytest.skip(f"no unprivileged user namespaces here: {done.stderr[-300:]}")
    seen = json.loads(done.stdout)
    assert seen["uid"] == 65534
    assert seen["stdout"] == "Network is unreachable\n", seen
    assert not seen["arrived"] and not seen["escaped"]
