"""Attempt spans and span events of the httpx transports (in-memory OTel SDK, no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    CircuitOpenError,
    InMemoryDeadLetterQueue,
    Jitter,
    Policy,
    ResilientTransport,
    RetryConfig,
)
from resilience_otel._telemetry import semconv as sc
from resilience_otel.testing import FakeClock

URL = "https://api.test/v1/quotes"
SERVICE = "quotes"

Step = int | type[Exception]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@dataclass
class Otel:
    """An SDK tracer provider exporting to memory and a meter provider read in memory."""

    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        """Finished spans in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def attempt_spans(self) -> list[ReadableSpan]:
        """Finished spans of this package (the attempt spans)."""
        return [s for s in self.spans() if s.instrumentation_scope.name == sc.SCOPE_NAME]


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh providers for one test; never the global ones."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(exporter, tracer_provider, reader, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


class Upstream:
    """A MockTransport handler replaying ``steps`` (the last repeats), recording requests."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[httpx.Request] = []
        self.traceparents: list[str | None] = []
        self.current_spans: list[trace.Span] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # The request object is reused by every attempt: read its headers now.
        self.requests.append(request)
        self.traceparents.append(request.headers.get("traceparent"))
        self.current_spans.append(trace.get_current_span())
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, int):
            return httpx.Response(step, text="body")
        raise step("upstream failed", request=request)  # type: ignore[call-arg]


def make_policy(
    *, max_attempts: int = 3, failure_threshold: int = 100, telemetry: bool = True
) -> Policy:
    """Fixed 0.1 s then 0.2 s backoff, no budget, no call timeout."""
    return Policy(
        service=SERVICE,
        breaker=BreakerConfig(
            failure_threshold=failure_threshold, reset_timeout=30.0, call_timeout=None
        ),
        retry=RetryConfig(
            max_attempts=max_attempts,
            base_delay=0.1,
            max_delay=1.0,
            jitter=Jitter.NONE,
            budget=None,
        ),
        telemetry=telemetry,
    )


def transport(
    otel: Otel, upstream: Upstream, policy: Policy | None = None, **kwargs: object
) -> ResilientTransport:
    return ResilientTransport(
        httpx.MockTransport(upstream),
        policy=policy or make_policy(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        clock=FakeClock(),
        **kwargs,  # type: ignore[arg-type]
    )


def send(
    resilient: ResilientTransport, method: str = "GET", url: str = URL, **kwargs: object
) -> httpx.Response:
    with httpx.Client(transport=resilient) as client:
        return client.request(method, url, **kwargs)  # type: ignore[arg-type]


def events(span: ReadableSpan, name: str) -> list[dict[str, object]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def contains(recorded: list[dict[str, object]], *expected: dict[str, object]) -> bool:
    """Whether ``recorded`` has exactly one event per ``expected``, each including its items."""
    return len(recorded) == len(expected) and all(
        want.items() <= got.items() for got, want in zip(recorded, expected, strict=True)
    )


def traceparent(span: ReadableSpan) -> str:
    ctx = span.context
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


# -- one CLIENT span per attempt -------------------------------------------------------------
def test_each_physical_attempt_gets_one_client_span(otel: Otel) -> None:
    """Three attempts (503, 503, 200) make exactly three CLIENT spans."""
    upstream = Upstream(503, 503, 200)
    assert send(transport(otel, upstream)).status_code == 200
    spans = otel.spans()
    assert len(upstream.requests) == 3
    assert len(spans) == 3
    assert {s.kind for s in spans} == {SpanKind.CLIENT}
    assert [s.attributes[sc.RESILIENCE_ATTEMPT] for s in spans] == [1, 2, 3]  # type: ignore[index]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_span_is_named_after_the_method(otel: Otel, method: str) -> None:
    """A known method is the span name and the http.request.method value."""
    send(transport(otel, Upstream(200)), method)
    (span,) = otel.spans()
    assert span.name == method
    assert span.attributes[sc.HTTP_REQUEST_METHOD] == method  # type: ignore[index]
    assert sc.HTTP_REQUEST_METHOD_ORIGINAL not in span.attributes  # type: ignore[operator]


def test_unknown_method_is_reported_as_other(otel: Otel) -> None:
    """An unknown method names the span HTTP, with _OTHER and the original method kept."""
    send(transport(otel, Upstream(200)), "PURGE")
    (span,) = otel.spans()
    assert span.name == "HTTP"
    assert span.attributes[sc.HTTP_REQUEST_METHOD] == "_OTHER"  # type: ignore[index]
    assert span.attributes[sc.HTTP_REQUEST_METHOD_ORIGINAL] == "PURGE"  # type: ignore[index]


@pytest.mark.parametrize(
    ("url", "port"),
    [("http://api.test/x", 80), ("https://api.test/x", 443), ("http://api.test:8080/x", 8080)],
)
def test_server_port_defaults_to_the_scheme_port(otel: Otel, url: str, port: int) -> None:
    """server.port is the explicit port, else 80 for http and 443 for https."""
    send(transport(otel, Upstream(200)), url=url)
    (span,) = otel.spans()
    assert span.attributes[sc.SERVER_ADDRESS] == "api.test"  # type: ignore[index]
    assert span.attributes[sc.SERVER_PORT] == port  # type: ignore[index]
    assert span.attributes[sc.URL_SCHEME] == url.partition(":")[0]  # type: ignore[index]


def test_url_full_is_redacted(otel: Otel) -> None:
    """url.full hides userinfo and token/api_key/signature values, keeps other query values."""
    url = "https://alice:pa55word@api.test/v1/q?token=t0k3n&api_key=k3y&signature=s1g&page=2"
    send(transport(otel, Upstream(200)), url=url)
    (span,) = otel.spans()
    assert span.attributes[sc.URL_FULL] == (  # type: ignore[index]
        "https://REDACTED:REDACTED@api.test/v1/q"
        "?token=REDACTED&api_key=REDACTED&signature=REDACTED&page=2"
    )


def test_successful_attempt_has_status_code_and_unset_status(otel: Otel) -> None:
    """A 200 attempt carries the status code, no error attributes and an UNSET status."""
    send(transport(otel, Upstream(200)))
    (span,) = otel.spans()
    attributes = dict(span.attributes or {})
    assert attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert sc.ERROR_TYPE not in attributes
    assert sc.RESILIENCE_ERROR_CLASS not in attributes
    assert span.status.status_code is StatusCode.UNSET


def test_failed_response_attempt_is_an_error_span(otel: Otel) -> None:
    """A 503 attempt has error.type "503", error class transient and an ERROR status."""
    send(transport(otel, Upstream(503, 200)))
    first = otel.spans()[0]
    assert first.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == 503  # type: ignore[index]
    assert first.attributes[sc.ERROR_TYPE] == "503"  # type: ignore[index]
    assert first.attributes[sc.RESILIENCE_ERROR_CLASS] == "transient"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR


def test_exception_attempt_records_the_exception(otel: Otel) -> None:
    """An attempt that raised has error.type = class name and an "exception" event."""
    send(transport(otel, Upstream(httpx.ConnectError, 200)))
    first, second = otel.spans()
    assert first.attributes[sc.ERROR_TYPE] == "ConnectError"  # type: ignore[index]
    assert sc.HTTP_RESPONSE_STATUS_CODE not in first.attributes  # type: ignore[operator]
    assert first.status.status_code is StatusCode.ERROR
    (exception,) = events(first, "exception")
    assert exception["exception.type"] in ("ConnectError", "httpx.ConnectError")
    assert events(second, "exception") == []


def test_resend_count_only_on_resends(otel: Otel) -> None:
    """http.request.resend_count is absent on the first attempt, then 1 and 2."""
    send(transport(otel, Upstream(503, 503, 200)))
    counts = [s.attributes.get(sc.HTTP_REQUEST_RESEND_COUNT) for s in otel.spans()]  # type: ignore[union-attr]
    assert counts == [None, 1, 2]


def test_resilience_attributes_on_attempt_span(otel: Otel) -> None:
    """Each attempt span names the service, its attempt number and the breaker state."""
    send(transport(otel, Upstream(200)))
    (span,) = otel.spans()
    assert span.attributes[sc.RESILIENCE_SERVICE] == SERVICE  # type: ignore[index]
    assert span.attributes[sc.RESILIENCE_ATTEMPT] == 1  # type: ignore[index]
    assert span.attributes[sc.RESILIENCE_BREAKER_STATE] == "closed"  # type: ignore[index]


# -- span events -------------------------------------------------------------------------------
def test_retried_attempts_carry_a_retry_event(otel: Otel) -> None:
    """Retried attempts get resilience.retry with delay and reason; the last one does not."""
    send(transport(otel, Upstream(503)))
    spans = otel.spans()
    assert len(spans) == 3
    reason = sc.RESILIENCE_RETRY_REASON
    delay = sc.RESILIENCE_RETRY_DELAY
    assert contains(events(spans[0], sc.EVENT_RETRY), {delay: 0.1, reason: "server_error"})
    assert contains(events(spans[1], sc.EVENT_RETRY), {delay: 0.2, reason: "server_error"})
    assert events(spans[2], sc.EVENT_RETRY) == []


def test_state_change_event_on_the_attempt_that_opened_the_breaker(otel: Otel) -> None:
    """The attempt whose failure opened the breaker records closed -> open."""
    send(transport(otel, Upstream(503), make_policy(failure_threshold=2)))
    first, second = otel.spans()
    assert events(first, sc.EVENT_STATE_CHANGE) == []
    assert contains(
        events(second, sc.EVENT_STATE_CHANGE),
        {sc.RESILIENCE_FROM_STATE: "closed", sc.RESILIENCE_TO_STATE: "open"},
    )


def test_rejected_call_adds_circuit_open_event_to_callers_span(otel: Otel) -> None:
    """A rejection is an event with retry_after on the caller's current span."""
    resilient = transport(otel, Upstream(503), make_policy(max_attempts=1, failure_threshold=1))
    send(resilient)  # opens the breaker
    tracer = otel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller"), pytest.raises(CircuitOpenError):
        send(resilient)
    caller = otel.spans()[-1]
    assert caller.name == "caller"
    assert contains(
        events(caller, sc.EVENT_REJECTED),
        {sc.RESILIENCE_SERVICE: SERVICE, sc.RESILIENCE_RETRY_AFTER: 30.0},
    )


def test_rejected_call_makes_no_attempt_span(otel: Otel) -> None:
    """A call the open breaker rejects never reaches the upstream and has no attempt span."""
    upstream = Upstream(503)
    resilient = transport(otel, upstream, make_policy(max_attempts=1, failure_threshold=1))
    send(resilient)
    with pytest.raises(CircuitOpenError):
        send(resilient)
    assert len(upstream.requests) == 1
    assert len(otel.spans()) == 1


def test_dead_letter_adds_event_to_callers_span(otel: Otel) -> None:
    """A dead letter is recorded as an event with its reason on the caller's span."""
    queue = InMemoryDeadLetterQueue()
    resilient = transport(otel, Upstream(503), dead_letters=queue)
    tracer = otel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller"):
        send(resilient)
    caller = otel.spans()[-1]
    assert len(queue) == 1
    assert contains(
        events(caller, sc.EVENT_DEAD_LETTER),
        {sc.RESILIENCE_SERVICE: SERVICE, sc.RESILIENCE_DEAD_LETTER_REASON: "retries_exhausted"},
    )


def test_critical_response_adds_critical_event(otel: Otel) -> None:
    """A 507 attempt gets a resilience.critical_error event and is not retried."""
    send(transport(otel, Upstream(507)))
    (span,) = otel.spans()
    assert contains(events(span, sc.EVENT_CRITICAL), {sc.ERROR_TYPE: "507"})
    assert span.attributes[sc.RESILIENCE_ERROR_CLASS] == "critical"  # type: ignore[index]


def test_transient_failure_has_no_critical_event(otel: Otel) -> None:
    """Only critical failures get resilience.critical_error."""
    send(transport(otel, Upstream(503, 200)))
    assert all(events(s, sc.EVENT_CRITICAL) == [] for s in otel.spans())


# -- context propagation -----------------------------------------------------------------------
def test_traceparent_of_each_attempt_is_its_span(otel: Otel) -> None:
    """The upstream gets one traceparent per attempt, naming that attempt's span."""
    upstream = Upstream(503, 503, 200)
    send(transport(otel, upstream))
    sent = upstream.traceparents
    assert sent == [traceparent(s) for s in otel.spans()]
    assert len(set(sent)) == 3


def test_attempt_span_is_current_inside_the_inner_transport(otel: Otel) -> None:
    """The inner transport runs with the attempt span as the current span."""
    upstream = Upstream(503, 200)
    send(transport(otel, upstream))
    seen = [s.get_span_context().span_id for s in upstream.current_spans]
    assert seen == [s.context.span_id for s in otel.spans()]  # type: ignore[union-attr]


def test_attempt_spans_are_children_of_the_callers_span(otel: Otel) -> None:
    """With a span current, every attempt span is its child in the same trace."""
    tracer = otel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller") as parent:
        send(transport(otel, Upstream(503, 200)))
    parent_ctx = parent.get_span_context()
    attempts = otel.attempt_spans()
    assert len(attempts) == 2
    assert all(s.parent is not None and s.parent.span_id == parent_ctx.span_id for s in attempts)
    assert {s.context.trace_id for s in attempts} == {parent_ctx.trace_id}  # type: ignore[union-attr]


# -- privacy -----------------------------------------------------------------------------------
def test_header_values_never_reach_spans(otel: Otel) -> None:
    """Authorization, Cookie and X-Api-Key values appear in no span or event attribute."""
    secrets = {
        "Authorization": "Bearer auth-s3cret-value",
        "Cookie": "session=cookie-s3cret-value",
        "X-Api-Key": "apikey-s3cret-value",
    }
    send(transport(otel, Upstream(503, httpx.ReadError, 200)), headers=secrets)
    recorded: list[str] = []
    for span in otel.spans():
        recorded.extend(str(v) for v in (span.attributes or {}).values())
        for event in span.events:
            recorded.extend(str(v) for v in (event.attributes or {}).values())
    assert len(otel.spans()) == 3
    for value in secrets.values():
        assert not any(value in text or "s3cret" in text for text in recorded), value


# -- when no spans are made --------------------------------------------------------------------
def test_telemetry_off_makes_no_spans_and_no_metrics(otel: Otel) -> None:
    """Policy(telemetry=False) records neither spans nor metrics."""
    upstream = Upstream(503, 200)
    assert send(transport(otel, upstream, make_policy(telemetry=False))).status_code == 200
    assert otel.spans() == []
    data = otel.reader.get_metrics_data()
    assert data is None or all(not rm.scope_metrics for rm in data.resource_metrics)
    assert upstream.traceparents == [None, None]


def test_suppressed_instrumentation_makes_no_spans(otel: Otel) -> None:
    """Inside suppress_instrumentation() calls work but make no span and send no traceparent."""
    upstream = Upstream(503, 200)
    resilient = transport(otel, upstream)
    with suppress_instrumentation():
        assert send(resilient).status_code == 200
    assert len(upstream.requests) == 2
    assert otel.spans() == []
    assert upstream.traceparents == [None, None]


def test_without_an_sdk_calls_work_and_record_nothing() -> None:
    """With the global no-op providers calls succeed, spans are non-recording, no traceparent."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) or isinstance(
        metrics.get_meter_provider(), MeterProvider
    ):
        pytest.skip("a global OTel SDK provider was set earlier in this process")
    upstream = Upstream(503, 200)
    resilient = ResilientTransport(
        httpx.MockTransport(upstream), policy=make_policy(), clock=FakeClock()
    )
    assert send(resilient).status_code == 200
    assert len(upstream.requests) == 2
    assert not any(span.is_recording() for span in upstream.current_spans)
    assert upstream.traceparents == [None, None]


# -- async -------------------------------------------------------------------------------------
def async_transport(otel: Otel, upstream: Upstream) -> AsyncResilientTransport:
    return AsyncResilientTransport(
        httpx.MockTransport(upstream),
        policy=make_policy(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        clock=FakeClock(),
    )


async def async_send(resilient: AsyncResilientTransport) -> httpx.Response:
    async with httpx.AsyncClient(transport=resilient) as client:
        return await client.get(URL)


@pytest.mark.anyio
async def test_async_each_attempt_gets_one_client_span(otel: Otel) -> None:
    """The async transport also makes one CLIENT span per attempt, with resend counts."""
    await async_send(async_transport(otel, Upstream(503, 503, 200)))
    spans = otel.spans()
    assert [s.kind for s in spans] == [SpanKind.CLIENT] * 3
    counts = [s.attributes.get(sc.HTTP_REQUEST_RESEND_COUNT) for s in spans]  # type: ignore[union-attr]
    assert counts == [None, 1, 2]


@pytest.mark.anyio
async def test_async_traceparent_of_each_attempt_is_its_span(otel: Otel) -> None:
    """The async transport sends each attempt's own traceparent."""
    upstream = Upstream(503, 200)
    await async_send(async_transport(otel, upstream))
    assert upstream.traceparents == [traceparent(s) for s in otel.spans()]


@pytest.mark.anyio
async def test_async_attempt_spans_are_children_of_the_callers_span(otel: Otel) -> None:
    """Async attempt spans are children of the caller's current span."""
    tracer = otel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller") as parent:
        await async_send(async_transport(otel, Upstream(503, 200)))
    parent_id = parent.get_span_context().span_id
    attempts = otel.attempt_spans()
    assert len(attempts) == 2
    assert all(s.parent is not None and s.parent.span_id == parent_id for s in attempts)


def test_each_resend_links_to_the_attempt_before_it(otel: Otel) -> None:
    """Attempt spans of one call are linked in order, even without a parent span."""
    assert send(transport(otel, Upstream(503, 503, 200))).status_code == 200
    first, second, third = otel.spans()
    assert list(first.links) == []
    assert [link.context.span_id for link in second.links] == [first.context.span_id]  # type: ignore[union-attr]
    assert [link.context.span_id for link in third.links] == [second.context.span_id]  # type: ignore[union-attr]
