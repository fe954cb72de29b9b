"""How the sandbox's test harness talks to the program under test: values as tagged JSON.

    data = encode(value, keep)          # the program's side: objects not plain data -> handles
    value = decode(data, program.remote)  # the checker's side: exact builtin types only
    program.request("call", handle, *args)  # a call in the program, answered as a value

Decoding builds only None, bool, int, float, str, bytes, bytearray, complex, list, tuple, dict,
set and frozenset (and `Remote` handles, `_Module` names), so nothing the program sends can
carry its own `__eq__` into the checker. Stdlib only: it runs inside the jail (see
data/sandbox_harness.py).
"""
from __future__ import annotations

import builtins
import json
import operator
import os
import sys
import time
import types

LINE_LIMIT = 16 * 1024 * 1024  # bytes of one reply from the program
MUTABLE = (list, dict, set, bytearray)


def encode(value, keep):
    """`value` as JSON-able data; objects that are not plain data become `keep(obj)` handles."""
    if value is None or type(value) in (bool, str, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = int(value)
        return value if value.bit_length() < 10_000 else {"x": hex(value)}
    if isinstance(value, str):
        return str.__str__(value)
    for kind, tag in ((list, None), (tuple, "t"), (set, "s"), (frozenset, "f")):
        if isinstance(value, kind):
            items = [encode(v, keep) for v in value]
            return items if tag is None else {tag: items}
    if isinstance(value, dict):
        return {"d": [[encode(k, keep), encode(v, keep)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        return {"b" if isinstance(value, bytes) else "a": bytes(value).hex()}
    if isinstance(value, types.ModuleType):
        return {"m": value.__name__}
    if isinstance(value, complex):
        return {"c": [value.real, value.imag]}
    if hasattr(type(value), "__index__"):  # numpy integers and the like
        return encode(operator.index(value), keep)
    if isinstance(value, float):  # a float subclass (numpy.float64)
        return float(value)
    return {"h": keep(value)}


def decode(data, handle):
    """The value `encode` described, built from exact builtin types; handles via `handle(n)`."""
    if isinstance(data, list):
        return [decode(v, handle) for v in data]
    if not isinstance(data, dict):
        return data  # None, bool, int, float or str, as json built them
    (tag, v), = data.items()
    if tag == "t":
        return tuple(decode(x, handle) for x in v)
    if tag in ("s", "f"):
        return (set if tag == "s" else frozenset)(decode(x, handle) for x in v)
    if tag == "d":
        return {decode(k, handle): decode(x, handle) for k, x in v}
    simple = {"b": bytes.fromhex, "a": bytearray.fromhex, "x": lambda s: int(s, 16),
              "c": lambda p: complex(float(p[0]), float(p[1])), "m": _Module, "h": handle}
    return simple[tag](v)


class _Module:
    """A module the program imported, imported here by name when the tests first use it."""

    def __init__(self, name: str):
        self._name = str(name)

    def __getattr__(self, attr: str):
        __import__(self._name)
        return getattr(sys.modules[self._name], attr)


class ProgramGone(Exception):
    """The program stopped answering (it exited, was killed, or broke its pipe)."""


class Program:
    """The worker seen from the checker: requests over one pipe, replies over another."""

    def __init__(self, pid: int, replies: int, requests: int):
        self.pid, self.status = pid, None
        self._in, self._out = os.fdopen(replies, "rb"), os.fdopen(requests, "wb")

    def read(self) -> dict:
        line = self._in.readline(LINE_LIMIT + 1)
        if not line.endswith(b"\n"):
            raise ProgramGone("the program stopped answering" if len(line) <= LINE_LIMIT
                              else "the program's reply is too long")
        return json.loads(line)

    def request(self, op: str, handle: int, *args, **kwargs):
        """Run `op` on the program's object `handle`; its value, or its exception re-raised."""
        req = {"op": op, "h": handle, "args": [encode(a, _handle_of) for a in args],
               "kwargs": encode(kwargs, _handle_of)}
        try:
            self._out.write(json.dumps(req).encode() + b"\n")
            self._out.flush()
        except OSError:
            raise ProgramGone("the program stopped answering") from None
        reply = self.read()
        if "raise" in reply:
            kind = getattr(builtins, str(reply["raise"]), None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = RuntimeError
            raise kind(f"{reply['raise']}: {reply['msg']}"[:500])
        for arg, new in zip(args, reply.get("args") or []):  # in-place changes come back
            if new is not None and type(arg) in MUTABLE:
                _replace(arg, decode(new, self.remote))
        return decode(reply["ok"], self.remote)

    def remote(self, handle: int) -> Remote:
        return Remote(self, int(handle))

    def finish(self, wait_s: float = 0.2) -> int | None:
        """Close the requests pipe, give the worker `wait_s` to exit, then kill it."""
        self._out.close()
        deadline = time.monotonic() + wait_s
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() > deadline:
                os.kill(self.pid, 9)
                self.status = os.waitpid(self.pid, 0)[1]
            else:
                time.sleep(0.002)
        return self.status


def _replace(old, new) -> None:
    if type(new) is not type(old):
        return
    if isinstance(old, (list, bytearray)):
        old[:] = new
    else:
        old.clear()
        old.update(new)


def _handle_of(value) -> int:
    if isinstance(value, Remote):
        return value._handle
    raise TypeError(f"a {type(value).__name__} cannot be passed to the program")


class Remote:
    """An object that lives in the program: calls, attributes, len, items and iteration go
    there; comparisons and truth never do (they would show the program the expected value)."""

    __slots__ = ("_handle", "_program")

    def __init__(self, program: Program, handle: int):
        self._program, self._handle = program, handle

    def __call__(self, *args, **kwargs):
        return self._program.request("call", self._handle, *args, **kwargs)

    def __getattr__(self, name: str):
        return self._program.request("getattr", self._handle, name)

    def __len__(self) -> int:
        return self._program.request("len", self._handle)

    def __getitem__(self, key):
        return self._program.request("getitem", self._handle, key)

    def __iter__(self):
        return iter(self._program.request("list", self._handle))

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<program object #{self._handle}>"
