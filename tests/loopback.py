"""A real HTTP server on 127.0.0.1 in a background thread: `class S(LoopbackServer)`.

    class ChatServer(LoopbackServer):
        def __init__(self):
            super().__init__(_Handler, name="chat-test-server")   # handlers reach it as server.owner
    with ChatServer() as server: ... server.port ...

`start()`/`stop()` or a `with` block; `stopping` is set on stop (handlers that stall watch it).
Handlers subclass LoopbackHandler (HTTP/1.1, quiet, `reply(status, bytes, ctype, headers)`).
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class OwnedHTTPServer(ThreadingHTTPServer):
    """The server; its handlers reach the LoopbackServer that made it as `self.server.owner`."""

    daemon_threads = True
    owner: Any


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as real servers), no access log, and `reply`."""

    protocol_version = "HTTP/1.1"
    server: OwnedHTTPServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def reply(self, status: int, data: bytes, ctype: str = "application/json",
              headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """The listening socket (an OS-chosen port), its serving thread and the stop event."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, name: str = "loopback-server"):
        self.stopping = threading.Event()
        self._httpd = OwnedHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name=name, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
