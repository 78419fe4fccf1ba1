"""Streamed responses through the transports against a real loopback server.

``client.stream()`` must stream as it does with httpx alone: the first event arrives at once,
the body is not cut by ``call_timeout`` (only by the idle timeout between chunks), a stream is
sent once and never resent, and it holds its pool connection while it is open. The
server's request counts say what was really sent.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from resilience_otel import AsyncResilientTransport, ResilientTransport

from .conftest import PolicyFactory
from .faultserver import FaultServer, Upgrade, stream

pytestmark = pytest.mark.integration

CALL_TIMEOUT = 0.3  # fast_policy's: reading 0.6 s of events outlives it twice
UPGRADE = {"Connection": "Upgrade", "Upgrade": "echo"}


def _lines_for(response: httpx.Response, seconds: float) -> tuple[float, int]:
    """Read lines for ``seconds``; returns when the first came (since the call) and how many."""
    started = time.monotonic()
    first = None
    count = 0
    for line in response.iter_lines():
        if line:
            first = time.monotonic() - started if first is None else first
            count += 1
        if time.monotonic() - started >= seconds:
            break
    assert first is not None
    return first, count


async def _alines_for(response: httpx.Response, seconds: float) -> tuple[float, int]:
    """Async :func:`_lines_for`."""
    started = time.monotonic()
    first = None
    count = 0
    async for line in response.aiter_lines():
        if line:
            first = time.monotonic() - started if first is None else first
            count += 1
        if time.monotonic() - started >= seconds:
            break
    assert first is not None
    return first, count


# -- endless event streams -------------------------------------------------------------------------
def test_sync_endless_event_stream_streams_and_is_sent_once(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """An endless SSE GET gives its first event at once and runs past call_timeout, sent once."""
    fault_server.set_default(stream(every=0.05))
    transport = ResilientTransport(policy=make_policy(call_timeout=CALL_TIMEOUT))
    with (
        httpx.Client(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/events") as response,
    ):
        first, count = _lines_for(response, 2 * CALL_TIMEOUT)
    assert first < 0.1
    assert count >= 6
    assert fault_server.count("/events") == 1
    assert transport.breaker.snapshot().failures == 0


@pytest.mark.anyio
async def test_async_endless_event_stream_streams_and_is_sent_once(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport streams the endless SSE GET the same way, sent once."""
    fault_server.set_default(stream(every=0.05))
    transport = AsyncResilientTransport(policy=make_policy(call_timeout=CALL_TIMEOUT))
    async with (
        httpx.AsyncClient(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/events") as response,
    ):
        first, count = await _alines_for(response, 2 * CALL_TIMEOUT)
    assert first < 0.1
    assert count >= 6
    assert fault_server.count("/events") == 1
    assert transport.breaker.snapshot().failures == 0


# -- idle gaps and broken streams ---------------------------------------------------------------
def test_sync_stream_silent_beyond_idle_timeout_fails_once(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """Two events then silence: ReadTimeout at the idle timeout, one breaker failure, one GET."""
    fault_server.set_default(stream(count=2, end="stall"))
    transport = ResilientTransport(policy=make_policy(), stream_idle_timeout=0.2)
    with (
        httpx.Client(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/events") as response,
    ):
        chunks = response.iter_raw()
        assert next(chunks) == b"data: tick\n\n"
        assert next(chunks) == b"data: tick\n\n"
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout, match="stream_idle_timeout"):
            next(chunks)
    assert 0.15 <= time.monotonic() - started < 0.6
    assert fault_server.count("/events") == 1
    assert transport.breaker.snapshot().failures == 1


@pytest.mark.anyio
async def test_async_stream_silent_beyond_idle_timeout_fails_once(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async read is cancelled at the idle timeout: ReadTimeout, one failure, one GET."""
    fault_server.set_default(stream(count=2, end="stall"))
    transport = AsyncResilientTransport(policy=make_policy(), stream_idle_timeout=0.2)
    async with (
        httpx.AsyncClient(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/events") as response,
    ):
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"data: tick\n\n"
        assert await chunks.__anext__() == b"data: tick\n\n"
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout, match="stream_idle_timeout"):
            await chunks.__anext__()
    assert 0.15 <= time.monotonic() - started < 0.6
    assert fault_server.count("/events") == 1
    assert transport.breaker.snapshot().failures == 1


def test_sync_stream_reset_midway_is_not_resent(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A stream reset after two events: the caller gets ReadError, the GET was sent once."""
    fault_server.set_default(stream(count=2, end="reset"))
    transport = ResilientTransport(policy=make_policy())
    with (
        httpx.Client(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/events") as response,
        pytest.raises(httpx.ReadError),
    ):
        response.read()
    assert fault_server.count("/events") == 1
    assert transport.breaker.snapshot().failures == 1


@pytest.mark.anyio
async def test_async_stream_reset_midway_is_not_resent(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async twin: ReadError after two events, one GET, one breaker failure."""
    fault_server.set_default(stream(count=2, end="reset"))
    transport = AsyncResilientTransport(policy=make_policy())
    async with (
        httpx.AsyncClient(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/events") as response,
    ):
        with pytest.raises(httpx.ReadError):
            await response.aread()
    assert fault_server.count("/events") == 1
    assert transport.breaker.snapshot().failures == 1


def test_get_of_a_chunked_body_reset_midway_is_retried(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """client.get() still reads in the attempt: a chunked body cut by a reset is sent again."""
    broken = stream(count=2, end="reset", content_type="application/json")
    fault_server.script("/report", [broken, "200"])
    with httpx.Client(
        transport=ResilientTransport(policy=make_policy()), base_url=fault_server.base_url
    ) as client:
        response = client.get("/report")
    assert response.json()["ok"] is True
    assert fault_server.count("/report") == 2


# -- the pool ----------------------------------------------------------------------------------
def _one_connection() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "resilient"])
def test_sync_open_stream_holds_its_pool_connection(
    fault_server: FaultServer, make_policy: PolicyFactory, wrapped: bool
) -> None:
    """With a pool of one, a second request times out waiting while a stream is open."""
    fault_server.script("/events", [stream(every=0.05)])
    transport: httpx.BaseTransport = _one_connection()
    if wrapped:
        transport = ResilientTransport(transport, policy=make_policy(max_attempts=1))
    timeout = httpx.Timeout(5.0, pool=0.1)
    client = httpx.Client(transport=transport, base_url=fault_server.base_url, timeout=timeout)
    with client, client.stream("GET", "/events") as response:
        lines = response.iter_lines()  # kept: a dropped iterator would close the stream
        assert next(lines) == "data: tick"
        with pytest.raises(httpx.PoolTimeout):
            client.get("/other")
    assert fault_server.count() == 1


@pytest.mark.anyio
@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "resilient"])
async def test_async_open_stream_holds_its_pool_connection(
    fault_server: FaultServer, make_policy: PolicyFactory, wrapped: bool
) -> None:
    """The async pool of one is held by an open stream the same way."""
    fault_server.script("/events", [stream(every=0.05)])
    limits = httpx.Limits(max_connections=1)
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(limits=limits)
    if wrapped:
        transport = AsyncResilientTransport(transport, policy=make_policy(max_attempts=1))
    timeout = httpx.Timeout(5.0, pool=0.1)
    client = httpx.AsyncClient(transport=transport, base_url=fault_server.base_url, timeout=timeout)
    async with client, client.stream("GET", "/events") as response:
        lines = response.aiter_lines()  # kept: a dropped iterator would close the stream
        assert await lines.__anext__() == "data: tick"
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/other")
    assert fault_server.count() == 1


# -- upgrades ----------------------------------------------------------------------------------
def test_sync_upgrade_hands_over_the_connection_unread(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A 101 comes back at once with its connection, which then carries the new protocol."""
    fault_server.set_default(Upgrade())
    transport = ResilientTransport(policy=make_policy(), read_body=True)
    with (
        httpx.Client(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/ws", headers=UPGRADE) as response,
    ):
        connection: Any = response.extensions["network_stream"]
        connection.write(b"ping")
        assert connection.read(4) == b"ping"
    assert response.status_code == 101
    assert fault_server.count("/ws") == 1


def test_sync_get_of_an_upgrade_returns_at_once(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """client.get() of a 101 returns it as httpx does (no body), neither timed out nor resent."""
    fault_server.set_default(Upgrade())
    transport = ResilientTransport(policy=make_policy(), read_body=True)
    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        started = time.monotonic()
        response = client.get("/ws", headers=UPGRADE)
    assert response.status_code == 101
    assert response.content == b""
    assert time.monotonic() - started < CALL_TIMEOUT
    assert fault_server.count("/ws") == 1


@pytest.mark.anyio
async def test_async_upgrade_hands_over_the_connection_unread(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport also returns a 101 with its connection, untouched."""
    fault_server.set_default(Upgrade())
    transport = AsyncResilientTransport(policy=make_policy(), read_body=True)
    async with (
        httpx.AsyncClient(transport=transport, base_url=fault_server.base_url) as client,
        client.stream("GET", "/ws", headers=UPGRADE) as response,
    ):
        connection: Any = response.extensions["network_stream"]
        await connection.write(b"ping")
        assert await connection.read(4) == b"ping"
    assert response.status_code == 101
    assert fault_server.count("/ws") == 1
