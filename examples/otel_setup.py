"""OpenTelemetry set-up for a service using resilience-otel: traces over OTLP, metrics for
Prometheus, and ``opentelemetry-instrumentation-httpx`` enabled as well.

With the httpx instrumentation on too, every *attempt* still has exactly one CLIENT span: ours
(the instrumentation is suppressed under it), with ``http.request.resend_count`` on resends.
This script makes one call that the upstream answers 503 first, counts the attempt spans it
exported, and prints them.

Environment (defaults shown)::

    QUOTES_URL=http://127.0.0.1:8080/quotes/AAPL
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318     # read by the OTLP exporter
    OTEL_SERVICE_NAME=quotes-client
    PROMETHEUS_PORT=9464                                  # 0 picks a free port

Needs the ``prometheus`` extra and ``opentelemetry-exporter-otlp-proto-http``.
Run: ``python examples/otel_setup.py``.
"""

from __future__ import annotations

import os

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience_otel import BreakerConfig, Policy, ResilientTransport, RetryConfig
from resilience_otel.prometheus import setup_prometheus


def setup_tracing(resource: Resource) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A global tracer provider exporting over OTLP/HTTP (batched), plus an in-memory copy
    so this script can count what it exported."""
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    local = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(local))
    trace.set_tracer_provider(provider)
    return provider, local


def main() -> None:
    """Set up tracing and metrics, make one call, show its attempt spans."""
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "quotes-client")})
    provider, local = setup_tracing(resource)
    prom = setup_prometheus(port=int(os.environ.get("PROMETHEUS_PORT", "9464")), resource=resource)
    print(f"metrics on http://127.0.0.1:{prom.port}/metrics")
    HTTPXClientInstrumentor().instrument()  # e.g. enabled by opentelemetry-instrument
    policy = Policy(
        service="quotes",
        breaker=BreakerConfig(call_timeout=5.0),
        retry=RetryConfig(max_attempts=3, base_delay=0.05, max_delay=0.5),
    )
    url = os.environ.get("QUOTES_URL", "http://127.0.0.1:8080/quotes/AAPL")
    tracer = trace.get_tracer("examples.otel_setup")
    try:
        with (
            httpx.Client(transport=ResilientTransport(policy=policy)) as client,
            tracer.start_as_current_span("refresh quotes"),
        ):
            response = client.get(url)
        print(f"GET {url}: HTTP {response.status_code}")
    finally:
        HTTPXClientInstrumentor().uninstrument()
        provider.shutdown()  # flushes the batch to the OTLP endpoint
        prom.shutdown()
    attempts = [s for s in local.get_finished_spans() if s.kind is trace.SpanKind.CLIENT]
    print(f"{len(attempts)} CLIENT spans, one per attempt:")
    for span in attempts:
        attributes = span.attributes or {}
        print(f"  {span.name} status={attributes.get('http.response.status_code')} "
              f"resend_count={attributes.get('http.request.resend_count', 0)}")  # fmt: skip


if __name__ == "__main__":
    main()
