"""The host side of the sandbox tests: targets for the attacks (`Host`), and ways to watch
(`sandbox_pids`) and to run this repo's code as `nobody` (`nobody_python`)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import uuid
from pathlib import Path

from distill.data.sandbox import UID_BASE

REPO = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0
# The run uids of this process: UID_BASE + (pid % 2**22) * 64 + slot, slot < 64.
OUR_UIDS = range(UID_BASE + (os.getpid() % 2**22) * 64, UID_BASE + (os.getpid() % 2**22) * 64 + 64)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


class Host:
    """What the attacks aim at: secrets, world-writable sockets, a server, a process to kill."""

    def __init__(self, tmp: Path):
        tag = uuid.uuid4().hex
        self.secret, self.marker = f"s3cr3t-{uuid.uuid4().hex}", f"orphan-{tag}"
        self.ipc_key = 0x5E000000 | int(tag[:6], 16)
        dirs = [Path("/tmp"), REPO, Path("/dev/shm"), *([Path("/run")] * AS_ROOT)]
        self.files = [d / f".distill-secret-{tag}" for d in dirs if os.access(d, os.W_OK)]
        self.sockets = [f"{d}/distill-sock-{tag}" for d in ("/tmp", "/run")
                        if os.access(d, os.W_OK)]
        self.abstract = f"\0distill-sock-{tag}"
        self.connections, self.servers = 0, []
        for path in self.files:
            path.write_text(self.secret)
            path.chmod(0o644)
        for address in [*self.sockets, self.abstract]:
            server = socket.socket(socket.AF_UNIX)
            server.bind(address)
            if not address.startswith("\0"):
                os.chmod(address, 0o777)  # any local process may connect, outside the sandbox
            self.servers.append(server)
        self.servers.append(socket.create_server(("127.0.0.1", 0)))
        self.port = self.servers[-1].getsockname()[1]
        for server in self.servers:
            server.listen()
            threading.Thread(target=self._serve, args=(server,), daemon=True).start()
        as_nobody = NOBODY if AS_ROOT and shutil.which("setpriv") else []
        self.sleeper = subprocess.Popen([*as_nobody, "sleep", "600"])
        self.facts = {"secret_files": [str(p) for p in self.files], "sockets": self.sockets,
                      "abstract": self.abstract, "port": self.port, "marker": self.marker,
                      "sleeper": self.sleeper.pid, "ipc_key": self.ipc_key,
                      "host_paths": [str(REPO), str(tmp), "/root", "/home", "/run", "/var"]}

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.connections += 1
            conn.sendall(b"HOST\n")
            conn.close()

    def close(self) -> None:
        self.sleeper.kill()
        self.sleeper.wait()
        for server in self.servers:
            server.close()
        for path in [*self.files, *map(Path, self.sockets)]:
            path.unlink(missing_ok=True)


def sandbox_pids() -> list[int]:
    """Processes (anywhere on the host) running as one of this test process's sandbox uids."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text() if proc.name.isdigit() else ""
        except OSError:
            continue
        uid = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), 0)
        if int(uid) in OUR_UIDS:
            pids.append(int(proc.name))
    return pids


def nobody_python() -> list[str] | None:
    """How to run this repo's code as `nobody`: the system python3 plus our site-packages."""
    python, setpriv = shutil.which("python3", path="/usr/bin:/bin"), shutil.which("setpriv")
    site = sysconfig.get_paths()["purelib"]
    if not (AS_ROOT and python and setpriv):
        return None
    same_abi = f"{sys.version_info.major}.{sys.version_info.minor}" in os.path.realpath(python)
    readable = all(p.stat().st_mode & 0o005 for p in [Path(site), *Path(site).parents])
    if not (same_abi and readable):
        return None
    secret = os.environ.get("DISTILL_TEST_SECRET", "")  # the host's, so a leak would show
    return [*NOBODY, "env", "-i", "PATH=/usr/bin:/bin", f"DISTILL_TEST_SECRET={secret}", python,
            "-c",
        # addsitedir runs the site's .pth files, which map the `distill` namespace
        f"import site; site.addsitedir({site!r})\n"]
