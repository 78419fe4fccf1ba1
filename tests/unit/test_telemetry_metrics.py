"""The resilience metrics and the HTTP duration metric (in-memory OTel SDK, no sockets)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

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
from resilience_otel._telemetry.otel import Telemetry
from resilience_otel.testing import FakeClock

URL = "https://api.test/v1/quotes"
SERVICE = "quotes"
HTTP = {sc.SERVICE: SERVICE, sc.CLIENT: "http"}

Step = int | type[Exception]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@dataclass
class Otel:
    """Per-test providers: spans are dropped, metrics are read in memory."""

    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def metrics(self) -> dict[str, Metric]:
        """Every metric collected now, by name."""
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` (empty when it was never recorded)."""
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)

    def point(self, name: str, attributes: Mapping[str, object]) -> Any:
        """The single data point of ``name`` with exactly ``attributes``."""
        found = [p for p in self.points(name) if dict(p.attributes) == dict(attributes)]
        assert len(found) == 1, (name, attributes, [dict(p.attributes) for p in self.points(name)])
        return found[0]

    def value(self, name: str, attributes: Mapping[str, object]) -> float:
        """The value of the counter or gauge point of ``name`` with exactly ``attributes``."""
        point = self.point(name, attributes)
        assert isinstance(point, NumberDataPoint)
        return point.value


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh providers for one test; never the global ones."""
    tracer_provider = TracerProvider()
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, reader, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


class Upstream:
    """A MockTransport handler replaying ``steps`` (the last repeats); each takes ``latency``."""

    def __init__(self, *steps: Step, clock: FakeClock | None = None, latency: float = 0.0) -> None:
        self.steps = steps
        self.calls = 0
        self.clock = clock
        self.latency = latency

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.clock is not None:
            self.clock.advance(self.latency)
        step = self.steps[min(self.calls, len(self.steps)) - 1]
        if isinstance(step, int):
            return httpx.Response(step, text="body")
        raise step("upstream failed", request=request)  # type: ignore[call-arg]


def make_policy(*, max_attempts: int = 3, failure_threshold: int = 100) -> Policy:
    """Fixed 0.1 s, 0.2 s backoff, no budget, no call timeout, 30 s reset timeout."""
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
    )


def transport(
    otel: Otel,
    upstream: Upstream,
    policy: Policy | None = None,
    clock: FakeClock | None = None,
    **kwargs: Any,
) -> ResilientTransport:
    return ResilientTransport(
        httpx.MockTransport(upstream),
        policy=policy or make_policy(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        clock=clock or FakeClock(),
        **kwargs,
    )


def send(resilient: ResilientTransport, method: str = "GET", url: str = URL) -> httpx.Response:
    with httpx.Client(transport=resilient) as client:
        return client.request(method, url)


def open_breaker(otel: Otel, **kwargs: Any) -> ResilientTransport:
    """A transport whose breaker one 503 has opened (threshold 1, no retries)."""
    resilient = transport(
        otel, Upstream(503), make_policy(max_attempts=1, failure_threshold=1), **kwargs
    )
    send(resilient)
    return resilient


# -- resilience.calls ----------------------------------------------------------------------------
def test_success_is_counted_with_error_class_none(otel: Otel) -> None:
    """A successful call adds 1 to resilience.calls{outcome=success, error_class=none}."""
    send(transport(otel, Upstream(503, 200)))
    labels = {**HTTP, sc.OUTCOME: "success", sc.ERROR_CLASS: "none"}
    assert otel.value(sc.CALLS[0], labels) == 1
    assert len(otel.points(sc.CALLS[0])) == 1


@pytest.mark.parametrize(
    ("step", "error_class"),
    [(503, "transient"), (404, "permanent"), (507, "critical")],
)
def test_failure_is_counted_with_its_error_class(otel: Otel, step: int, error_class: str) -> None:
    """A failed call adds 1 to resilience.calls{outcome=failure} with its error class."""
    send(transport(otel, Upstream(step)))
    labels = {**HTTP, sc.OUTCOME: "failure", sc.ERROR_CLASS: error_class}
    assert otel.value(sc.CALLS[0], labels) == 1


def test_rejected_call_is_counted(otel: Otel) -> None:
    """A call the open breaker rejects adds 1 to resilience.calls{outcome=rejected}."""
    resilient = open_breaker(otel)
    with pytest.raises(CircuitOpenError):
        send(resilient)
    labels = {**HTTP, sc.OUTCOME: "rejected", sc.ERROR_CLASS: "none"}
    assert otel.value(sc.CALLS[0], labels) == 1


def test_call_duration_is_a_histogram_in_seconds_by_outcome(otel: Otel) -> None:
    """resilience.call.duration (unit s) covers all attempts and waits of the call."""
    clock = FakeClock()
    send(transport(otel, Upstream(503, 200, clock=clock, latency=0.25), clock=clock))
    metric = otel.metrics()[sc.CALL_DURATION[0]]
    assert metric.unit == "s"
    point = otel.point(sc.CALL_DURATION[0], {**HTTP, sc.OUTCOME: "success"})
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 1
    assert point.sum == pytest.approx(0.25 + 0.1 + 0.25)  # attempt, backoff, attempt


# -- retries -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (503, "server_error"),
        (429, "rate_limited"),
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectError, "connection"),
    ],
)
def test_retries_are_counted_by_reason(otel: Otel, step: Step, reason: str) -> None:
    """Each scheduled retry adds 1 to resilience.retries with the failure's reason."""
    send(transport(otel, Upstream(step, 200)))
    assert otel.value(sc.RETRIES[0], {**HTTP, sc.REASON: reason}) == 1


def test_exhausted_retries_are_counted(otel: Otel) -> None:
    """Three 503s with three attempts: two retries and one resilience.retries_exhausted."""
    send(transport(otel, Upstream(503)))
    assert otel.value(sc.RETRIES[0], {**HTTP, sc.REASON: "server_error"}) == 2
    assert otel.value(sc.RETRIES_EXHAUSTED[0], HTTP) == 1


def test_permanent_failure_is_not_counted_as_exhausted(otel: Otel) -> None:
    """A 404 is not retried, so it records no retry and no exhaustion."""
    send(transport(otel, Upstream(404)))
    assert otel.points(sc.RETRIES[0]) == []
    assert otel.points(sc.RETRIES_EXHAUSTED[0]) == []


# -- breaker state and transitions -------------------------------------------------------------
def breaker_states(otel: Otel, service: str = SERVICE) -> dict[str, float]:
    return {
        p.attributes[sc.STATE]: p.value
        for p in otel.points(sc.BREAKER_STATE[0])
        if p.attributes[sc.SERVICE] == service
    }


def test_state_gauge_reports_closed(otel: Otel) -> None:
    """A new breaker reads 1 for closed and 0 for every other state."""
    alive = transport(otel, Upstream(200))  # the gauge watches breakers while they live
    expected = dict.fromkeys(sc.BREAKER_STATE_VALUES, 0)
    assert breaker_states(otel) == {**expected, "closed": 1}
    assert alive.breaker.state.value == "closed"


def test_state_gauge_reports_open(otel: Otel) -> None:
    """An opened breaker reads 1 for open and 0 for every other state."""
    alive = open_breaker(otel)
    expected = dict.fromkeys(sc.BREAKER_STATE_VALUES, 0)
    assert breaker_states(otel) == {**expected, "open": 1}
    assert alive.breaker.state.value == "open"


def test_state_gauge_reports_half_open_after_reset_timeout(otel: Otel) -> None:
    """Once the reset timeout passes, the gauge reads 1 for half_open."""
    clock = FakeClock()
    alive = open_breaker(otel, clock=clock)
    clock.advance(30.0)
    expected = dict.fromkeys(sc.BREAKER_STATE_VALUES, 0)
    assert breaker_states(otel) == {**expected, "half_open": 1}
    assert alive.breaker.current_state.value == "half_open"


def test_state_gauge_unit_and_name(otel: Otel) -> None:
    """The state gauge is resilience.circuit_breaker.state with the semconv unit."""
    alive = transport(otel, Upstream(200))
    assert otel.metrics()[sc.BREAKER_STATE[0]].unit == sc.BREAKER_STATE[1]
    assert alive.breaker is not None


def test_transitions_are_counted(otel: Otel) -> None:
    """Opening the breaker adds 1 to transitions{from_state=closed, to_state=open}."""
    open_breaker(otel)
    labels = {sc.SERVICE: SERVICE, sc.FROM_STATE: "closed", sc.TO_STATE: "open"}
    assert otel.value(sc.BREAKER_TRANSITIONS[0], labels) == 1
    assert len(otel.points(sc.BREAKER_TRANSITIONS[0])) == 1


def test_a_breaker_shared_by_two_transports_is_reported_once(otel: Otel) -> None:
    """Sharing a breaker (breaker=) neither doubles the state gauge nor its transitions."""
    policy = make_policy(max_attempts=1, failure_threshold=1)
    first = transport(otel, Upstream(503), policy)
    second = transport(otel, Upstream(503), policy, breaker=first.breaker)
    send(first)
    expected = dict.fromkeys(sc.BREAKER_STATE_VALUES, 0)
    assert breaker_states(otel) == {**expected, "open": 1}
    labels = {sc.SERVICE: SERVICE, sc.FROM_STATE: "closed", sc.TO_STATE: "open"}
    assert otel.value(sc.BREAKER_TRANSITIONS[0], labels) == 1
    assert second.breaker is first.breaker


# -- dead letters --------------------------------------------------------------------------------
@pytest.mark.parametrize(("step", "reason"), [(503, "retries_exhausted"), (507, "critical")])
def test_dead_letters_are_counted_by_reason(otel: Otel, step: int, reason: str) -> None:
    """A dead-lettered failure adds 1 to resilience.dead_letters with its reason."""
    send(transport(otel, Upstream(step), dead_letters=InMemoryDeadLetterQueue()))
    assert otel.value(sc.DEAD_LETTERS[0], {sc.SERVICE: SERVICE, sc.REASON: reason}) == 1


def test_rejected_call_dead_letter_is_counted(otel: Otel) -> None:
    """A rejected call is dead-lettered with reason circuit_open."""
    resilient = open_breaker(otel, dead_letters=InMemoryDeadLetterQueue())
    with pytest.raises(CircuitOpenError):
        send(resilient)
    labels = {sc.SERVICE: SERVICE, sc.REASON: "circuit_open"}
    assert otel.value(sc.DEAD_LETTERS[0], labels) == 1


def test_full_dead_letter_queue_counts_drops(otel: Otel) -> None:
    """A full queue (maxlen=1) drops the older letter and counts it."""
    queue = InMemoryDeadLetterQueue(maxlen=1)
    resilient = transport(otel, Upstream(507), dead_letters=queue)
    send(resilient)
    assert otel.points(sc.DEAD_LETTERS_DROPPED[0]) == []
    send(resilient)
    assert len(queue) == 1
    assert otel.value(sc.DEAD_LETTERS_DROPPED[0], {sc.SERVICE: SERVICE}) == 1


# -- http.client.request.duration ----------------------------------------------------------------
HTTP_ATTRS = {
    sc.HTTP_REQUEST_METHOD: "GET",
    sc.SERVER_ADDRESS: "api.test",
    sc.SERVER_PORT: 443,
    sc.URL_SCHEME: "https",
}


def test_http_duration_is_recorded_per_attempt(otel: Otel) -> None:
    """A 503 then a 200 give one duration point each, the failed one with error.type."""
    clock = FakeClock()
    send(transport(otel, Upstream(503, 200, clock=clock, latency=0.05), clock=clock))
    assert otel.metrics()[sc.HTTP_CLIENT_REQUEST_DURATION[0]].unit == "s"
    name = sc.HTTP_CLIENT_REQUEST_DURATION[0]
    failed = otel.point(
        name, {**HTTP_ATTRS, sc.HTTP_RESPONSE_STATUS_CODE: 503, sc.ERROR_TYPE: "503"}
    )
    succeeded = otel.point(name, {**HTTP_ATTRS, sc.HTTP_RESPONSE_STATUS_CODE: 200})
    assert (failed.count, succeeded.count) == (1, 1)
    assert failed.sum == pytest.approx(0.05)
    assert len(otel.points(name)) == 2


def test_http_duration_of_an_exception_has_error_type_and_no_status(otel: Otel) -> None:
    """An attempt that raised records error.type = exception class and no status code."""
    send(transport(otel, Upstream(httpx.ConnectError, 200)))
    name = sc.HTTP_CLIENT_REQUEST_DURATION[0]
    assert otel.point(name, {**HTTP_ATTRS, sc.ERROR_TYPE: "ConnectError"}).count == 1


# -- label values --------------------------------------------------------------------------------
ALLOWED: dict[str, frozenset[str]] = {
    sc.CLIENT: sc.CLIENT_VALUES,
    sc.OUTCOME: sc.OUTCOME_VALUES,
    sc.ERROR_CLASS: sc.ERROR_CLASS_VALUES,
    sc.STATE: frozenset(sc.BREAKER_STATE_VALUES),
    sc.FROM_STATE: frozenset(sc.BREAKER_STATE_VALUES),
    sc.TO_STATE: frozenset(sc.BREAKER_STATE_VALUES),
}
REASONS = {
    sc.RETRIES[0]: sc.RETRY_REASON_VALUES,
    sc.DEAD_LETTERS[0]: sc.DEAD_LETTER_REASON_VALUES,
}


def drive_every_outcome(otel: Otel) -> None:
    """Success, transient/permanent/critical failures, every retry reason, rejection."""
    queue = InMemoryDeadLetterQueue(maxlen=1)
    for steps in [
        (200,),
        (503, 429, httpx.ReadTimeout, httpx.ConnectError, 200),
        (404,),
        (507,),
    ]:
        send(transport(otel, Upstream(*steps), make_policy(max_attempts=5), dead_letters=queue))
    resilient = open_breaker(otel, dead_letters=queue)
    with pytest.raises(CircuitOpenError):
        send(resilient)


def test_every_resilience_label_value_is_allowed(otel: Otel) -> None:
    """Every label value of the resilience metrics is in _semconv's allowed value sets."""
    drive_every_outcome(otel)
    checked = 0
    for name, metric in otel.metrics().items():
        if not name.startswith("resilience."):
            continue
        for point in metric.data.data_points:
            for key, value in point.attributes.items():
                if key == sc.SERVICE:
                    assert value == SERVICE
                elif key == sc.REASON:
                    assert value in REASONS[name], (name, value)
                else:
                    assert value in ALLOWED[key], (name, key, value)
                checked += 1
    seen = set(otel.metrics())
    assert {sc.CALLS[0], sc.RETRIES[0], sc.DEAD_LETTERS[0], sc.BREAKER_TRANSITIONS[0]} <= seen
    assert checked > 30


def test_every_retry_reason_seen_is_allowed(otel: Otel) -> None:
    """The mixed run exercises four distinct retry reasons, all allowed ones."""
    drive_every_outcome(otel)
    reasons = {p.attributes[sc.REASON] for p in otel.points(sc.RETRIES[0])}
    assert reasons == {"server_error", "rate_limited", "timeout", "connection"}
    assert reasons <= sc.RETRY_REASON_VALUES


# -- cardinality ---------------------------------------------------------------------------------
def series(otel: Otel) -> set[tuple[str, frozenset[tuple[str, object]]]]:
    """Every (metric, label set) pair collected so far."""
    return {
        (name, frozenset(point.attributes.items()))
        for name, metric in otel.metrics().items()
        for point in metric.data.data_points
    }


@pytest.mark.slow  # 10,000 calls through the transport take a few seconds
def test_distinct_urls_do_not_grow_the_number_of_series(otel: Otel) -> None:
    """10,000 calls to distinct paths and queries keep the series of the first 100 calls."""
    statuses = (200, 200, 404, 500)
    quiet = TracerProvider(sampler=ALWAYS_OFF)  # spans cost time and are not under test here

    def handler(request: httpx.Request) -> httpx.Response:
        index = int(request.url.params["page"])
        return httpx.Response(statuses[index % len(statuses)])

    resilient = ResilientTransport(
        httpx.MockTransport(handler),
        policy=make_policy(max_attempts=2, failure_threshold=1_000_000),
        tracer_provider=quiet,
        meter_provider=otel.meter_provider,
        clock=FakeClock(),
    )
    after_100: set[tuple[str, frozenset[tuple[str, object]]]] = set()
    for i in range(10_000):
        request = httpx.Request("GET", f"https://api.test/orders/{i}?page={i}&token=t{i}")
        resilient.handle_request(request).close()
        if i == 99:
            after_100 = series(otel)
    final = series(otel)
    assert final == after_100
    assert len(final) >= 10
    labels = {str(value) for _, attrs in final for _, value in attrs}
    assert not any("orders" in value or "page" in value for value in labels)
    calls = sum(p.value for p in otel.points(sc.CALLS[0]))
    assert calls == 10_000


# -- instruments created once ----------------------------------------------------------------------
def test_transports_with_the_same_providers_share_telemetry(otel: Otel) -> None:
    """Telemetry.get returns one object per provider pair, used by every transport."""
    sync = transport(otel, Upstream(200))
    other = transport(otel, Upstream(200))
    shared = Telemetry.get(otel.tracer_provider, otel.meter_provider)
    assert sync._shell.engine.telemetry is shared
    assert other._shell.engine.telemetry is shared


def test_transports_sharing_a_meter_provider_all_report_breaker_state(otel: Otel) -> None:
    """Two services on one meter provider both appear in the single state gauge."""
    alive = [
        ResilientTransport(
            httpx.MockTransport(Upstream(200)),
            policy=Policy(service=service),
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
        for service in ("alpha", "beta")
    ]
    assert breaker_states(otel, "alpha")["closed"] == 1
    assert breaker_states(otel, "beta")["closed"] == 1
    assert len(alive) == 2


def test_second_transport_creates_no_duplicate_instruments(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """Two transports on one meter provider log no OTel warning and count into one series."""
    # SDK 1.45 warns only on *conflicting* re-registrations; an identical duplicate is silent
    # but drops the second observable-gauge callback, which the gauge test above catches.
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    first = transport(otel, Upstream(200))
    second = transport(otel, Upstream(200))
    send(first)
    send(second)
    assert otel.value(sc.CALLS[0], {**HTTP, sc.OUTCOME: "success", sc.ERROR_CLASS: "none"}) == 2
    warnings = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert warnings == []


# -- async ---------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_calls_and_retries_are_counted(otel: Otel) -> None:
    """The async transport records the same call, retry and HTTP duration metrics."""
    resilient = AsyncResilientTransport(
        httpx.MockTransport(Upstream(503, 200)),
        policy=make_policy(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        clock=FakeClock(),
    )
    async with httpx.AsyncClient(transport=resilient) as client:
        await client.get(URL)
    assert otel.value(sc.CALLS[0], {**HTTP, sc.OUTCOME: "success", sc.ERROR_CLASS: "none"}) == 1
    assert otel.value(sc.RETRIES[0], {**HTTP, sc.REASON: "server_error"}) == 1
    assert len(otel.points(sc.HTTP_CLIENT_REQUEST_DURATION[0])) == 2
