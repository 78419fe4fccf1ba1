"""Exactly one CLIENT span per attempt, with or without opentelemetry-instrumentation-httpx.

Every test sends a request that gets a 503 then a 200 from the fault server on loopback, so a
correct set-up has exactly two CLIENT spans (no span for the logical call) and the server saw
two ``traceparent`` headers, each naming one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from resilience_otel import AsyncResilientTransport, ResilientTransport
from resilience_otel._telemetry import semconv as sc

from .conftest import PolicyFactory
from .faultserver import FaultServer

pytestmark = pytest.mark.integration

PATH = "/quotes"
OURS = sc.SCOPE_NAME
THEIRS = "opentelemetry.instrumentation.httpx"


@dataclass
class Otel:
    """Per-test SDK providers: spans exported to memory, metrics read in memory."""

    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh providers, never the global ones."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield Otel(exporter, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def global_instrumentation(otel: Otel) -> Iterator[None]:
    """HTTPXClientInstrumentor().instrument() for the test, always undone afterwards."""
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(
        tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    )
    try:
        yield
    finally:
        instrumentor.uninstrument()


@contextmanager
def client_instrumentation(client: httpx.Client | httpx.AsyncClient, otel: Otel) -> Iterator[None]:
    """HTTPXClientInstrumentor.instrument_client(client) for a block, always undone."""
    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    )
    try:
        yield
    finally:
        HTTPXClientInstrumentor.uninstrument_client(client)


def sync_client(server: FaultServer, policy: PolicyFactory, otel: Otel) -> httpx.Client:
    resilient = ResilientTransport(
        httpx.HTTPTransport(),
        policy=policy(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    return httpx.Client(transport=resilient, base_url=server.base_url)


def async_client(server: FaultServer, policy: PolicyFactory, otel: Otel) -> httpx.AsyncClient:
    resilient = AsyncResilientTransport(
        httpx.AsyncHTTPTransport(),
        policy=policy(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    return httpx.AsyncClient(transport=resilient, base_url=server.base_url)


def traceparent(span: ReadableSpan) -> str:
    ctx = span.context
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def assert_one_span_per_attempt(otel: Otel, server: FaultServer, scope: str) -> None:
    """Two CLIENT spans from ``scope`` (503 then 200), each sent as the server's traceparent."""
    spans = otel.spans()
    assert [s.instrumentation_scope.name for s in spans] == [scope, scope]  # type: ignore[union-attr]
    assert [s.kind for s in spans] == [SpanKind.CLIENT, SpanKind.CLIENT]
    attrs = [dict(s.attributes or {}) for s in spans]
    # The contrib instrumentation defaults to the old HTTP conventions (http.status_code).
    statuses = [a.get(sc.HTTP_RESPONSE_STATUS_CODE, a.get("http.status_code")) for a in attrs]
    assert statuses == [503, 200]
    assert [a.get(sc.RESILIENCE_ATTEMPT) for a in attrs] == [1, 2]
    assert [a.get(sc.HTTP_REQUEST_RESEND_COUNT) for a in attrs] == [None, 1]
    assert all(a.get(sc.RESILIENCE_SERVICE) == "faults" for a in attrs)
    received = [r.headers.get("traceparent") for r in server.requests if r.path == PATH]
    assert received == [traceparent(s) for s in spans]


# -- (a) our transport alone -----------------------------------------------------------------
def test_sync_transport_alone_makes_one_span_per_attempt(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Sync, no contrib instrumentation: two attempts, two of our CLIENT spans."""
    fault_server.script(PATH, ["503", "200"])
    with sync_client(fault_server, make_policy, otel) as client:
        assert client.get(PATH).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, OURS)


@pytest.mark.anyio
async def test_async_transport_alone_makes_one_span_per_attempt(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Async, no contrib instrumentation: two attempts, two of our CLIENT spans."""
    fault_server.script(PATH, ["503", "200"])
    async with async_client(fault_server, make_policy, otel) as client:
        assert (await client.get(PATH)).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, OURS)


# -- (b) plus HTTPXClientInstrumentor().instrument() -----------------------------------------
@pytest.mark.usefixtures("global_instrumentation")
def test_global_instrumentation_traces_a_plain_client(
    fault_server: FaultServer, otel: Otel
) -> None:
    """Control: the global patch is active and traces a client without our transport."""
    with httpx.Client(base_url=fault_server.base_url) as client:
        client.get(PATH)
    (span,) = otel.spans()
    assert span.instrumentation_scope.name == THEIRS  # type: ignore[union-attr]


@pytest.mark.usefixtures("global_instrumentation")
def test_sync_with_global_instrumentation_makes_one_span_per_attempt(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Sync, instrument(): the patched HTTPTransport stays quiet under our attempt spans."""
    fault_server.script(PATH, ["503", "200"])
    with sync_client(fault_server, make_policy, otel) as client:
        assert client.get(PATH).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, OURS)


@pytest.mark.anyio
@pytest.mark.usefixtures("global_instrumentation")
async def test_async_with_global_instrumentation_makes_one_span_per_attempt(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Async, instrument(): the patched AsyncHTTPTransport stays quiet under our spans."""
    fault_server.script(PATH, ["503", "200"])
    async with async_client(fault_server, make_policy, otel) as client:
        assert (await client.get(PATH)).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, OURS)


# -- (c) plus HTTPXClientInstrumentor.instrument_client(client) --------------------------------
def test_sync_instrumented_client_spans_are_the_attempt_spans(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Sync, instrument_client(): its span per attempt carries our resilience attributes."""
    fault_server.script(PATH, ["503", "200"])
    with (
        sync_client(fault_server, make_policy, otel) as client,
        client_instrumentation(client, otel),
    ):
        assert client.get(PATH).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, THEIRS)
    first = otel.spans()[0]
    assert first.attributes[sc.RESILIENCE_ERROR_CLASS] == "transient"  # type: ignore[index]
    assert first.attributes[sc.RESILIENCE_BREAKER_STATE] == "closed"  # type: ignore[index]


def test_sync_uninstrumented_client_gets_our_spans_back(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Sync, after uninstrument_client(): our own attempt spans come back."""
    fault_server.script(PATH, ["200"])
    with sync_client(fault_server, make_policy, otel) as client:
        with client_instrumentation(client, otel):
            client.get(PATH)
        assert [s.instrumentation_scope.name for s in otel.spans()] == [THEIRS]  # type: ignore[union-attr]
        otel.exporter.clear()
        fault_server.clear()
        fault_server.script(PATH, ["503", "200"])
        assert client.get(PATH).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, OURS)


@pytest.mark.anyio
async def test_async_instrumented_client_spans_are_the_attempt_spans(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Async, instrument_client(): its span per attempt carries our resilience attributes."""
    fault_server.script(PATH, ["503", "200"])
    async with async_client(fault_server, make_policy, otel) as client:
        with client_instrumentation(client, otel):
            assert (await client.get(PATH)).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, THEIRS)
    first = otel.spans()[0]
    assert first.attributes[sc.RESILIENCE_ERROR_CLASS] == "transient"  # type: ignore[index]


@pytest.mark.anyio
async def test_async_uninstrumented_client_gets_our_spans_back(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Async, after uninstrument_client(): our own attempt spans come back."""
    fault_server.script(PATH, ["200"])
    async with async_client(fault_server, make_policy, otel) as client:
        with client_instrumentation(client, otel):
            await client.get(PATH)
        assert [s.instrumentation_scope.name for s in otel.spans()] == [THEIRS]  # type: ignore[union-attr]
        otel.exporter.clear()
        fault_server.clear()
        fault_server.script(PATH, ["503", "200"])
        assert (await client.get(PATH)).status_code == 200
    assert_one_span_per_attempt(otel, fault_server, OURS)


def test_sync_instrumented_client_resend_span_carries_the_retry_event(
    fault_server: FaultServer, make_policy: PolicyFactory, otel: Otel
) -> None:
    """Sync, instrument_client(): the resend's span says why it was retried.

    The contrib span of the failed attempt has ended before the retry is decided, so the
    resilience.retry event (naming the failed attempt) goes on the next attempt's span.
    """
    fault_server.script(PATH, ["503", "200"])
    with (
        sync_client(fault_server, make_policy, otel) as client,
        client_instrumentation(client, otel),
    ):
        client.get(PATH)
    first, second = otel.spans()
    assert [e.name for e in first.events] == []
    assert [e.name for e in second.events] == [sc.EVENT_RETRY]
    event = second.events[0]
    assert event.attributes is not None
    assert event.attributes[sc.RESILIENCE_ATTEMPT] == 1
    assert event.attributes[sc.RESILIENCE_RETRY_REASON] == "server_error"
