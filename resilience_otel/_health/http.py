"""Health endpoints: one router, served as an ASGI app (no framework) or by the standalone
server of :mod:`._health_server`.

Routes: ``/health`` (overall; 200 healthy or degraded, 503 unhealthy), ``/health/{service}``,
``/breakers``, ``/metrics`` (Prometheus), ``/livez`` (the process answers) and ``/readyz``
(200 unless the overall status is unhealthy).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from .server import HealthServer, start_health_server

if TYPE_CHECKING:
    from .monitor import HealthMonitor

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


def serve_health(
    monitor: HealthMonitor,
    *,
    port: int = 0,
    addr: str = "127.0.0.1",
    registry: Any = None,
    read_timeout: float = 5.0,
    max_connections: int = 256,
) -> HealthServer:
    """Serve the health routes from one background thread (``port=0`` picks a free port).

    Args:
        port: the TCP port; 0 picks a free one (read it back from ``.port``).
        addr: the address to bind. The default, ``127.0.0.1``, is reachable only from this
            host; inside a Kubernetes pod, probes arrive on the pod IP: bind ``"0.0.0.0"``
            (every interface: keep the port off any public Service or Ingress).
        registry: the prometheus-client registry for ``/metrics`` (default: the global one).
        read_timeout: seconds a connection may take to send a request head, and stay idle
            between requests, before it is closed (0 to 300).
        max_connections: connections open at once (1 to 100000); when all are taken a new
            one evicts the connection that has waited longest for its request.

    Raises:
        ConfigError: a bad port, timeout or limit. OSError: the address cannot be bound.
    """
    return start_health_server(
        lambda target: route(monitor, target, registry),
        port=port,
        addr=addr,
        read_timeout=read_timeout,
        max_connections=max_connections,
    )
