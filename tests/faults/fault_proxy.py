"""A fault-injecting HTTP proxy of ours on 127.0.0.1, in front of an OpenAI-compatible server.

    with ChatServer(seeded=True) as server, FaultProxy(server.base_url, rate=0.2) as proxy:
        HttpEndpointConfig(base_url=proxy.base_url, timeout_s=1.0)
        ...
        proxy.injected        # Counter: faults sent, by kind

Each attempt of a request is forwarded to the upstream server unless the proxy answers with a
fault instead, with probability `rate`; which attempts fail, and how, is drawn from a generator
seeded by (`seed`, the request body, the attempt number), so a run is repeatable whatever the
order requests arrive in. The faults (KINDS):
- "429": Too Many Requests with `Retry-After: 1`.
- "500": Internal Server Error.
- "cut": the upstream's answer, with its full Content-Length, cut after half the body.
- "stall": nothing for `stall_s` (past the client's timeout), then the connection closes.
- "echo": 400 whose error message repeats the request's Authorization header.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
from collections import Counter
from urllib.parse import urlsplit

from tests.loopback import LoopbackHandler, LoopbackServer

KINDS = ("429", "500", "cut", "stall", "echo")


class _Handler(LoopbackHandler):
    def do_POST(self) -> None:
        proxy = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = proxy.draw(raw)
        try:
            if kind in (None, "cut"):
                self._relay(*proxy.forward(self.path, raw, self.headers), cut=kind == "cut")
            else:
                self._fault(kind, proxy)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (its timeout)

    def _fault(self, kind: str, proxy: FaultProxy) -> None:
        if kind == "stall":
            proxy.stopping.wait(proxy.stall_s)
            self.close_connection = True
            return
        if kind == "429":
            return self._send(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "1"})
        if kind == "500":
            return self._send(500, {"error": {"message": "Internal server error"}})
        if kind == "echo":
            auth = self.headers.get("Authorization")
            return self._send(400, {"error": {"message": f"Bad request with Authorization: {auth}"}})

    def _relay(self, status: int, ctype: str, body: bytes, cut: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if cut else body)
        if cut:
            self.wfile.flush()
            self.close_connection = True

    def _send(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self.reply(status, json.dumps(obj).encode(), headers=headers)


class FaultProxy(LoopbackServer):
    """The proxy; `start()`/`stop()` or use it as a context manager."""

    def __init__(self, upstream: str, *, rate: float = 0.2, seed: int = 0, stall_s: float = 3.0,
                 kinds: tuple[str, ...] = KINDS):
        self.upstream = urlsplit(upstream)
        self.rate, self.seed, self.stall_s, self.kinds = rate, seed, stall_s, kinds
        self.injected: Counter = Counter()
        self.forwarded = 0
        self._attempts: Counter = Counter()
        self._lock = threading.Lock()
        super().__init__(_Handler, name="fault-proxy")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.upstream.path}"

    def draw(self, body: bytes) -> str | None:
        """The fault for this attempt of this request, or None to forward it."""
        digest = hashlib.blake2b(body, digest_size=8).hexdigest()
        with self._lock:
            self._attempts[digest] += 1
            rng = random.Random(f"{self.seed}:{digest}:{self._attempts[digest]}")
            kind = rng.choice(self.kinds) if rng.random() < self.rate else None
            if kind is None:
                self.forwarded += 1
            else:
                self.injected[kind] += 1
            return kind

    def forward(self, path: str, body: bytes, headers) -> tuple[int, str, bytes]:
        """(status, content type, body) of the upstream's answer to this request."""
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")}
            conn.request("POST", path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", "application/json"), resp.read()
        finally:
            conn.close()

