"""The full demo's embedded upstreams: a trading-style API and an AI-style API on loopback.

Both follow the scenario's phases. The trading API serves quotes and accepts orders, keyed by
their ``Idempotency-Key`` so a resent order is answered from the key's first result instead
of being placed twice. The AI API answers slowly, rate-limits with ``429`` and
``Retry-After`` during the partial outage, and fails or hangs during the full outage.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from .phases import FULL_OUTAGE, PARTIAL_OUTAGE, Timeline

__all__ = ["AiApi", "Api", "Reply", "Request", "TradingApi", "Upstream"]

QUOTES = {
    "AAPL": (227.41, 227.48),
    "MSFT": (415.10, 415.22),
    "NVDA": (131.02, 131.05),
    "AMZN": (186.33, 186.40),
    "TSLA": (251.87, 252.01),
}
UNAVAILABLE = {"error": "service unavailable"}


@dataclass(frozen=True, slots=True)
class Request:
    """What an API sees of one request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """How to answer: ``delay`` seconds first; ``drop`` closes without answering."""

    status: int = 200
    payload: dict[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False


class Api:
    """A scripted API: :meth:`reply` maps a request and the current phase to a :class:`Reply`.

    Replies are drawn from a seeded random source, so a run fails alike every time.
    """

    name = "api"

    def __init__(self, timeline: Timeline, *, seed: int) -> None:
        self.timeline = timeline
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0

    def reply(self, request: Request) -> Reply:
        """The answer to ``request`` in the current phase."""
        with self.lock:
            self.requests += 1
            return self.route(request, self.timeline.phase())

    def route(self, request: Request, phase: str) -> Reply:
        """Overridden per API; called with the lock held."""
        raise NotImplementedError

    def health(self, phase: str) -> Reply:
        """``GET /health``: 503 during the full outage."""
        return Reply(503, UNAVAILABLE) if phase == FULL_OUTAGE else Reply(200, {"status": "ok"})


class TradingApi(Api):
    """Quotes (``GET /v2/quotes/{symbol}``) and orders (``POST /v2/orders``).

    Args:
        slow_ack: how long an order accepted during the partial outage takes to be
            acknowledged (longer than the client's call timeout: the client retries it).
    """

    name = "trading"

    def __init__(self, timeline: Timeline, *, slow_ack: float) -> None:
        super().__init__(timeline, seed=7)
        self.slow_ack = slow_ack
        self.orders: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        """Resent orders answered from their key's first result (not placed again)."""

    def route(self, request: Request, phase: str) -> Reply:
        if request.path == "/health":
            return self.health(phase)
        if request.method == "GET" and request.path.startswith("/v2/quotes/"):
            return self._quote(request.path.rsplit("/", 1)[-1], phase)
        if request.method == "POST" and request.path == "/v2/orders":
            return self._order(request, phase)
        return Reply(404, {"error": "not found"})

    def _quote(self, symbol: str, phase: str) -> Reply:
        if symbol not in QUOTES:
            return Reply(404, {"error": "unknown symbol", "symbol": symbol})
        draw = self.rng.random()
        if phase == PARTIAL_OUTAGE and draw < 0.35:
            return Reply(503, UNAVAILABLE)
        if phase == FULL_OUTAGE:
            return Reply(drop=True) if draw < 0.2 else Reply(503, UNAVAILABLE)
        bid, ask = QUOTES[symbol]
        return Reply(200, {"symbol": symbol, "bid": bid, "ask": ask, "currency": "USD"})

    def _order(self, request: Request, phase: str) -> Reply:
        key = request.headers.get("idempotency-key")
        if not key:
            return Reply(400, {"error": "an Idempotency-Key header is required"})
        if key in self.orders:
            self.duplicates += 1
            return Reply(200, self.orders[key], (("Idempotent-Replayed", "true"),))
        draw = self.rng.random()
        if (phase == FULL_OUTAGE and draw >= 0.2) or (phase == PARTIAL_OUTAGE and draw < 0.2):
            return Reply(503, UNAVAILABLE)
        order = _new_order(key, request.body, len(self.orders) + 1)
        self.orders[key] = order
        if phase == FULL_OUTAGE:
            # Placed, then the connection drops: the client cannot know, and dead-letters it.
            return Reply(drop=True)
        if phase == PARTIAL_OUTAGE and draw < 0.4:
            # Placed, but the acknowledgement is late: the client times out and resends it.
            return Reply(201, order, delay=self.slow_ack)
        return Reply(201, order)


def _new_order(key: str, body: bytes, number: int) -> dict[str, Any]:
    try:
        fields = json.loads(body or b"{}")
    except ValueError:
        fields = {}
    return {
        "id": f"ord-{number:06d}",
        "client_order_id": key,
        "symbol": str(fields.get("symbol", "AAPL")),
        "qty": fields.get("qty", 1),
        "side": str(fields.get("side", "buy")),
        "status": "accepted",
    }


class AiApi(Api):
    """``POST /v1/chat/completions``: slow answers, 429 + ``Retry-After``, outages.

    Args:
        retry_after: the ``Retry-After`` value (seconds) of its 429 answers.
        hang: how long a hanging request waits before failing (past the client's timeout).
    """

    name = "ai"

    def __init__(self, timeline: Timeline, *, retry_after: str, hang: float) -> None:
        super().__init__(timeline, seed=11)
        self.retry_after = retry_after
        self.hang = hang
        self.rate_limited = 0
        """429 answers sent."""

    def route(self, request: Request, phase: str) -> Reply:
        if request.path == "/health":
            return self.health(phase)
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return Reply(404, {"error": "not found"})
        draw, latency = self.rng.random(), self.rng.uniform(0.05, 0.3)
        if phase == PARTIAL_OUTAGE and draw < 0.4:
            self.rate_limited += 1
            headers = (("Retry-After", self.retry_after),)
            return Reply(429, {"error": "rate limit exceeded"}, headers)
        if phase == FULL_OUTAGE:
            return Reply(503, UNAVAILABLE, delay=self.hang if draw < 0.15 else 0.0)
        answer = {"role": "assistant", "content": "Markets closed mixed; volatility was low."}
        payload = {"id": f"cmpl-{self.requests}", "choices": [{"index": 0, "message": answer}]}
        return Reply(200, payload, delay=latency * (2 if phase == PARTIAL_OUTAGE else 1))


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: object,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """Answer ``handler``'s request with ``payload`` as JSON (keep-alive friendly)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    for name, value in (("Content-Type", "application/json"), *headers):
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse their connections
    disable_nagle_algorithm = True
    server: Upstream

    def handle(self) -> None:
        # A client that gave up on a slow reply has closed the connection: expected here.
        with contextlib.suppress(ConnectionError):
            super().handle()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.api.reply(Request(self.command, self.path, headers, body))
        if reply.delay and self.server.stopping.wait(reply.delay):
            reply = Reply(drop=True)  # shutting down: drop the hanging request
        if reply.drop:
            self.close_connection = True
            return
        send_json(self, reply.status, reply.payload, reply.headers)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the demo reports what the clients see instead."""


class Upstream(ThreadingHTTPServer):
    """Serves ``api`` on a free loopback port while the ``with`` lasts."""

    daemon_threads = True

    def __init__(self, api: Api) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        self.stopping = threading.Event()
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name=f"upstream-{api.name}", daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join()
