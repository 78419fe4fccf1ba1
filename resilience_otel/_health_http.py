"""Health endpoints: one router, served as an ASGI app (no framework) or by a threaded
HTTP server from the standard library.

Routes: ``/health`` (overall; 200 healthy or degraded, 503 unhealthy), ``/health/{service}``,
``/breakers``, ``/metrics`` (Prometheus), ``/livez`` (the process answers) and ``/readyz``
(200 unless the overall status is unhealthy).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .health import HealthMonitor

__all__ = ["HealthServer", "health_app", "route", "serve_health"]

Response = tuple[int, str, bytes]
_JSON = "application/json"


def _json(status: int, data: object) -> Response:
    return status, _JSON, json.dumps(data, separators=(",", ":")).encode()


def _code(status: str) -> int:
    return 503 if status == "unhealthy" else 200


def route(monitor: HealthMonitor, path: str, registry: Any = None) -> Response:
    """Answer ``GET path``: ``(status code, content type, body)``."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path == "/health":
        overall = monitor.overall()
        return _json(_code(overall.status), overall.to_dict())
    if path.startswith("/health/"):
        service = path[len("/health/") :]
        if service not in monitor.services():
            return _json(404, {"error": "unknown service", "service": service})
        health = monitor.status(service)
        return _json(_code(health.status), health.to_dict())
    if path == "/breakers":
        return _json(200, {"breakers": [_breaker_json(s) for s in monitor.breaker_snapshots()]})
    if path == "/livez":
        return _json(200, {"status": "alive"})
    if path == "/readyz":
        verdict = monitor.overall().status
        return _json(_code(verdict), {"status": "ready" if verdict != "unhealthy" else "not ready"})
    if path == "/metrics":
        return _metrics(registry)
    return _json(404, {"error": "not found", "path": path})


def _breaker_json(snapshot: Any) -> dict[str, Any]:
    return {
        "name": snapshot.name,
        "state": snapshot.state.value,
        "calls": snapshot.calls,
        "failures": snapshot.failures,
        "slow_calls": snapshot.slow_calls,
        "half_open_in_flight": snapshot.half_open_in_flight,
        "retry_after": round(snapshot.retry_after, 3),
    }


def _metrics(registry: Any) -> Response:
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    except ImportError:  # the prometheus extra is not installed
        return _json(404, {"error": "metrics need the 'prometheus' extra"})
    return 200, CONTENT_TYPE_LATEST, generate_latest(registry if registry is not None else REGISTRY)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def health_app(
    monitor: HealthMonitor, *, registry: Any = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app serving the health routes (mount it anywhere; paths are matched at its root).

    Args:
        registry: the prometheus-client registry for ``/metrics`` (e.g. ``setup.registry``
            from :func:`resilience_otel.prometheus.setup_prometheus`); default: the global one.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, ctype, body = _json(405, {"error": "method not allowed"})
        else:
            # Status reads take a lock and a few list walks, never I/O: fine on the loop.
            status, ctype, body = route(monitor, scope.get("path", "/"), registry)
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""}
        )

    return app


class HealthServer:
    """A running standalone health server; :meth:`shutdown` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]
        """The port actually bound."""

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


def serve_health(
    monitor: HealthMonitor, *, port: int = 0, addr: str = "127.0.0.1", registry: Any = None
) -> HealthServer:
    """Serve the health routes from a background thread (``port=0`` picks a free port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, ctype, body = route(monitor, self.path, registry)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            status, ctype, body = route(monitor, self.path, registry)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # keep probes out of stderr
            return

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="health-server", daemon=True)
    thread.start()
    return HealthServer(server, thread)
