"""The sandbox attack corpus: each hostile program runs in the sandbox, and the host side checks
that nothing escaped (files, environment, writes, space, processes, network, sockets, signals,
namespaces). Every attack runs as root here, and again as `nobody` (unprivileged user
namespaces) in one batch when this machine can."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from distill.data.sandbox import SandboxLimits, SandboxResult, run_sandboxed
from tests.data.sandbox_host import AS_ROOT, Host, nobody_python, sandbox_pids

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux namespaces")

JAIL_ROOT = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp",
             "box", ".distill"}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    os.environ["DISTILL_TEST_SECRET"] = secret = f"env-{uuid.uuid4().hex}"
    h = Host(tmp_path_factory.mktemp("host"))
    h.env_secret = secret
    yield h
    h.close()
    del os.environ["DISTILL_TEST_SECRET"]


class Attack(NamedTuple):
    code: str  # run after `import json; HOST = {...}` (the Host's facts)
    check: Callable[[SandboxResult, Host], None]
    limits: dict | None = None  # SandboxLimits fields besides the quick defaults
    root_only: bool = False  # needs per-run uids to observe


def _seen(r: SandboxResult) -> dict:
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def check_host_files(r: SandboxResult, h: Host) -> None:
    seen = _seen(r)
    assert h.secret not in r.stdout and h.env_secret not in r.stdout
    assert set(seen["root"]) <= JAIL_ROOT, seen["root"]
    assert seen["hostname"] == "sandbox" and set(seen["env"]) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL"}
    assert all(v in ("No such file or directory", "Permission denied")
               for v in seen["denied"].values()), seen["denied"]


HOST_FILES = Attack("""
import os, glob, socket
found, denied = '', {}
targets = HOST['secret_files'] + HOST['host_paths'] + ['/etc/passwd', '/etc/shadow', '/dev/mem',
    '/dev/kmsg', '/dev/sda', '/dev/vda', '/sys/kernel', '/proc/1/environ', '/proc/1/fd/0',
    '/proc/1/mem', '/proc/1/root/etc/passwd', '/proc/kcore']
for path in targets + glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):
    try:
        if os.path.isdir(path):
            found += str(os.listdir(path))
        else:
            found += open(path, 'rb').read(1 << 16).decode('latin-1')
        if path in targets:
            denied[path] = 'readable'
    except OSError as e:
        denied[path] = e.strerror
for dirpath, _, files in os.walk('/box'):
    found += ''.join(open(os.path.join(dirpath, f), errors='replace').read() for f in files)
print(json.dumps({'root': os.listdir('/'), 'env': dict(os.environ), 'found': found,
                  'hostname': socket.gethostname(),
                  'denied': {k: v for k, v in denied.items() if k in targets}}))
""", check_host_files)


def check_writes(r: SandboxResult, h: Host) -> None:
    seen = _seen(r)
    for target, outcome in seen["outside"].items():
        assert outcome != "wrote" or target.startswith(("/tmp/", "/dev/shm/")), (target, outcome)
        assert not os.path.exists(target) or target in map(str, h.files), f"{target} escaped"
    assert seen["inside"] == {"/box/x": "wrote", "/tmp/x": "wrote", "/dev/shm/x": "wrote"}
    assert all(path.read_text() == h.secret for path in h.files)


WRITES = Attack("""
import os
def write(path):
    try:
        with open(path, 'w') as f:
            f.write('escaped')
        return 'wrote'
    except OSError as e:
        return e.strerror
tag = HOST['marker']
dirs = ['/', '/usr', '/usr/lib', '/etc', '/dev', '/.distill', '/proc', '/tmp', '/dev/shm',
        '/var/tmp']
outside = [f'{d}/escape-{tag}' for d in HOST['host_paths'] + dirs]
outside += HOST['secret_files']
print(json.dumps({'outside': {p: write(p) for p in outside},
                  'inside': {p: write(p) for p in ('/box/x', '/tmp/x', '/dev/shm/x')}}))
""", check_writes)


def check_fill(r: SandboxResult, h: Host) -> None:
    seen = _seen(r)
    mib = 1024 * 1024
    assert 6 * mib <= seen["bytes"] <= 8 * mib and seen["error"] == "No space left on device"
    assert seen["files"] <= 8 * 64 * 2 and seen["files_error"] == "No space left on device"


FILL_SCRATCH = Attack("""
import os
written, error, chunk = 0, None, b'x' * (1 << 20)
for i in range(100):
    try:
        with open(f"{('/box', '/tmp', '/dev/shm')[i % 3]}/fill{i}", 'wb') as f:
            f.write(chunk)
        written += len(chunk)
    except OSError as e:
        error = e.strerror
        break
files, files_error = 0, None
for i in range(100000):
    try:
        open(f'/tmp/f{i}', 'w').close()
        files += 1
    except OSError as e:
        files_error = e.strerror
        break
print(json.dumps({'bytes': written, 'error': error, 'files': files, 'files_error': files_error}))
""", check_fill, {"scratch_mb": 8, "file_size_mb": 4})


def check_orphans(r: SandboxResult, h: Host) -> None:
    assert r.returncode == 0 and r.stdout == "parent exits\n", r.stderr
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, h.marker)]
    assert not left, "a process outlived its run"
    assert f"{h.ipc_key:10d}" not in Path("/proc/sysvipc/shm").read_text()


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


ORPHANS = Attack("""
import ctypes, os, sys, time
ctypes.CDLL(None).shmget(HOST['ipc_key'], 1 << 20, 0o1000 | 0o600)  # IPC_CREAT, never removed
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        sleep = 'import time; time.sleep(600)'
        os.execv(sys.executable, [sys.executable, '-c', sleep, HOST['marker']])
    os._exit(0)
time.sleep(0.3)
print('parent exits')
""", check_orphans)


def check_network(r: SandboxResult, h: Host) -> None:
    seen = _seen(r)
    assert h.connections == 0 and all(not v.startswith("connected") for v in seen.values()), seen
    assert seen["tcp"] == "Network is unreachable" and seen["dns"] != "resolved"
    for path in h.sockets:
        assert seen[path] == "No such file or directory"
    assert seen["abstract"] == "Connection refused"


NETWORK = Attack("""
import socket
def attempt(family, address):
    s = socket.socket(family)
    s.settimeout(2)
    try:
        s.connect(address)
        return 'connected: ' + s.recv(10).decode()
    except OSError as e:
        return e.strerror or str(e)
seen = {'tcp': attempt(socket.AF_INET, ('127.0.0.1', HOST['port'])),
        'abstract': attempt(socket.AF_UNIX, HOST['abstract'])}
seen.update({p: attempt(socket.AF_UNIX, p) for p in HOST['sockets']})
try:
    socket.getaddrinfo('pypi.org', 443)
    seen['dns'] = 'resolved'
except OSError as e:
    seen['dns'] = str(e)
print(json.dumps(seen))
""", check_network)


def check_signals(r: SandboxResult, h: Host) -> None:
    assert r.returncode == 0 and r.stdout.startswith("alive"), r.stderr
    assert h.sleeper.poll() is None, "the sandbox killed a host process"


SIGNALS = Attack("""
import os, signal, time
for pid in (HOST['sleeper'], os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)  # every process this one may signal, but itself
    reached = 'some'
except OSError as e:
    reached = e.strerror  # 'No such process': nothing it may signal
time.sleep(0.1)
print('alive', reached)
""", check_signals)


def check_nested_namespaces(r: SandboxResult, h: Host) -> None:
    assert _seen(r) == {"user": 1, "user_in_child": 1, "mount": 1, "chroot": 1}  # EPERM


NESTED_NAMESPACES = Attack("""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def errno(ret):
    return 0 if ret == 0 else ctypes.get_errno()
seen = {'user': errno(libc.unshare(0x10000000)), 'mount': errno(libc.unshare(0x20000)),
        'chroot': errno(libc.chroot(b'/tmp'))}
pid = os.fork()
if pid == 0:
    os._exit(errno(libc.unshare(0x10000000)))
seen['user_in_child'] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(seen))
""", check_nested_namespaces)

ATTACKS = {"host_files": HOST_FILES, "writes": WRITES, "fill_scratch": FILL_SCRATCH,
           "orphans": ORPHANS, "network": NETWORK, "signals": SIGNALS,
           "nested_namespaces": NESTED_NAMESPACES}


def program(attack: Attack, h: Host) -> str:
    return f"import json\nHOST = json.loads({json.dumps(h.facts)!r})\n{attack.code}"


def limits(attack: Attack) -> dict:
    return {"wall_time_s": 10, "cpu_time_s": 5, **(attack.limits or {})}


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_does_not_escape(name, host):
    attack = ATTACKS[name]
    attack.check(run_sandboxed(program(attack, host), limits=SandboxLimits(**limits(attack))), host)


@pytest.mark.skipif(not AS_ROOT, reason="per-run uids (and so this count) exist only as root")
def test_fork_bomb_is_capped_and_leaves_no_process_behind():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    limits = SandboxLimits(max_processes=8, wall_time_s=2, cpu_time_s=2)
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


AS_NOBODY = """
import json, sys
from distill.data.sandbox import SandboxLimits, run_sandboxed
out = {}
for name, code, limits in json.load(sys.stdin):
    out[name] = run_sandboxed(code, limits=SandboxLimits(**limits)).model_dump()
print(json.dumps(out))
"""


def test_every_attack_fails_when_not_root_too(host):
    command = nobody_python()
    if command is None:
        pytest.skip("needs root (to become nobody), setpriv, and a system python3 of our ABI")
    batch = [(n, program(a, host), limits(a)) for n, a in ATTACKS.items() if not a.root_only]
    done = subprocess.run([*command[:-1], command[-1] + AS_NOBODY], input=json.dumps(batch),
                          capture_output=True, text=True, timeout=300, cwd="/", check=False)
    if "sandbox setup failed" in done.stderr:
        pytest.skip(f"no unprivileged user namespaces here: {done.stderr[-300:]}")
    results = json.loads(done.stdout)
    for name, attack in ATTACKS.items():
        if not attack.root_only:
            attack.check(SandboxResult.model_validate(results[name]), host)
