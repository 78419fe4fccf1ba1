"""Streamed response bodies through both transports (httpx.MockTransport, fake clock).

A body the caller reads (``client.stream()``, server-sent events, direct ``handle_request``
calls) reaches it unread and is never resent; its call ends, for the breaker, the observers
and the span, when the body ends. ``client.get()`` and friends stay buffered in the attempt.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    BreakerState,
    ConfigError,
    ErrorClass,
    InMemoryDeadLetterQueue,
    Jitter,
    Observer,
    Policy,
    ResilientTransport,
    RetryConfig,
)
from resilience_otel._clients.http.stream import caller_streams
from resilience_otel.testing import FakeClock

URL = "http://api.test/v1/events"
SSE = {"content-type": "text/event-stream"}


class Body(httpx.SyncByteStream):
    """A sync body yielding bytes, raising exceptions or running actions, in order."""

    def __init__(self, *parts: bytes | Exception | Callable[[], None]) -> None:
        self.parts = parts
        self.iterated = False
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        self.iterated = True
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            elif isinstance(part, Exception):
                raise part
            else:
                part()

    def close(self) -> None:
        self.closed = True


class AsyncBody(httpx.AsyncByteStream):
    """An async body yielding bytes, raising exceptions or waiting forever (``None``)."""

    def __init__(self, *parts: bytes | Exception | None) -> None:
        self.parts = parts
        self.iterated = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.iterated = True
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            elif isinstance(part, Exception):
                raise part
            else:
                await asyncio.Event().wait()

    async def aclose(self) -> None:
        pass


class Recorder(Observer):
    """Keeps every ``call_finished`` as ``(outcome, error_class, attempts)``."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, ErrorClass | None, int]] = []

    def call_finished(self, *args: Any) -> None:
        _service, _client, outcome, error_class, attempts, _duration = args
        self.finished.append((outcome, error_class, attempts))


def _policy(*, call_timeout: float | None = 1.0, threshold: int = 100) -> Policy:
    return Policy(
        service="events",
        breaker=BreakerConfig(
            failure_threshold=threshold, reset_timeout=30.0, call_timeout=call_timeout
        ),
        retry=RetryConfig(max_attempts=3, base_delay=0.5, jitter=Jitter.NONE, budget=None),
    )


class Upstream:
    """A MockTransport handler answering with ``make()`` and counting requests."""

    def __init__(self, make: Callable[[], httpx.Response]) -> None:
        self.make = make
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.make()


def _sync(
    upstream: Upstream, clock: FakeClock, policy: Policy | None = None, **kwargs: Any
) -> ResilientTransport:
    return ResilientTransport(
        httpx.MockTransport(upstream), policy=policy or _policy(), clock=clock,
        rng=random.Random(0), **kwargs,
    )  # fmt: skip


def _async(upstream: Any, policy: Policy | None = None, **kwargs: Any) -> AsyncResilientTransport:
    return AsyncResilientTransport(
        httpx.MockTransport(upstream), policy=policy or _policy(), rng=random.Random(0), **kwargs
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- what the caller asked for ---------------------------------------------------------------
def test_caller_streams_reads_the_installed_httpx_send_argument() -> None:
    """Inside a transport, caller_streams() is False for get(), True for stream(), else None."""
    seen: list[bool | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(caller_streams())
        return httpx.Response(200)

    transport = httpx.MockTransport(handler)
    with httpx.Client(transport=transport) as client:
        client.get(URL)
        with client.stream("GET", URL):
            pass
        client.send(client.build_request("GET", URL), stream=True).close()
    transport.handle_request(httpx.Request("GET", URL))
    assert seen == [False, True, True, None]


@pytest.mark.anyio
async def test_caller_streams_reads_the_installed_async_httpx_send_argument() -> None:
    """The same lookup finds AsyncClient.send's argument through the awaiting coroutines."""
    seen: list[bool | None] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(caller_streams())
        return httpx.Response(200)

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        async with client.stream("GET", URL):
            pass
    await transport.handle_async_request(httpx.Request("GET", URL))
    assert seen == [False, True, None]


# -- unread by default ---------------------------------------------------------------------
def test_client_stream_returns_the_body_unread(clock: FakeClock) -> None:
    """With the default read_body, client.stream() hands back an unread body."""
    body = Body(b"data: 1\n\n", b"data: 2\n\n")
    transport = _sync(Upstream(lambda: httpx.Response(200, stream=body)), clock)
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert not body.iterated
        assert list(response.iter_bytes()) == [b"data: 1\n\n", b"data: 2\n\n"]


def test_direct_handle_request_returns_the_body_unread(clock: FakeClock) -> None:
    """Without an httpx client on the stack the transport behaves as httpx's: body unread."""
    body = Body(b"payload")
    transport = _sync(Upstream(lambda: httpx.Response(200, stream=body)), clock)
    response = transport.handle_request(httpx.Request("GET", URL))
    assert not body.iterated
    assert response.read() == b"payload"


def test_event_stream_is_unread_even_for_get(clock: FakeClock) -> None:
    """A text/event-stream body is never buffered: its failure reaches get() unretried."""
    make = lambda: httpx.Response(  # noqa: E731
        200, headers=SSE, stream=Body(b"data: 1\n\n", httpx.RemoteProtocolError("cut"))
    )
    upstream = Upstream(make)
    with (
        httpx.Client(transport=_sync(upstream, clock)) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.get(URL)
    assert len(upstream.requests) == 1


def test_upgrade_is_returned_unread_even_when_buffering(clock: FakeClock) -> None:
    """A 101 is returned unread with read_body=True: its connection belongs to the caller."""
    body = Body(b"frames")
    transport = _sync(Upstream(lambda: httpx.Response(101, stream=body)), clock, read_body=True)
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert response.status_code == 101
        assert not body.iterated


def test_read_body_true_buffers_a_client_stream(clock: FakeClock) -> None:
    """read_body=True still reads a client.stream() body in the attempt (and retries it)."""
    bodies = [Body(b"par", httpx.RemoteProtocolError("cut")), Body(b"full")]
    upstream = Upstream(lambda: httpx.Response(200, stream=bodies.pop(0)))
    transport = _sync(upstream, clock, read_body=True)
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert response.read() == b"full"
    assert len(upstream.requests) == 2


def test_streamed_body_reads_with_the_callers_timeouts(clock: FakeClock) -> None:
    """After the head, a streamed body's reads get the caller's timeouts, not call_timeout."""
    upstream = Upstream(lambda: httpx.Response(200, stream=Body(b"x")))
    transport = _sync(upstream, clock)
    with (
        httpx.Client(transport=transport, timeout=10.0) as client,
        client.stream("GET", URL) as response,
    ):
        assert response.request.extensions["timeout"]["read"] == 10.0
    assert len(upstream.requests) == 1


# -- how a stream's call ends -----------------------------------------------------------------
def test_stream_read_to_the_end_is_one_success_when_it_ends(clock: FakeClock) -> None:
    """The call is reported once, as a success, when the body ends (not at the head)."""
    recorder = Recorder()
    upstream = Upstream(lambda: httpx.Response(200, stream=Body(b"a", b"b")))
    transport = _sync(upstream, clock, observers=[recorder])
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert recorder.finished == []
        response.read()
        assert recorder.finished == [("success", None, 1)]
    assert recorder.finished == [("success", None, 1)]


def test_stream_closed_early_is_a_success(clock: FakeClock) -> None:
    """A caller leaving after the first chunk ends the call as a success."""
    recorder = Recorder()
    body = Body(b"a", b"b", b"c")
    transport = _sync(
        Upstream(lambda: httpx.Response(200, stream=body)), clock, observers=[recorder]
    )
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert next(response.iter_raw()) == b"a"
    assert body.closed
    assert recorder.finished == [("success", None, 1)]
    assert transport.breaker.snapshot().failures == 0


def test_stream_failing_midway_is_one_failure_and_not_resent(clock: FakeClock) -> None:
    """A body reset after its first chunk: the caller gets the error, one failure, one request."""
    recorder = Recorder()
    make = lambda: httpx.Response(  # noqa: E731
        200, stream=Body(b"a", httpx.ReadError("connection reset"))
    )
    upstream = Upstream(make)
    transport = _sync(upstream, clock, observers=[recorder])
    with (
        httpx.Client(transport=transport) as client,
        client.stream("GET", URL) as response,
        pytest.raises(httpx.ReadError, match="connection reset"),
    ):
        response.read()
    assert len(upstream.requests) == 1
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert transport.breaker.snapshot().failures == 1


def test_stream_failing_midway_is_dead_lettered_once(clock: FakeClock) -> None:
    """A failed stream leaves one dead letter for its one attempt, naming the body's error."""
    letters = InMemoryDeadLetterQueue()
    make = lambda: httpx.Response(200, stream=Body(b"a", httpx.ReadError("reset")))  # noqa: E731
    transport = _sync(Upstream(make), clock, dead_letters=letters)
    with (
        httpx.Client(transport=transport) as client,
        client.stream("GET", URL) as response,
        pytest.raises(httpx.ReadError),
    ):
        response.read()
    (letter,) = letters.entries()
    assert (letter.operation, letter.attempts, letter.error_type) == (f"GET {URL}", 1, "ReadError")
    assert letter.message == "ReadError: reset"


def test_stream_idle_longer_than_call_timeout_fails_once(clock: FakeClock) -> None:
    """A 5 s gap between chunks under call_timeout 1 s fails as ReadTimeout, one failure."""
    recorder = Recorder()
    make = lambda: httpx.Response(  # noqa: E731
        200, stream=Body(b"a", lambda: clock.advance(5.0), b"b")
    )
    transport = _sync(Upstream(make), clock, observers=[recorder])
    with (
        httpx.Client(transport=transport) as client,
        client.stream("GET", URL) as response,
        pytest.raises(httpx.ReadTimeout, match="stream_idle_timeout"),
    ):
        response.read()
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert transport.breaker.snapshot().failures == 1


def test_stream_idle_timeout_setting_replaces_call_timeout(clock: FakeClock) -> None:
    """stream_idle_timeout=10 lets a 5 s gap through although call_timeout is 1 s."""
    make = lambda: httpx.Response(  # noqa: E731
        200, stream=Body(b"a", lambda: clock.advance(5.0), b"b")
    )
    transport = _sync(Upstream(make), clock, stream_idle_timeout=10.0)
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert response.read() == b"ab"
    assert transport.breaker.snapshot().failures == 0


def test_half_open_probe_is_recorded_at_the_head(clock: FakeClock) -> None:
    """A streamed probe closes the breaker when its head arrives; a later body failure
    reopens it."""
    heads = [httpx.Response(503), httpx.Response(200, stream=Body(b"a", httpx.ReadError("x")))]
    transport = _sync(Upstream(lambda: heads.pop(0)), clock, _policy(threshold=1))
    with httpx.Client(transport=transport) as client:
        with client.stream("GET", URL) as response:
            assert response.status_code == 503
        states = [transport.breaker.state]
        clock.advance(30.0)
        with client.stream("GET", URL) as response:
            states.append(transport.breaker.state)  # the probe closed it at the head
            with pytest.raises(httpx.ReadError):
                response.read()
    assert states == [BreakerState.OPEN, BreakerState.CLOSED]
    assert transport.breaker.state is BreakerState.OPEN


def test_stream_span_ends_with_the_body_and_carries_its_failure(clock: FakeClock) -> None:
    """The attempt span stays open while the body streams and ends with its error status."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    make = lambda: httpx.Response(200, stream=Body(b"a", httpx.ReadError("reset")))  # noqa: E731
    transport = _sync(Upstream(make), clock, tracer_provider=provider)
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        assert exporter.get_finished_spans() == ()
        with pytest.raises(httpx.ReadError):
            response.read()
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["error.type"] == "ReadError"
    assert span.status.status_code is StatusCode.ERROR


# -- async -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_client_stream_returns_the_body_unread() -> None:
    """AsyncClient.stream() gets the body unread; client.get() still has it buffered."""
    bodies: list[AsyncBody] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(AsyncBody(b"a", b"b"))
        return httpx.Response(200, stream=bodies[-1])

    async with httpx.AsyncClient(transport=_async(handler)) as client:
        async with client.stream("GET", URL) as response:
            assert not bodies[-1].iterated
            assert await response.aread() == b"ab"
        assert (await client.get(URL)).content == b"ab"


@pytest.mark.anyio
async def test_async_stream_failing_midway_is_one_failure_and_not_resent() -> None:
    """An async body failing after its first chunk: the error, one failure, one request."""
    recorder = Recorder()
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, stream=AsyncBody(b"a", httpx.ReadError("reset")))

    transport = _async(handler, observers=[recorder])
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        with pytest.raises(httpx.ReadError):
            await response.aread()
    assert len(requests) == 1
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert transport.breaker.snapshot().failures == 1


@pytest.mark.anyio
async def test_async_stream_silent_beyond_idle_timeout_is_cut() -> None:
    """A body silent after its first chunk is cut at stream_idle_timeout (50 ms): one failure."""
    recorder = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=AsyncBody(b"a", None))

    transport = _async(handler, observers=[recorder], stream_idle_timeout=0.05)
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"a"
        with pytest.raises(httpx.ReadTimeout, match="stream_idle_timeout"):
            await asyncio.wait_for(chunks.__anext__(), 2.0)
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]


@pytest.mark.anyio
async def test_async_stream_closed_early_is_a_success() -> None:
    """An async caller leaving after the first chunk ends the call as a success."""
    recorder = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=AsyncBody(b"a", None))

    transport = _async(handler, observers=[recorder])
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", URL) as response,
    ):
        assert await response.aiter_raw().__anext__() == b"a"
    assert recorder.finished == [("success", None, 1)]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


# -- arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ResilientTransport, AsyncResilientTransport])
@pytest.mark.parametrize("value", ["yes", "AUTO", 1, None])
def test_read_body_takes_true_false_or_auto(cls: type, value: object) -> None:
    """read_body="yes" is refused, naming the argument, the value and the choices."""
    with pytest.raises(ConfigError) as caught:
        cls(policy=_policy(), read_body=value)
    assert f"{cls.__name__}(read_body=...)" in str(caught.value)
    assert repr(value) in str(caught.value)
    assert "'auto'" in str(caught.value)


@pytest.mark.parametrize("cls", [ResilientTransport, AsyncResilientTransport])
@pytest.mark.parametrize("value", [0, -1.0, math.nan, 86_401, "5", True])
def test_stream_idle_timeout_must_be_positive_seconds(cls: type, value: object) -> None:
    """stream_idle_timeout=0 (or a string) is refused, naming the argument and the range."""
    with pytest.raises(ConfigError) as caught:
        cls(policy=_policy(), stream_idle_timeout=value)
    assert f"{cls.__name__}(stream_idle_timeout=...)" in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", [0.5, 86_400, math.inf])
def test_stream_idle_timeout_accepts_seconds_and_infinity(value: float) -> None:
    """Positive seconds up to a day, and math.inf for no limit, are accepted."""
    ResilientTransport(policy=_policy(), stream_idle_timeout=value)
