"""The implementation behind :mod:`resilience_otel.prometheus` (documented there)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, make_asgi_app, make_wsgi_app, start_http_server

from .._core.validate import check_bool, check_int

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics.view import View

__all__ = ["PrometheusSetup", "setup_prometheus"]

_log = logging.getLogger("resilience_otel")


@dataclass
class PrometheusSetup:
    """What :func:`setup_prometheus` built.

    Attributes:
        meter_provider: pass it to transports (``meter_provider=``) or use it globally.
        registry: the prometheus-client registry holding the exporter's collector.
        port: where ``/metrics`` is served, when a server was started.
    """

    meter_provider: MeterProvider
    reader: PrometheusMetricReader
    registry: CollectorRegistry
    port: int | None = None
    _server: WSGIServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def wsgi_app(self) -> Any:
        """A WSGI app serving the metrics (mount it at ``/metrics``)."""
        return make_wsgi_app(self.registry)

    def asgi_app(self) -> Any:
        """An ASGI app serving the metrics (mount it at ``/metrics``)."""
        return make_asgi_app(self.registry)

    def shutdown(self) -> None:
        """Stop the server (if any) and the meter provider."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.meter_provider.shutdown()


def setup_prometheus(
    *,
    port: int | None = None,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    set_global: bool = True,
    resource: Resource | None = None,
    views: Sequence[View] = (),
) -> PrometheusSetup:
    """Create a ``MeterProvider`` exporting to Prometheus and optionally serve ``/metrics``.

    Args:
        port: serve ``/metrics`` on this port (0 picks a free one); ``None``: no server,
            use :meth:`PrometheusSetup.wsgi_app` / :meth:`PrometheusSetup.asgi_app`.
        addr: the address to bind; loopback by default, set ``"0.0.0.0"`` deliberately.
        registry: a prometheus-client registry; a fresh one by default (so two set-ups in
            one process do not collide).
        set_global: make it the global OTel meter provider (only if none was set yet).
        resource: the OTel resource (``service.name`` etc.).
        views: SDK views, e.g. to change histogram buckets.
    """
    check_bool("setup_prometheus(set_global=...)", set_global)
    if port is not None:
        check_int("setup_prometheus(port=...)", port, 0, 65535)
    registry = registry if registry is not None else CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(
        metric_readers=[reader], resource=resource or Resource.create(), views=list(views)
    )
    if set_global:
        if isinstance(metrics.get_meter_provider(), MeterProvider):
            _log.warning("a global MeterProvider is already set; pass meter_provider= instead")
        else:
            metrics.set_meter_provider(provider)
    setup = PrometheusSetup(meter_provider=provider, reader=reader, registry=registry)
    if port is not None:
        server, thread = start_http_server(port, addr=addr, registry=registry)
        setup.port = server.server_port
        setup._server, setup._thread = server, thread
    return setup
