"""The telemetry reference: metrics, spans and span events, read from the code.

Names, units and descriptions come from the names module (``_telemetry/semconv.py``). What
kind of instrument each metric is, which labels it carries, what the Prometheus exporter calls
it, and which attributes spans and events hold are observed, not restated: a short workload
runs the real clients against in-process fakes (an httpx mock transport, a refused Redis
port, a fake Redis replica refusing writes with ``READONLY``) with the OTel SDK's in-memory
reader and span exporter and the Prometheus exporter.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import resilience_otel
import resilience_otel.redis
from resilience_otel._telemetry import semconv

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Observed:
    """What the workload emitted."""

    kinds: dict[str, str] = field(default_factory=dict)  # metric -> instrument kind
    labels: dict[str, set[str]] = field(default_factory=dict)  # metric -> label keys
    prometheus: set[str] = field(default_factory=set)  # exposed metric family sample names
    spans: list[ReadableSpan] = field(default_factory=list)  # the package's own spans
    caller_spans: list[ReadableSpan] = field(default_factory=list)  # the workload's


def _ours(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == semconv.SCOPE_NAME


def metric_specs() -> list[tuple[str, str, str]]:
    """Every ``(name, unit, description)`` the names module defines, in its order."""
    return [
        value
        for value in vars(semconv).values()
        if isinstance(value, tuple)
        and len(value) == 3
        and all(isinstance(part, str) for part in value)
        and "." in value[0]  # a metric name, not a 3-value label set
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_workload(tracer: TracerProvider, meter: MeterProvider) -> list[object]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/full"):
            return httpx.Response(507)  # CRITICAL: "insufficient storage"
        return httpx.Response(503 if request.url.path.startswith("/fail") else 200)

    policy = resilience_otel.Policy(
        service="quotes",
        breaker=resilience_otel.BreakerConfig(failure_threshold=2),
        retry=resilience_otel.RetryConfig(max_attempts=2, base_delay=0, max_delay=0, budget=None),
    )
    monitor = resilience_otel.HealthMonitor(
        resilience_otel.HealthConfig(minimum_calls=1), meter_provider=meter
    )
    letters = resilience_otel.InMemoryDeadLetterQueue(maxlen=1)
    transport = resilience_otel.ResilientTransport(
        httpx.MockTransport(answer),
        policy=policy,
        dead_letters=letters,
        observers=[monitor],
        tracer_provider=tracer,
        meter_provider=meter,
    )
    storage = resilience_otel.ResilientTransport(
        httpx.MockTransport(answer),
        policy=resilience_otel.Policy(service="storage"),
        tracer_provider=tracer,
        meter_provider=meter,
    )
    # Rejections and dead letters are events on the caller's span: give the calls one.
    handler = tracer.get_tracer("docs").start_as_current_span("handler")
    with handler, httpx.Client(transport=transport, base_url="http://quotes.example") as client:
        client.get("/ok")
        client.get("/fail")  # retried, exhausted, dead-lettered; the breaker opens
        with contextlib.suppress(resilience_otel.CircuitOpenError):
            client.get("/fail")  # rejected; its dead letter pushes the first one out
    with httpx.Client(transport=storage) as client:
        client.put("http://storage.example/full")
    return [transport, storage, monitor]  # the state gauges report live breakers only


@contextlib.contextmanager
def _readonly_replica() -> Iterator[int]:
    """A fake Redis node that is no longer the primary: every command gets ``READONLY``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    while data := conn.recv(65536):
                        commands = sum(line.startswith(b"*") for line in data.split(b"\r\n"))
                        conn.sendall(commands * b"-READONLY You can't write against a replica.\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def _redis_workload(tracer: TracerProvider, meter: MeterProvider) -> list[object]:
    policy = resilience_otel.Policy(
        service="cache",
        retry=resilience_otel.RetryConfig(max_attempts=2, base_delay=0, max_delay=0, budget=None),
    )
    client = resilience_otel.redis.instrument(
        redis.Redis(port=_closed_port(), socket_connect_timeout=1),
        policy=policy,
        tracer_provider=tracer,
        meter_provider=meter,
    )
    with contextlib.suppress(redis.exceptions.ConnectionError):
        client.get("docs:telemetry")
    client.close()
    with _readonly_replica() as port:  # a failover: the write is refused, retried, refused
        replica = resilience_otel.redis.instrument(
            redis.Redis(port=port, socket_timeout=1),
            policy=policy,
            tracer_provider=tracer,
            meter_provider=meter,
        )
        with contextlib.suppress(redis.exceptions.ReadOnlyError):
            replica.set("docs:telemetry", "1")
        replica.close()
    return [client, replica]


def _kind(data: Any) -> str:
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "up-down counter"
    if isinstance(data, Histogram):
        return "histogram"
    if isinstance(data, Gauge):
        return "gauge"
    return type(data).__name__


def observe() -> Observed:
    """Run the workload and collect what it emitted."""
    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    registry = CollectorRegistry()
    exporter = PrometheusMetricReader(registry=registry)
    meter = MeterProvider(metric_readers=[reader, exporter])
    try:
        alive = [*_http_workload(tracer, meter), *_redis_workload(tracer, meter)]
        found = Observed(spans=list(spans.get_finished_spans()))
        found.caller_spans = [s for s in found.spans if _ours(s) is False]
        found.spans = [s for s in found.spans if _ours(s)]
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.kinds[metric.name] = _kind(metric.data)
                    keys = found.labels.setdefault(metric.name, set())
                    for point in metric.data.data_points:
                        keys.update(point.attributes or {})
        for family in registry.collect():
            found.prometheus.update(sample.name for sample in family.samples)
        del alive
    finally:
        meter.shutdown()
        tracer.shutdown()
    return found


def _prometheus_name(name: str, found: Observed) -> str:
    """The exporter's name for ``name``: the names module's, confirmed by a real scrape."""
    promised = semconv.PROMETHEUS_NAMES.get(name, "")
    exposed = {promised, f"{promised}_bucket", f"{promised}_count"}
    return promised if exposed & found.prometheus else ""


def _used_in(prom_name: str) -> str:
    """Which shipped dashboards and alert rule files query this metric."""
    files = sorted((ROOT / "dashboards").glob("*.json")) + sorted((ROOT / "alerts").glob("*.yml"))
    users = [f"`{p.parent.name}/{p.name}`" for p in files if prom_name in p.read_text("utf-8")]
    return ", ".join(users)


def metrics_markdown(found: Observed) -> tuple[str, list[str]]:
    """The metrics table, and a problem per metric the workload did not confirm."""
    problems = []
    rows = [
        "| Metric (OTel, Prometheus) | Instrument, unit | Labels | Description |",
        "|---|---|---|---|",
    ]
    for name, unit, description in metric_specs():
        prom = _prometheus_name(name, found)
        if name not in found.kinds:
            problems.append(f"metric {name} was not emitted by the reference workload")
        elif not prom:
            problems.append(f"metric {name}: the exporter does not expose the name semconv gives")
        labels = ", ".join(f"`{key}`" for key in sorted(found.labels.get(name, ())))
        rows.append(
            f"| `{name}`<br>`{prom or '?'}` | {found.kinds.get(name, '?')}, `{unit}` "
            f"| {labels} | {description} |"
        )
    return "\n".join(rows), problems


def usage_markdown() -> str:
    rows = ["| Prometheus name | Used by |", "|---|---|"]
    for prom in semconv.PROMETHEUS_NAMES.values():
        rows.append(f"| `{prom}` | {_used_in(prom) or 'not queried'} |")
    return "\n".join(rows)


def label_values_markdown() -> str:
    """The fixed value sets of the labels, from the names module."""
    sets = {
        semconv.CLIENT: semconv.CLIENT_VALUES,
        semconv.OUTCOME: semconv.OUTCOME_VALUES,
        semconv.ERROR_CLASS: semconv.ERROR_CLASS_VALUES,
        f"{semconv.REASON} (retries)": semconv.RETRY_REASON_VALUES,
        f"{semconv.REASON} (dead letters)": semconv.DEAD_LETTER_REASON_VALUES,
        f"{semconv.STATE}, {semconv.FROM_STATE}, {semconv.TO_STATE}": semconv.BREAKER_STATE_VALUES,
        semconv.STATUS: semconv.HEALTH_STATUS_VALUES,
    }
    rows = ["| Label | Values |", "|---|---|"]
    for label, values in sets.items():
        ordered = values if isinstance(values, tuple) else sorted(values)
        rows.append(f"| `{label}` | {', '.join(f'`{v}`' for v in ordered)} |")
    rows.append(f"| `{semconv.SERVICE}` | the policy's service name (`Policy.service`) |")
    return "\n".join(rows)


def _span_client(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return "Redis" if attributes.get(semconv.DB_SYSTEM_NAME) else "HTTP"


def _distinct(spans: list[ReadableSpan]) -> Iterator[tuple[str, list[str], SpanKind, set[str]]]:
    """Per client: the span names seen, the kind, and the union of the attribute keys."""
    merged: dict[str, tuple[list[str], SpanKind, set[str]]] = {}
    for span in spans:
        names, _kind, keys = merged.setdefault(_span_client(span), ([], span.kind, set()))
        if span.name not in names:
            names.append(span.name)
        keys.update(span.attributes or {})
    for client, (names, kind, keys) in merged.items():
        yield client, names, kind, keys


def spans_markdown(found: Observed) -> tuple[str, list[str]]:
    rows = ["| Client | Span names seen | Kind | Attributes |", "|---|---|---|---|"]
    clients = []
    for client, names, kind, keys in _distinct(found.spans):
        clients.append(client)
        attributes = ", ".join(f"`{key}`" for key in sorted(keys))
        shown = ", ".join(f"`{name}`" for name in names)
        rows.append(f"| {client} | {shown} | {kind.name} | {attributes} |")
    missing = [f"no {c} span in the reference run" for c in ("HTTP", "Redis") if c not in clients]
    return "\n".join(rows), missing


def events_markdown(found: Observed) -> tuple[str, list[str]]:
    seen: dict[str, set[str]] = {}
    for span in (*found.spans, *found.caller_spans):
        for event in span.events:
            seen.setdefault(event.name, set()).update(event.attributes or {})
    names = {k: v for k, v in vars(semconv).items() if k.startswith("EVENT_")}
    problems = []
    rows = ["| Event | Attributes |", "|---|---|"]
    for constant, name in names.items():
        keys = ", ".join(f"`{key}`" for key in sorted(seen.get(name, ())))
        rows.append(f"| `{name}` | {keys} |")
        if name not in seen:
            problems.append(f"span event {name} (semconv.{constant}) not in the reference run")
    return "\n".join(rows), problems


def markdown() -> tuple[str, list[str]]:
    """The generated part of docs/reference/telemetry.md, and any problems found."""
    found = observe()
    metrics, problems = metrics_markdown(found)
    events, more = events_markdown(found)
    spans, missing = spans_markdown(found)
    text = f"""## Metrics

Labels are those seen in a reference run; OTel names and units are those the instruments are
created with. The Prometheus exporter turns dots into underscores, adds `_total` to counters
and `_seconds` for the unit `s`; histograms are exposed as `_bucket`, `_sum` and `_count`.

{metrics}

### Label values

{label_values_markdown()}

### Where the shipped dashboards and alerts use them

{usage_markdown()}

## Spans

HTTP: one CLIENT span per physical attempt (`http.request.resend_count` on resends).
Redis and PostgreSQL: one CLIENT span per logical operation, covering its retries; failed
attempts inside it are span events. Attributes seen in a reference run:

{spans}

## Span events

{events}
"""
    return text, problems + more + missing
