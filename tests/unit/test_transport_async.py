"""AsyncResilientTransport: the retry/breaker engine driven through httpx.MockTransport.

Kept parallel to test_transport_sync.py (same test names where the behaviour is shared).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    DeadLetter,
    DeadLetterReason,
    ErrorClass,
    FailureKind,
    InMemoryDeadLetterQueue,
    Jitter,
    Observer,
    Policy,
    RetriesExhaustedError,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
    StateChange,
)
from resilience_otel.testing import FakeClock

pytestmark = pytest.mark.anyio

URL = "http://api.test/v1/items"
WALL_START = 1_767_225_600.0  # FakeClock's default wall time
HANG = "hang"
"""An Upstream step that blocks until the attempt is cancelled."""

Step = int | str | type[BaseException] | Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A MockTransport handler replaying ``steps`` (the last one repeats) and recording requests.

    A step is a status code (a response whose body says which attempt it was), an exception
    type (raised, with the request when it is an httpx error), a callable building a response,
    or ``HANG`` (wait on an event that never fires; ``hanging`` is set when it starts).
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[httpx.Request] = []
        self.hanging = asyncio.Event()

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        n = len(self.requests)
        step = self.steps[min(n, len(self.steps)) - 1]
        if isinstance(step, int):
            return httpx.Response(step, text=f"attempt {n}")
        if step == HANG:
            self.hanging.set()
            await asyncio.Event().wait()
        if isinstance(step, type):
            if issubclass(step, httpx.RequestError):
                raise step(f"attempt {n}", request=request)
            raise step()
        assert callable(step)
        return step(request)


class ScriptedBody(httpx.AsyncByteStream):
    """A response body that yields bytes or raises exceptions, in order; records aclose()."""

    def __init__(self, *parts: bytes | Exception) -> None:
        self.parts = parts
        self.iterated = False
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.iterated = True
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                raise part

    async def aclose(self) -> None:
        self.closed = True


class Recorder(Observer):
    """Records every hook call as ``(hook, args)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def of(self, hook: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.events if name == hook]

    def retry_scheduled(self, *args: Any) -> None:
        self.events.append(("retry_scheduled", args))

    def call_rejected(self, *args: Any) -> None:
        self.events.append(("call_rejected", args))

    def call_finished(self, *args: Any) -> None:
        self.events.append(("call_finished", args))

    def retries_exhausted(self, *args: Any) -> None:
        self.events.append(("retries_exhausted", args))

    def dead_lettered(self, *args: Any) -> None:
        self.events.append(("dead_lettered", args))

    def state_changed(self, *args: Any) -> None:
        self.events.append(("state_changed", args))


class Exploding(Observer):
    """An observer whose every hook raises."""

    def _boom(self, *args: Any) -> None:
        raise RuntimeError("observer bug")

    retry_scheduled = call_rejected = call_finished = _boom
    retries_exhausted = dead_lettered = state_changed = _boom


def make_policy(
    *,
    breaker: BreakerConfig | None = None,
    dead_letter_on: frozenset[DeadLetterReason] | None = None,
    **retry: Any,
) -> Policy:
    """A policy with exact (unjittered) backoff from 0.5 s and a breaker that stays closed."""
    retry_config = RetryConfig(**{"jitter": Jitter.NONE, "base_delay": 0.5, **retry})
    extra: dict[str, Any] = {} if dead_letter_on is None else {"dead_letter_on": dead_letter_on}
    return Policy(
        service="svc",
        breaker=breaker or BreakerConfig(failure_threshold=100, call_timeout=None),
        retry=retry_config,
        **extra,
    )


def tripping(threshold: int = 1, **kwargs: Any) -> BreakerConfig:
    """A breaker opening after ``threshold`` failures, resetting after 30 s."""
    return BreakerConfig(
        failure_threshold=threshold, reset_timeout=30.0, call_timeout=None, **kwargs
    )


def make_transport(
    upstream: Callable[[httpx.Request], Awaitable[httpx.Response]],
    clock: FakeClock,
    policy: Policy | None = None,
    **kwargs: Any,
) -> AsyncResilientTransport:
    return AsyncResilientTransport(
        httpx.MockTransport(upstream),
        policy=policy or make_policy(),
        clock=clock,
        rng=random.Random(0),
        **kwargs,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dlq() -> InMemoryDeadLetterQueue:
    return InMemoryDeadLetterQueue()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def open_breaker(client: httpx.AsyncClient) -> None:
    """Trip a threshold-1 breaker with one 503 (the upstream must answer 503 first)."""
    assert (await client.get(URL)).status_code == 503


# -- retries on responses ----------------------------------------------------------------------
@pytest.mark.parametrize("status", [503, 502, 500, 504, 408, 429])
async def test_retryable_status_is_retried_until_success(status: int, clock: FakeClock) -> None:
    """Two retryable responses then 200: three requests, backoff 0.5 then 1.0 s."""
    upstream = Upstream(status, status, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert response.text == "attempt 3"
    assert upstream.calls == 3
    assert clock.sleeps == [0.5, 1.0]


async def test_backoff_delays_are_capped_at_max_delay(clock: FakeClock) -> None:
    """Delays follow base_delay * multiplier**n and never exceed max_delay."""
    upstream = Upstream(503, 503, 503, 503, 200)
    policy = make_policy(max_attempts=5, base_delay=1.0, multiplier=10.0, max_delay=5.0)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        assert (await client.get(URL)).status_code == 200
    assert clock.sleeps == [1.0, 5.0, 5.0, 5.0]


async def test_last_retryable_response_is_returned_after_max_attempts(clock: FakeClock) -> None:
    """After max_attempts 503s the caller gets the last 503 response, not an exception."""
    upstream = Upstream(503)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        response = await client.get(URL)
    assert response.status_code == 503
    assert response.text == "attempt 3"
    assert upstream.calls == 3


async def test_discarded_responses_are_closed_before_resending(clock: FakeClock) -> None:
    """Each discarded response is closed before the next attempt is sent."""
    bodies: list[ScriptedBody] = []
    closed_when_resent: list[bool] = []

    def respond(request: httpx.Request) -> httpx.Response:
        if bodies:
            closed_when_resent.append(bodies[-1].closed)
        bodies.append(ScriptedBody(b"busy"))
        return httpx.Response(503, stream=bodies[-1])

    transport = make_transport(Upstream(respond), clock, read_body=False)
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        assert response.stream is not None
        assert not bodies[-1].closed
    assert len(bodies) == 3
    assert closed_when_resent == [True, True]


# -- retries on exceptions ---------------------------------------------------------------------
@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout])
async def test_transport_error_is_retried_until_success(
    error: type[httpx.TransportError], clock: FakeClock
) -> None:
    """Connect errors and timeouts are retried; the third attempt's response is returned."""
    upstream = Upstream(error, error, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.get(URL)).status_code == 200
    assert upstream.calls == 3


async def test_exhausted_error_is_retries_exhausted_and_original_type(clock: FakeClock) -> None:
    """After the last ReadTimeout the error is both RetriesExhaustedError and ReadTimeout."""
    upstream = Upstream(httpx.ReadTimeout)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get(URL)
    error = info.value
    assert isinstance(error, RetriesExhaustedError)
    assert error.attempts == 3
    assert error.service == "svc"
    assert type(error.last_error) is httpx.ReadTimeout
    assert str(error.last_error) == "attempt 3"
    assert error.__cause__ is error.last_error
    assert error.request is upstream.requests[-1]
    assert any("gave up after 3 attempt(s)" in note for note in error.__notes__)
    assert upstream.calls == 3


async def test_single_attempt_failure_raises_the_original_error(clock: FakeClock) -> None:
    """With max_attempts=1 the caller gets the ReadTimeout itself, not RetriesExhaustedError."""
    upstream = Upstream(httpx.ReadTimeout)
    transport = make_transport(upstream, clock, make_policy(max_attempts=1))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get(URL)
    assert type(info.value) is httpx.ReadTimeout
    assert str(info.value) == "attempt 1"
    assert info.value.request is upstream.requests[0]
    assert upstream.calls == 1


async def test_retry_refused_by_total_timeout_raises_the_original_error(clock: FakeClock) -> None:
    """A retryable error whose backoff does not fit total_timeout is raised as it is."""
    upstream = Upstream(httpx.ConnectError, 200)
    transport = make_transport(upstream, clock, make_policy(total_timeout=0.4))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(URL)
    assert type(info.value) is httpx.ConnectError
    assert str(info.value) == "attempt 1"
    assert upstream.calls == 1


# -- what is not retried -------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_permanent_status_is_not_retried_nor_counted(status: int, clock: FakeClock) -> None:
    """A PERMANENT 4xx is returned at once and leaves a threshold-1 breaker closed."""
    upstream = Upstream(status)
    transport = make_transport(upstream, clock, make_policy(breaker=tripping(1)))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == status
    assert upstream.calls == 1
    assert transport.breaker.state is BreakerState.CLOSED
    assert transport.breaker.snapshot().failures == 0


async def test_critical_status_is_not_retried_but_counts(clock: FakeClock) -> None:
    """A 507 (CRITICAL) is not retried and opens a threshold-1 breaker."""
    upstream = Upstream(507)
    transport = make_transport(upstream, clock, make_policy(breaker=tripping(1)))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 507
    assert upstream.calls == 1
    assert transport.breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("error", [httpx.UnsupportedProtocol, httpx.LocalProtocolError])
async def test_local_errors_propagate_unchanged(
    error: type[httpx.TransportError], clock: FakeClock
) -> None:
    """Errors made on our side are raised as they are, after one attempt."""
    upstream = Upstream(error)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        with pytest.raises(error) as info:
            await client.get(URL)
    assert type(info.value) is error
    assert upstream.calls == 1


# -- retry safety ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_request_not_retried_after_response(
    method: str, clock: FakeClock
) -> None:
    """POST/PATCH answered 503 are not resent; the 503 is returned."""
    upstream = Upstream(503, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.request(method, URL, content=b"{}")).status_code == 503
    assert upstream.calls == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_request_not_retried_after_read_timeout(
    method: str, clock: FakeClock
) -> None:
    """POST/PATCH that may have reached the server raise the plain ReadTimeout at once."""
    upstream = Upstream(httpx.ReadTimeout, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.request(method, URL, content=b"{}")
    assert not isinstance(info.value, RetriesExhaustedError)
    assert upstream.calls == 1


async def test_post_with_idempotency_key_is_retried(clock: FakeClock) -> None:
    """An Idempotency-Key header makes a POST safe to resend."""
    upstream = Upstream(503, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        response = await client.post(URL, content=b"{}", headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200
    assert upstream.calls == 2


async def test_post_is_retried_after_connect_error(clock: FakeClock) -> None:
    """A POST that never left (ConnectError) is resent with the same body."""
    upstream = Upstream(httpx.ConnectError, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.post(URL, content=b'{"qty": 1}')).status_code == 200
    assert [r.content for r in upstream.requests] == [b'{"qty": 1}', b'{"qty": 1}']


async def _chunks() -> AsyncIterator[bytes]:
    yield b"a"
    yield b"b"


async def test_streamed_body_is_never_resent(clock: FakeClock) -> None:
    """A PUT with a one-shot async iterator body is not resent after a 503."""
    upstream = Upstream(503, 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.put(URL, content=_chunks())).status_code == 503
    assert upstream.calls == 1


# -- Retry-After ----------------------------------------------------------------------------
def _with_retry_after(status: int, value: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, headers={"Retry-After": value})


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_honoured(status: int, clock: FakeClock) -> None:
    """Retry-After: 7 makes the engine wait exactly 7 s instead of backing off."""
    upstream = Upstream(_with_retry_after(status, "7"), 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.get(URL)).status_code == 200
    assert clock.sleeps == [7.0]


async def test_retry_after_http_date_is_honoured(clock: FakeClock) -> None:
    """A Retry-After HTTP date about 30 s ahead makes the engine wait about 30 s."""
    # The classifier reads the transport's (fake) wall clock, so the date is built from it.
    when = email.utils.formatdate(clock.time() + 30, usegmt=True)
    upstream = Upstream(_with_retry_after(429, when), 200)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.get(URL)).status_code == 200
    assert len(clock.sleeps) == 1
    assert clock.sleeps == [30.0]


async def test_retry_after_above_cap_stops_retrying(clock: FakeClock) -> None:
    """A Retry-After longer than max_retry_after ends the call with that 429."""
    upstream = Upstream(_with_retry_after(429, "120"), 200)
    policy = make_policy(max_retry_after=60.0)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        assert (await client.get(URL)).status_code == 429
    assert upstream.calls == 1
    assert clock.sleeps == []


async def test_retry_after_ignored_when_not_respected(clock: FakeClock) -> None:
    """With respect_retry_after=False the engine backs off as usual."""
    upstream = Upstream(_with_retry_after(429, "7"), 200)
    policy = make_policy(respect_retry_after=False)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        assert (await client.get(URL)).status_code == 200
    assert clock.sleeps == [0.5]


# -- per-kind overrides, deadline, budget ---------------------------------------------------
def _by_kind_policy() -> Policy:
    override = {FailureKind.RATE_LIMITED: RetryOverride(max_attempts=5)}
    return make_policy(max_attempts=2, by_kind=override)


async def test_by_kind_override_raises_attempts_for_rate_limits(clock: FakeClock) -> None:
    """RATE_LIMITED gets its own max_attempts=5 while the default is 2."""
    upstream = Upstream(429)
    async with httpx.AsyncClient(
        transport=make_transport(upstream, clock, _by_kind_policy())
    ) as client:
        assert (await client.get(URL)).status_code == 429
    assert upstream.calls == 5


async def test_by_kind_override_leaves_other_kinds_alone(clock: FakeClock) -> None:
    """A SERVER_ERROR still stops after the default two attempts."""
    upstream = Upstream(503)
    async with httpx.AsyncClient(
        transport=make_transport(upstream, clock, _by_kind_policy())
    ) as client:
        assert (await client.get(URL)).status_code == 503
    assert upstream.calls == 2


async def test_total_timeout_never_sleeps_past_the_deadline(clock: FakeClock) -> None:
    """With a 5 s deadline, backoff 1 s and 2 s are taken and 4 s more is refused."""
    upstream = Upstream(503)
    policy = make_policy(max_attempts=10, base_delay=1.0, total_timeout=5.0)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        assert (await client.get(URL)).status_code == 503
    assert clock.sleeps == [1.0, 2.0]
    assert sum(clock.sleeps) < 5.0
    assert upstream.calls == 3


async def test_total_timeout_cuts_attempt_timeouts_to_fit(clock: FakeClock) -> None:
    """Each attempt's read timeout is cut to the time left before the deadline."""
    seen: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])  # the request object is reused
        return httpx.Response(503)

    policy = make_policy(max_attempts=10, base_delay=1.0, total_timeout=5.0)
    transport = make_transport(Upstream(record), clock, policy)
    async with httpx.AsyncClient(transport=transport, timeout=30.0) as client:
        await client.get(URL)
    assert seen == [5.0, 4.0, 2.0]


async def test_retry_budget_stops_retries_once_spent(clock: FakeClock) -> None:
    """A budget of 2 retries per 10 s: the first call uses both, later calls get none."""
    upstream = Upstream(503)
    budget = RetryBudgetConfig(ratio=0.0, min_retries_per_second=0.2, window=10.0)
    policy = make_policy(max_attempts=3, base_delay=0.01, budget=budget)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        for _ in range(5):
            assert (await client.get(URL)).status_code == 503
    assert upstream.calls == 3 + 4


# -- the breaker through the transport -------------------------------------------------------
async def test_breaker_opens_after_failure_threshold(clock: FakeClock) -> None:
    """Two failures open a threshold-2 breaker; the next call never reaches the upstream."""
    upstream = Upstream(503)
    policy = make_policy(max_attempts=1, breaker=tripping(2))
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        await client.get(URL)
        await client.get(URL)
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    assert upstream.calls == 2


async def test_circuit_open_error_is_an_httpx_transport_error(clock: FakeClock) -> None:
    """The rejection is catchable as httpx.TransportError and carries service and retry_after."""
    upstream = Upstream(503)
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        await open_breaker(client)
        clock.advance(10.0)
        with pytest.raises(httpx.TransportError) as info:
            await client.get(URL)
    error = info.value
    assert isinstance(error, CircuitOpenError)
    assert error.service == "svc"
    assert error.retry_after == pytest.approx(20.0)
    assert upstream.calls == 1


async def test_probe_after_reset_timeout_closes_breaker(clock: FakeClock) -> None:
    """After reset_timeout one probe reaches the upstream and its success closes the breaker."""
    upstream = Upstream(503, 200)
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    transport = make_transport(upstream, clock, policy)
    async with httpx.AsyncClient(transport=transport) as client:
        await open_breaker(client)
        clock.advance(30.0)
        assert (await client.get(URL)).status_code == 200
    assert upstream.calls == 2
    assert transport.breaker.state is BreakerState.CLOSED


async def test_breaker_opening_mid_retry_stops_the_loop(clock: FakeClock) -> None:
    """When an attempt opens the breaker no further attempt is made."""
    upstream = Upstream(503)
    policy = make_policy(max_attempts=5, breaker=tripping(2))
    transport = make_transport(upstream, clock, policy)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 503
    assert upstream.calls == 2
    assert clock.sleeps == [0.5]
    assert transport.breaker.state is BreakerState.OPEN


# -- call_timeout ---------------------------------------------------------------------------
def _timed_policy(max_attempts: int, call_timeout: float = 1.0) -> Policy:
    return make_policy(
        max_attempts=max_attempts,
        breaker=BreakerConfig(failure_threshold=100, call_timeout=call_timeout),
    )


# The two tests below are the only unit tests that wait for real: asyncio.timeout(0.05).
async def test_stalled_attempt_times_out_and_is_retried(clock: FakeClock) -> None:
    """An attempt slower than call_timeout is cancelled; the retry's response is returned."""
    upstream = Upstream(HANG, 200)
    transport = make_transport(upstream, clock, _timed_policy(3, call_timeout=0.05))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert response.text == "attempt 2"
    assert upstream.calls == 2


async def test_stalled_attempt_fails_as_read_timeout(clock: FakeClock) -> None:
    """An attempt exceeding call_timeout surfaces as httpx.ReadTimeout after the retries."""
    upstream = Upstream(HANG)
    transport = make_transport(upstream, clock, _timed_policy(2, call_timeout=0.05))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout, match="call_timeout"):
            await client.get(URL)
    assert upstream.calls == 2


async def test_attempt_timeout_extension_is_capped_to_call_timeout(clock: FakeClock) -> None:
    """The inner transport sees each httpx timeout capped to call_timeout (smaller ones kept)."""
    upstream = Upstream(200)
    transport = make_transport(upstream, clock, _timed_policy(1))
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(10.0, connect=0.5)
    ) as client:
        await client.get(URL)
    assert upstream.requests[0].extensions["timeout"] == {
        "connect": 0.5,
        "read": 1.0,
        "write": 1.0,
        "pool": 1.0,
    }


# -- reading the body -------------------------------------------------------------------------
def _truncated(request: httpx.Request) -> httpx.Response:
    body = ScriptedBody(b"par", httpx.RemoteProtocolError("peer closed connection"))
    return httpx.Response(200, stream=body)


def _full(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text="full body")


async def test_truncated_body_is_retried_for_get(clock: FakeClock) -> None:
    """A body cut short by the server is retried; the caller gets the complete one."""
    upstream = Upstream(_truncated, _full)
    async with httpx.AsyncClient(transport=make_transport(upstream, clock)) as client:
        assert (await client.get(URL)).text == "full body"
    assert upstream.calls == 2


async def test_truncated_body_reaches_caller_when_read_body_off(clock: FakeClock) -> None:
    """With read_body=False the body is read by the caller, so truncation is not retried."""
    upstream = Upstream(_truncated, _full)
    transport = make_transport(upstream, clock, read_body=False)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(URL)
    assert upstream.calls == 1


async def test_response_is_returned_unread_when_read_body_off(clock: FakeClock) -> None:
    """With read_body=False the transport hands back the upstream body without touching it."""
    body = ScriptedBody(b"payload")
    upstream = Upstream(lambda request: httpx.Response(200, stream=body))
    transport = make_transport(upstream, clock, read_body=False)
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        assert not body.iterated
        assert await response.aread() == b"payload"


# -- cancellation ---------------------------------------------------------------------------
async def test_cancellation_propagates_unretried(clock: FakeClock) -> None:
    """Cancelling the caller during an attempt raises CancelledError at once, with no retry."""
    upstream = Upstream(HANG, 200)
    policy = make_policy(breaker=BreakerConfig(failure_threshold=100, call_timeout=10.0))
    async with httpx.AsyncClient(transport=make_transport(upstream, clock, policy)) as client:
        task = asyncio.create_task(client.get(URL))
        await upstream.hanging.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert upstream.calls == 1
    assert clock.sleeps == []


async def test_cancellation_releases_half_open_probe(clock: FakeClock) -> None:
    """A cancelled half-open probe frees its slot: the next call is admitted."""
    upstream = Upstream(503, HANG, 200)
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    transport = make_transport(upstream, clock, policy)
    async with httpx.AsyncClient(transport=transport) as client:
        await open_breaker(client)
        clock.advance(30.0)
        task = asyncio.create_task(client.get(URL))
        await upstream.hanging.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await client.get(URL)).status_code == 200
    assert upstream.calls == 3
    assert transport.breaker.state is BreakerState.CLOSED


# -- dead letters ---------------------------------------------------------------------------
async def test_dead_letter_on_exhausted_retries(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """Exhausted retries leave one entry describing the call, timed by the fake wall clock."""
    policy = make_policy(max_attempts=2, base_delay=1.0)
    transport = make_transport(Upstream(503), clock, policy, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    [letter] = dlq.entries()
    assert letter.service == "svc"
    assert letter.operation == f"GET {URL}"
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.error_class == "transient"
    assert letter.error_type == "503"
    assert letter.message == "HTTP 503 Service Unavailable"
    assert letter.attempts == 2
    assert letter.first_attempt_at == WALL_START
    assert letter.failed_at == WALL_START + 1.0
    assert re.fullmatch(r"[0-9a-f]{32}", letter.id)


async def test_dead_letter_on_exhausted_exception(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """An exhausted exception is recorded with its class name and message."""
    transport = make_transport(Upstream(httpx.ConnectError), clock, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(URL)
    [letter] = dlq.entries()
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.error_type == "ConnectError"
    assert letter.message == "ConnectError: attempt 3"
    assert letter.attempts == 3


async def test_dead_letter_on_circuit_open(clock: FakeClock, dlq: InMemoryDeadLetterQueue) -> None:
    """A rejection by the open breaker is recorded with zero attempts."""
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    transport = make_transport(Upstream(503), clock, policy, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await open_breaker(client)
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    letter = dlq.entries()[-1]
    assert letter.reason is DeadLetterReason.CIRCUIT_OPEN
    assert letter.operation == f"GET {URL}"
    assert letter.error_type == "CircuitOpenError"
    assert letter.error_class == "transient"
    assert letter.attempts == 0
    assert letter.failed_at == WALL_START


async def test_dead_letter_on_critical_failure(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """A CRITICAL 507 is recorded as critical after one attempt."""
    transport = make_transport(Upstream(507), clock, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    [letter] = dlq.entries()
    assert letter.reason is DeadLetterReason.CRITICAL
    assert letter.error_class == "critical"
    assert letter.error_type == "507"
    assert letter.attempts == 1


async def test_permanent_failure_not_dead_lettered_by_default(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """A 404 is not recorded under the default dead_letter_on."""
    transport = make_transport(Upstream(404), clock, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert dlq.entries() == []


async def test_permanent_failure_dead_lettered_when_configured(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """With PERMANENT in dead_letter_on a 404 is recorded."""
    policy = make_policy(dead_letter_on=frozenset({DeadLetterReason.PERMANENT}))
    transport = make_transport(Upstream(404), clock, policy, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    [letter] = dlq.entries()
    assert letter.reason is DeadLetterReason.PERMANENT
    assert letter.error_class == "permanent"
    assert letter.error_type == "404"


async def test_dead_letter_redacts_url_and_omits_headers(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """Userinfo, api_key values and the Authorization header never reach the entry."""
    url = "http://alice:hunter2@api.test/v1/items?api_key=sekrit&page=2"
    transport = make_transport(Upstream(503), clock, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(url, headers={"Authorization": "Bearer tok-abc123"})
    [letter] = dlq.entries()
    assert letter.operation == (
        "GET http://REDACTED:REDACTED@api.test/v1/items?api_key=REDACTED&page=2"
    )
    text = repr(letter)
    for secret in ("alice", "hunter2", "sekrit", "tok-abc123", "YWxpY2U6aHVudGVyMg"):
        assert secret not in text


async def test_dead_letter_redacts_urls_in_error_messages(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """An exception message quoting a URL with credentials is redacted in the entry."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("cannot reach http://bob:s3cret@api.test/ now", request=request)

    transport = make_transport(Upstream(refuse), clock, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(URL)
    [letter] = dlq.entries()
    assert "s3cret" not in letter.message
    assert "http://REDACTED:REDACTED@api.test/" in letter.message


async def test_dead_letter_keeps_payload_when_asked(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """keep_payload=True stores the POST body for replay."""
    transport = make_transport(Upstream(503), clock, dead_letters=dlq, keep_payload=True)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post(URL, content=b'{"qty": 1}')
    [letter] = dlq.entries()
    assert letter.operation == f"POST {URL}"
    assert letter.payload == b'{"qty": 1}'


async def test_dead_letter_omits_payload_by_default(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """Without keep_payload the body is not stored."""
    transport = make_transport(Upstream(503), clock, dead_letters=dlq)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post(URL, content=b'{"qty": 1}')
    [letter] = dlq.entries()
    assert letter.payload is None
    assert b'{"qty": 1}' not in repr(letter).encode()


async def test_dead_letter_records_active_trace_id(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """Inside an active span the entry carries that span's trace id."""
    transport = make_transport(Upstream(507), clock, dead_letters=dlq)
    tracer = TracerProvider().get_tracer("t")
    async with httpx.AsyncClient(transport=transport) as client:
        with tracer.start_as_current_span("caller") as span:
            await client.get(URL)
        await client.get(URL)
    inside, outside = dlq.entries()
    assert inside.trace_id == format(span.get_span_context().trace_id, "032x")
    assert outside.trace_id is None


# -- per-host breakers ----------------------------------------------------------------------
async def test_per_host_breakers_are_independent(clock: FakeClock) -> None:
    """One host's open breaker does not reject calls to another host."""
    upstream = Upstream(lambda r: httpx.Response(503 if r.url.host == "a.test" else 200))
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    async with httpx.AsyncClient(
        transport=make_transport(upstream, clock, policy, per_host=True)
    ) as client:
        assert (await client.get("http://a.test/")).status_code == 503
        assert (await client.get("http://b.test/")).status_code == 200
        with pytest.raises(CircuitOpenError) as info:
            await client.get("http://a.test/")
    assert info.value.service == "svc:a.test"
    assert upstream.calls == 2


async def test_hosts_beyond_max_hosts_share_policy_breaker(clock: FakeClock) -> None:
    """With max_hosts=1, a second and a third host share the policy's breaker."""
    upstream = Upstream(lambda r: httpx.Response(503 if r.url.host == "b.test" else 200))
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    transport = make_transport(upstream, clock, policy, per_host=True, max_hosts=1)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://a.test/")).status_code == 200
        assert (await client.get("http://b.test/")).status_code == 503
        with pytest.raises(CircuitOpenError):
            await client.get("http://c.test/")
        assert (await client.get("http://a.test/")).status_code == 200
    assert transport.breaker.state is BreakerState.OPEN


async def test_breakers_lists_policy_and_host_breakers(clock: FakeClock) -> None:
    """breakers() returns the policy breaker then one per host seen, names included."""
    transport = make_transport(Upstream(200), clock, per_host=True)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://a.test/")
        await client.get("http://b.test:8080/")
        await client.get("http://a.test/other")
    assert [b.name for b in transport.breakers()] == ["svc", "svc:a.test", "svc:b.test:8080"]


# -- observers ------------------------------------------------------------------------------
async def test_observer_sees_retry_scheduled(clock: FakeClock) -> None:
    """retry_scheduled gets service, client, attempt, delay and the failure kind."""
    recorder = Recorder()
    upstream = Upstream(503, httpx.ReadTimeout, 200)
    async with httpx.AsyncClient(
        transport=make_transport(upstream, clock, observers=[recorder])
    ) as client:
        await client.get(URL)
    assert recorder.of("retry_scheduled") == [
        ("svc", "http", 1, 0.5, FailureKind.SERVER_ERROR),
        ("svc", "http", 2, 1.0, FailureKind.TIMEOUT),
    ]


async def test_observer_sees_call_finished(clock: FakeClock) -> None:
    """call_finished reports the outcome, attempts and the duration over all attempts."""
    recorder = Recorder()
    upstream = Upstream(503, 200)
    async with httpx.AsyncClient(
        transport=make_transport(upstream, clock, observers=[recorder])
    ) as client:
        await client.get(URL)
    assert recorder.of("call_finished") == [("svc", "http", "success", None, 2, 0.5)]


async def test_observer_sees_retries_exhausted(clock: FakeClock) -> None:
    """retries_exhausted and a failed call_finished follow the last retryable failure."""
    recorder = Recorder()
    async with httpx.AsyncClient(
        transport=make_transport(Upstream(503), clock, observers=[recorder])
    ) as client:
        await client.get(URL)
    assert recorder.of("retries_exhausted") == [("svc", "http", 3)]
    assert recorder.of("call_finished") == [
        ("svc", "http", "failure", ErrorClass.TRANSIENT, 3, 1.5)
    ]


async def test_observer_sees_call_rejected(clock: FakeClock) -> None:
    """call_rejected carries the breaker's retry_after; call_finished says rejected."""
    recorder = Recorder()
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    transport = make_transport(Upstream(503), clock, policy, observers=[recorder])
    async with httpx.AsyncClient(transport=transport) as client:
        await open_breaker(client)
        clock.advance(5.0)
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    assert recorder.of("call_rejected") == [("svc", "http", 25.0)]
    assert recorder.of("call_finished")[-1] == ("svc", "http", "rejected", None, 0, 0.0)


async def test_observer_sees_dead_lettered(clock: FakeClock, dlq: InMemoryDeadLetterQueue) -> None:
    """dead_lettered receives the letter that was queued."""
    recorder = Recorder()
    transport = make_transport(Upstream(507), clock, dead_letters=dlq, observers=[recorder])
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    [(letter,)] = recorder.of("dead_lettered")
    assert isinstance(letter, DeadLetter)
    [stored] = dlq.entries()
    assert (letter.reason, letter.operation, letter.attempts) == (
        stored.reason,
        stored.operation,
        stored.attempts,
    )


async def test_observer_sees_state_changed(clock: FakeClock) -> None:
    """state_changed reports each transition of the breaker with its time."""
    recorder = Recorder()
    policy = make_policy(max_attempts=1, breaker=tripping(1))
    upstream = Upstream(503, 200)
    transport = make_transport(upstream, clock, policy, observers=[recorder])
    async with httpx.AsyncClient(transport=transport) as client:
        await open_breaker(client)
        clock.advance(30.0)
        await client.get(URL)
    assert recorder.of("state_changed") == [
        ("svc", StateChange("svc", BreakerState.CLOSED, BreakerState.OPEN, 1000.0)),
        ("svc", StateChange("svc", BreakerState.OPEN, BreakerState.HALF_OPEN, 1030.0)),
        ("svc", StateChange("svc", BreakerState.HALF_OPEN, BreakerState.CLOSED, 1030.0)),
    ]


async def test_raising_observer_does_not_break_the_call(
    clock: FakeClock, dlq: InMemoryDeadLetterQueue
) -> None:
    """Observer exceptions are swallowed (logged): retries and the response are unaffected."""
    policy = make_policy(breaker=tripping(3))
    upstream = Upstream(503)
    transport = make_transport(upstream, clock, policy, dead_letters=dlq, observers=[Exploding()])
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(URL)).status_code == 503
        with pytest.raises(CircuitOpenError):
            await client.get(URL)
    assert upstream.calls == 3
    assert len(dlq) == 2


# -- the wrapped transport ------------------------------------------------------------------
class Tracked(httpx.AsyncBaseTransport):
    """An inner transport recording how it is entered, exited and closed."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    async def __aenter__(self) -> Tracked:
        self.events.append("enter")
        return self

    async def __aexit__(self, *args: object) -> None:
        self.events.append("exit")
        await self.aclose()

    async def aclose(self) -> None:
        self.events.append("close")


async def test_with_client_enters_and_exits_the_inner_transport(clock: FakeClock) -> None:
    """`async with client:` runs the inner transport's __aenter__ and __aexit__."""
    inner = Tracked()
    transport = AsyncResilientTransport(inner, policy=make_policy(), clock=clock)
    async with httpx.AsyncClient(transport=transport):
        assert inner.events == ["enter"]
    assert inner.events == ["enter", "exit", "close"]


async def test_entering_the_transport_returns_it(clock: FakeClock) -> None:
    """`async with transport as t:` gives back the resilient transport itself."""
    transport = AsyncResilientTransport(Tracked(), policy=make_policy(), clock=clock)
    async with transport as entered:
        assert entered is transport


async def test_inner_transport_is_exposed_read_only(clock: FakeClock) -> None:
    """`transport.transport` is the wrapped transport and cannot be replaced."""
    inner = Tracked()
    transport = AsyncResilientTransport(inner, policy=make_policy(), clock=clock)
    assert transport.transport is inner
    with pytest.raises(AttributeError):
        transport.transport = Tracked()  # type: ignore[misc]


async def test_pool_is_the_inner_transports_pool(clock: FakeClock) -> None:
    """`_pool` reads the wrapped AsyncHTTPTransport's pool (what httpx's proxy tests inspect)."""
    inner = httpx.AsyncHTTPTransport(proxy="http://127.0.0.1:9")
    transport = AsyncResilientTransport(inner, policy=make_policy(), clock=clock)
    assert transport._pool is inner._pool
    assert not hasattr(AsyncResilientTransport(Tracked(), policy=make_policy()), "_pool")
