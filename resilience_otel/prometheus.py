"""Prometheus exposition in one call: an SDK ``MeterProvider`` with the OTel Prometheus
exporter, served on ``/metrics`` by a standalone server, or mounted as a WSGI/ASGI app.

Needs the ``prometheus`` extra (``opentelemetry-sdk``, ``opentelemetry-exporter-prometheus``,
``prometheus-client``).

    from resilience_otel.prometheus import setup_prometheus
    prom = setup_prometheus(port=9464)        # http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

from ._monitoring.prometheus import PrometheusSetup, setup_prometheus

__all__ = [
    "PrometheusSetup",
    "setup_prometheus",
]
