"""The sandbox's boot program: `python -I -S sandbox_boot.py SPEC_FD` (started by data/sandbox.py).

Stdlib only; it reads its spec (JSON, see `sandbox._boot_spec`) from the fd SPEC_FD, then:
1. boot unshares the mount, network, PID, IPC, UTS and cgroup namespaces (as root), or the same
   plus a user namespace that maps only the caller's own uid (not root).
2. boot forks init (PID 1 of the new PID namespace), which builds the jail and runs the program:
   - one size-capped tmpfs holds the whole jail: its root is read-only; the program's cwd
     (/box), /tmp and /dev/shm are writable and share the one cap, so scratch space is capped
     as a whole, in memory, never on the host's disk;
   - the host's system directories (/usr, /lib*, the interpreter's prefix) are bind-mounted
     read-only; /dev has only null, zero, full, random and urandom; /proc is private to the run;
     nothing else of the host exists inside (no /run, /var, /home, /etc, host /tmp, sockets);
   - pivot_root into the tmpfs and detach the host's tree, then chroot one level down: a
     chrooted process may not create user namespaces (kernel rule), so the program cannot
     nest one, which costs nothing at run time;
   - init drops to the run's uid (as root), sets no_new_privs and non-dumpable (the program
     cannot ptrace it or open its fds), then forks and execs the program with rlimits and a
     minimal environment. When the program exits, init exits, and the kernel kills every
     process left in the namespace.
3. boot waits for init; SIGUSR1 (from the host, on a limit) makes boot SIGKILL init.
Setup errors are reported as {"error": ...} on the status fd; init reports the program's wait
status and CPU time there. The status fd is never inherited by the program.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import signal
import sys

NEWNS, NEWCGROUP, NEWUTS, NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
DETACH = 2
KEEP = {"nosuid": NOSUID, "nodev": NODEV, "noexec": NOEXEC, "noatime": 1024,
        "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
BASE, JAIL = "/tmp", "j"  # the tmpfs is mounted over the host's /tmp (in our namespace only)
WRITABLE = ("box", "tmp", "dev/shm")
DEVICES = ("null", "zero", "full", "random", "urandom")

libc = ctypes.CDLL(None, use_errno=True)


def call(name: str, *args) -> None:
    """libc `name(*args)`, raising OSError (naming the call) when it fails."""
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    call("mount", enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def enter_namespaces(spec: dict) -> None:
    """New mount/net/PID/IPC/UTS/cgroup namespaces; not root: inside a user namespace too."""
    flags = NEWNS | NEWNET | NEWPID | NEWIPC | NEWUTS | NEWCGROUP
    if spec["root"]:
        call("unshare", flags)
    else:
        uid, gid = os.getuid(), os.getgid()
        call("unshare", NEWUSER | flags)
        maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
        for name, text in maps:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    mount(None, "/", None, REC | PRIVATE)
    call("sethostname", b"sandbox", 7)


def _mounts_under(prefix: str) -> list[tuple[str, int]]:
    """(mount point, flags to keep) of this namespace's mounts strictly under `prefix`."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda g: chr(int(g.group(1), 8)), fields[4])
            if point.startswith(prefix + "/"):
                found.append((point, sum(KEEP.get(o, 0) for o in fields[5].split(","))))
    return found


def _place(path: str, jail: str) -> None:
    """Make host `path` appear read-only at the same path in the jail (a symlink stays one)."""
    target = jail + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
    elif os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
        mount(path, target, None, BIND | REC)
    elif os.path.exists(path):
        open(target, "w").close()
        mount(path, target, None, BIND)


def build_jail(spec: dict) -> None:
    """Build the jail on a fresh size-capped tmpfs at BASE (see the module docstring)."""
    mount("tmpfs", BASE, "tmpfs", NOSUID | NODEV, spec["tmpfs"])
    jail = f"{BASE}/{JAIL}"
    for d in ("", "/box", "/tmp", "/dev/shm", "/proc", "/.distill"):
        os.makedirs(jail + d, exist_ok=True)
    for path in spec["ro_paths"]:
        _place(path, jail)
    for dev in DEVICES:
        _place(f"/dev/{dev}", jail)
    for point, keep in _mounts_under(jail):  # bind mounts start writable: make each read-only
        mount(None, point, None, REMOUNT | BIND | RDONLY | keep)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{jail}/dev/{name}")
    for name, text in spec["files"].items():
        with open(f"{jail}/{name}", "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
    os.chmod(f"{jail}/tmp", 0o1777)
    os.chmod(f"{jail}/dev/shm", 0o1777)
    if spec["root"]:
        for p in [f"{jail}/box", *(f"{jail}/{n}" for n in spec["files"] if n.startswith("box/"))]:
            os.chown(p, spec["uid"], spec["gid"])
    try:
        mount("proc", f"{jail}/proc", "proc", NOSUID | NODEV | NOEXEC)
    except OSError:
        pass  # a private /proc is a convenience; without one the jail simply has no /proc
    for d in WRITABLE:  # its own mount, so it stays writable when the jail's root turns read-only
        mount(f"{jail}/{d}", f"{jail}/{d}", None, BIND)
    mount(None, BASE, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV)


def enter_jail(base: str) -> None:
    """pivot_root into `base`, detach the host's tree, then chroot into the jail below it."""
    os.chdir(base)
    if libc.syscall(PIVOT_ROOT[os.uname().machine], b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    call("umount2", b".", DETACH)
    os.chroot(JAIL)
    os.chdir("/box")


def run_program(spec: dict) -> None:
    """In the program's process: default signals, rlimits, then exec (never returns)."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # ignored ones survive exec
        signal.signal(sig, signal.SIG_DFL)
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(value))
    if spec["result_fd"] is not None:
        os.set_inheritable(spec["result_fd"], True)
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


def init(spec: dict, report) -> None:
    """PID 1: build and enter the jail, drop privileges, run the program, report how it ended."""
    build_jail(spec)
    enter_jail(BASE)
    if spec["root"]:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid binaries stay inert
    call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)  # the program cannot ptrace init or read its fds
    call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with boot
    program = os.fork()
    if program == 0:
        try:
            run_program(spec)
        except BaseException as e:  # noqa: BLE001 - any failure is a setup error, reported
            report(error=f"exec {spec['argv'][0]}: {e}")
        os._exit(125)
    if spec["result_fd"] is not None:
        os.close(spec["result_fd"])  # only the program holds the result pipe now
    while True:
        pid, wstatus, usage = os.wait4(-1, 0)
        if pid == program:
            report(status=wstatus, cpu_s=usage.ru_utime + usage.ru_stime)
            os._exit(0)  # the kernel now kills whatever is left in the namespace


def main(spec_fd: int) -> None:
    with os.fdopen(spec_fd, "rb") as f:
        spec = json.loads(f.read())
    status = spec["status_fd"]
    os.set_inheritable(status, False)  # the program never gets it: exec closes it

    def report(**kw) -> None:
        os.write(status, (json.dumps(kw) + "\n").encode())

    child = 0

    def stop(signum, frame) -> None:
        if child:
            os.kill(child, signal.SIGKILL)

    signal.signal(signal.SIGUSR1, stop)
    try:
        enter_namespaces(spec)
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            init(spec, report)
    except BaseException as e:  # noqa: BLE001 - any failure is a setup error, reported
        report(error=f"{type(e).__name__}: {e}")
        os._exit(125)
    while os.waitpid(child, 0)[0] != child:
        pass
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]))
