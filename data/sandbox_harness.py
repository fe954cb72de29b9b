"""The test harness inside the sandbox: `python -I -B sandbox_harness.py RESULT_FD`, cwd /box.

Reads `{"setup": str, "tests": [str, ...]}` (JSON) on stdin, runs the program ./main.py, and
writes JSON lines to RESULT_FD: `{"program": "ready" | "exited" | "error", "detail": ...}`, one
`{"test": i, "ok": bool, "error": ...}` per test, then `{"done": n_passed, "status": <the
program's wait status>}`. Stdlib only; data/sandbox.py copies it (and sandbox_wire.py) into the
jail and runs it when `run_sandboxed` is given tests.

Why a program cannot forge a pass: it never shares a process with the tests.
- The checker (this process) makes itself non-dumpable, so a same-uid process can neither
  ptrace it nor open its fds or memory through /proc, then forks the worker *before reading the
  tests*. The worker closes every fd but its request/reply pipes (it never holds the result
  pipe, nor stdin with the tests), runs the program as `__main__`, then only answers requests
  (call this, get that attribute, list / len / index that object).
- The checker runs the setup and tests in its own interpreter, where the program's top-level
  names are proxies (`sandbox_wire.Remote`); builtins and the tests' own names win over the
  program's. Replies decode into exact builtin types only, so `==` and `assert` run on trusted
  objects, and the program sees the arguments of its calls, never the expected values.
- So a program that exits early, patches its own interpreter (exec, compile, builtins, the
  worker loop), reads every file it can, writes to every fd, or kills the checker can make the
  tests fail, never pass.
"""
from __future__ import annotations

import builtins
import contextlib
import ctypes
import json
import os
import sys
import types

if __package__:  # imported as distill.data.sandbox_harness (tests, lint)
    from . import sandbox_wire as wire
else:  # run as a script in the jail, beside sandbox_wire.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sandbox_wire as wire

PR_SET_DUMPABLE = 4
MAX_NAMES = 5000


def serve(requests: int, replies: int) -> None:
    """The worker: run ./main.py as __main__, report its names, answer requests (never returns)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    lo, hi = sorted((requests, replies))
    for first, last in ((3, lo), (lo + 1, hi), (hi + 1, 1 << 20)):
        os.closerange(first, last)  # drops the result pipe, and null
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # the program sees the same sys.path as a plain run
    out = os.fdopen(replies, "wb")
    refs: list = []

    def send(message: dict) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    def keep(value) -> int:
        refs.append(value)
        return len(refs) - 1

    module = types.ModuleType("__main__")
    module.__file__, sys.argv, sys.modules["__main__"] = "/box/main.py", ["main.py"], module
    try:
        with open("main.py", encoding="utf-8") as f:
            exec(compile(f.read(), "main.py", "exec"), module.__dict__)  # noqa: S102 - the point
    except SystemExit as e:
        _exit(send, {"program": "exited", "detail": f"the program exited ({e.code!r}) "
                     "before the tests ran"})
    except BaseException as e:  # noqa: BLE001 - whatever the program raised, reported
        import traceback  # only now: the harness starts faster without it
        traceback.print_exc()
        _exit(send, {"program": "error", "detail": f"{type(e).__name__}: {e}"[:500]})
    names = {k: v for k, v in list(vars(module).items())[:MAX_NAMES] if not k.startswith("__")}
    plain = (str, int, float, bool, bytes, type(None), types.ModuleType)
    send({"program": "ready", "names": {k: wire.encode(v, keep) if isinstance(v, plain)
                                        else {"h": keep(v)} for k, v in names.items()}})
    for line in os.fdopen(requests, "rb"):
        send(_answer(json.loads(line), refs, keep))
    _exit(send, None)


def _answer(req: dict, refs: list, keep) -> dict:
    """Do one request on the program's objects; the value (and mutated arguments) or the error."""
    try:
        target, op = refs[req["h"]], req["op"]
        args = wire.decode(req["args"], refs.__getitem__)
        if op == "call":
            value = target(*args, **wire.decode(req["kwargs"], refs.__getitem__))
        else:
            value = {"getattr": lambda: getattr(target, args[0]), "len": lambda: len(target),
                     "getitem": lambda: target[args[0]], "list": lambda: list(target)}[op]()
        changed = [wire.encode(a, keep) if type(a) in wire.MUTABLE else None for a in args]
        return {"ok": wire.encode(value, keep), "args": changed if op == "call" else None}
    except BaseException as e:  # noqa: BLE001 - whatever the program raised, reported
        return {"raise": type(e).__name__, "msg": str(e)[:300]}


def _exit(send, message: dict | None) -> None:
    if message is not None:
        send(message)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the program may have closed or replaced them
            stream.flush()
    os._exit(0)


def check(program: wire.Program, setup: str, tests: list[str], emit) -> int:
    """Run `setup` then each test against `program`; emit one report per test; n passed."""
    first = program.read()
    if first.get("program") in ("exited", "error"):
        emit({"program": first["program"], "detail": str(first.get("detail"))[:500]})
        return 0
    if first.get("program") != "ready":
        emit({"program": "gone", "detail": "the program sent no report before the tests ran"})
        return 0
    env: dict = {}
    for name, data in dict(first["names"]).items():  # never dunders (__builtins__) or builtins
        if not (str(name).startswith("__") or hasattr(builtins, str(name))):
            env[str(name)] = wire.decode(data, program.remote)
    env.update(__name__="__main__", __builtins__=builtins,
               __distill_call=lambda *a: call_test(env, *a))
    emit({"program": "ready"})
    try:
        exec(compile(setup, "<test setup>", "exec"), env)  # noqa: S102 - the tests' own code
    except BaseException as e:  # noqa: BLE001 - a failed test, whatever it raised
        for i in range(len(tests)):
            emit({"test": i, "ok": False, "error": f"test setup failed: {type(e).__name__}: {e}"})
        return 0
    passed = 0
    for i, src in enumerate(tests):
        try:
            exec(compile(src, f"<test {i}>", "exec"), env)  # noqa: S102 - the tests' own code
            passed += 1
            emit({"test": i, "ok": True})
        except BaseException as e:  # noqa: BLE001 - a failed test, whatever it raised
            said = str(e) or src.strip()
            emit({"test": i, "ok": False, "error": f"test {i}: {type(e).__name__}: {said}"[:500]})
    return passed


def call_test(env: dict, name: str, args_json: str, expected_json: str) -> None:
    """A call-based test (APPS/TACO `fn_name`): `name(*args)` (or `Solution().name`) == expected."""
    args, expected = json.loads(args_json), json.loads(expected_json)
    fn = env.get(name) or getattr(env["Solution"](), name)
    got = fn(*args)
    try:
        got = json.loads(json.dumps(got))  # tuples compare as the JSON lists they are stored as
    except (TypeError, ValueError):
        pass
    wrapped = isinstance(expected, list) and len(expected) == 1 and got == expected[0]
    assert got == expected or wrapped, f"{name}{tuple(args)} gave {got!r}, not {expected!r}"


def main(result_fd: int) -> None:
    if ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE, 0) failed")
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        serve(requests_r, replies_w)
    os.close(requests_r)
    os.close(replies_w)
    spec = json.loads(sys.stdin.buffer.read())
    results = os.fdopen(result_fd, "w", buffering=1)

    def emit(report: dict) -> None:
        results.write(json.dumps(report) + "\n")

    program = wire.Program(pid, replies_r, requests_w)
    try:
        passed = check(program, spec["setup"], spec["tests"], emit)
    except Exception as e:  # noqa: BLE001 - the program stopped answering, or answered nonsense
        emit({"program": "gone", "detail": f"{type(e).__name__}: {e}"[:500]})
        passed = 0
    emit({"done": passed, "status": program.finish()})


if __name__ == "__main__":
    main(int(sys.argv[1]))
