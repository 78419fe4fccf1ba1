"""The HTTP upstream that documentation snippets call as ``http://127.0.0.1:8080``.

Snippets are written against the fixed address ``127.0.0.1:8080``; the snippet runner starts
this server on a free loopback port and rewrites the address to it. It answers:

- every GET (and HEAD) with 200 and ``{"symbol": "AAPL", "price": 187.5, "path": "<path>"}``;
- every POST with 201 and the request's JSON body echoed (a body that is not JSON comes back
  as ``{"body": "<text>"}``); PUT, PATCH and DELETE the same way with 200;
- any method on a path containing ``/fail/<status>`` (e.g. ``/fail/503``) with that status;
- any method on a path containing ``/slow/`` after a 2 second wait, then as above.

Every request is recorded (method and path) so a test can check what the snippets sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["DOCS_ADDRESS", "SLOW_SECONDS", "DocsUpstream"]

DOCS_ADDRESS = "127.0.0.1:8080"  # what snippets write; rewritten to the real port
SLOW_SECONDS = 2.0
_FAIL = re.compile(r"/fail/(\d{3})(?:/|$|\?)")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as real upstreams do (pooled clients reuse them)
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._answer(200, {"symbol": "AAPL", "price": 187.5, "path": self.path})

    def do_HEAD(self) -> None:
        self._answer(200, None)

    def do_POST(self) -> None:
        self._answer(201, self._echo())

    def do_PUT(self) -> None:
        self._answer(200, self._echo())

    def do_PATCH(self) -> None:
        self._answer(200, self._echo())

    def do_DELETE(self) -> None:
        self._answer(200, self._echo())

    def _echo(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {"body": raw.decode("utf-8", "replace")}

    def _answer(self, status: int, payload: Any) -> None:
        self.server.record(self.command, self.path)
        failing = _FAIL.search(self.path)
        if failing:
            status = int(failing.group(1))
            payload = {"error": f"HTTP {status}", "path": self.path}
        if "/slow/" in self.path:
            time.sleep(SLOW_SECONDS)
        body = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # a client that timed out on /slow/ has hung up: nothing left to answer
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


class DocsUpstream:
    """The snippets' upstream on a free loopback port; a context manager that serves in a thread."""

    def __init__(self) -> None:
        self._server = _Server()
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request served so far."""
        return list(self._server.requests)

    def rewrite(self, code: str) -> str:
        """``code`` with the snippets' fixed address replaced by this server's."""
        return code.replace(DOCS_ADDRESS, self.address)

    def __enter__(self) -> DocsUpstream:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
