"""Attempt timeouts that hold on every path, against real servers on loopback.

HTTP: a stalled server (accepts, never answers), a server dripping its response head, one
dripping its body. Redis: a latency proxy in front of the machine's Redis. For each, sync and
async end with the same outcome class and the same breaker effect, and where the attempt can
be cut it ends within 50 ms of its timeout.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
import redis.asyncio
from redis import exceptions as rex

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    Jitter,
    Policy,
    ResilientTransport,
    RetriesExhaustedError,
    RetryConfig,
)
from resilience_otel.redis import breaker_of, instrument
from tests.support.faultproxy import BLACKHOLE, LATENCY, PASS, FaultProxy

from .faultserver import FaultServer, Mode, Respond, hang

pytestmark = pytest.mark.integration

TIMEOUT = 0.3
SLACK = 0.05  # the cut must come within this of the timeout


def _policy(
    *, call_timeout: float | None = TIMEOUT, total_timeout: float | None = None, attempts: int = 1
) -> Policy:
    return Policy(
        service="timeouts",
        breaker=BreakerConfig(failure_threshold=100, call_timeout=call_timeout),
        retry=RetryConfig(
            max_attempts=attempts,
            base_delay=0.01,
            max_delay=0.01,
            jitter=Jitter.NONE,
            budget=None,
            total_timeout=total_timeout,
        ),
    )


# -- an HTTP server that drips its response --------------------------------------------------
@dataclass(frozen=True, slots=True)
class Drip(Respond):
    """Send the response ``size`` bytes every ``every`` seconds: the head (``part="head"``)
    or, after the whole head, the body (``part="body"``)."""

    size: int = 4
    every: float = 0.1
    part: str = "head"


class DripServer(FaultServer):
    """A :class:`FaultServer` that also acts out :class:`Drip` modes."""

    def _apply(self, conn: socket.socket, mode: Mode, method: str, target: str) -> bool:
        if not isinstance(mode, Drip):
            return super()._apply(conn, mode, method, target)
        body = mode.body if mode.body is not None else b"x" * 64
        head = f"HTTP/1.1 {mode.status} OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        dripped = head if mode.part == "head" else body
        if mode.part == "body":
            conn.sendall(head)
        for start in range(0, len(dripped), mode.size):
            if self._stopped.wait(mode.every):
                return False
            conn.sendall(dripped[start : start + mode.size])  # raises once the client hung up
        if mode.part == "head":
            conn.sendall(body)
        return True


@pytest.fixture
def server() -> Iterator[DripServer]:
    """A drip-capable fault server on loopback."""
    started = DripServer()
    with started:
        yield started


DRIP_HEAD = Drip(size=4, every=0.1, part="head")  # a ~40-byte head: 200 after ~1.1 s
DRIP_BODY = Drip(size=4, every=0.1, part="body")  # a 64-byte body: complete after ~1.6 s
FAULTS = [
    pytest.param(hang(), id="stalled"),
    pytest.param(DRIP_HEAD, id="dripping-head"),
    pytest.param(DRIP_BODY, id="dripping-body"),
]


def _sync_get(server: DripServer, transport: ResilientTransport) -> tuple[Exception, float]:
    started = time.monotonic()
    with httpx.Client(transport=transport, base_url=server.base_url) as client:
        with pytest.raises(httpx.TimeoutException) as caught:
            client.get("/slow")
        return caught.value, time.monotonic() - started


async def _async_get(
    server: DripServer, transport: AsyncResilientTransport
) -> tuple[Exception, float]:
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport, base_url=server.base_url) as client:
        with pytest.raises(httpx.TimeoutException) as caught:
            await client.get("/slow")
        return caught.value, time.monotonic() - started


@pytest.mark.parametrize("fault", FAULTS)
def test_sync_http_attempt_is_cut_at_call_timeout(server: DripServer, fault: Mode) -> None:
    """Sync, default transport: ReadTimeout within 50 ms of call_timeout; one breaker failure."""
    server.set_default(fault)
    transport = ResilientTransport(policy=_policy())
    error, elapsed = _sync_get(server, transport)
    assert type(error) is httpx.ReadTimeout  # one attempt: the timeout itself, not exhausted
    assert "call_timeout" in str(error)
    assert TIMEOUT <= elapsed <= TIMEOUT + SLACK
    assert transport.breaker.snapshot().failures == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
async def test_async_http_attempt_is_cut_at_call_timeout(server: DripServer, fault: Mode) -> None:
    """Async: the same outcome class (ReadTimeout), bound and breaker effect as sync."""
    server.set_default(fault)
    transport = AsyncResilientTransport(policy=_policy())
    error, elapsed = await _async_get(server, transport)
    assert type(error) is httpx.ReadTimeout  # one attempt: the timeout itself, not exhausted
    assert "call_timeout" in str(error)
    assert TIMEOUT <= elapsed <= TIMEOUT + SLACK
    assert transport.breaker.snapshot().failures == 1


def test_sync_http_total_timeout_holds_across_retries(server: DripServer) -> None:
    """call_timeout 0.2 s and total_timeout 0.5 s: three attempts, all over by 0.55 s."""
    server.set_default(DRIP_HEAD)
    transport = ResilientTransport(policy=_policy(call_timeout=0.2, total_timeout=0.5, attempts=9))
    error, elapsed = _sync_get(server, transport)
    assert isinstance(error, RetriesExhaustedError)
    assert isinstance(error, httpx.ReadTimeout)
    assert elapsed <= 0.5 + SLACK
    assert server.count("/slow") == 3


@pytest.mark.anyio
async def test_async_http_total_timeout_holds_across_retries(server: DripServer) -> None:
    """The async twin of the total_timeout bound: same attempts, same error, same bound."""
    server.set_default(DRIP_HEAD)
    policy = _policy(call_timeout=0.2, total_timeout=0.5, attempts=9)
    error, elapsed = await _async_get(server, AsyncResilientTransport(policy=policy))
    assert isinstance(error, RetriesExhaustedError)
    assert isinstance(error, httpx.ReadTimeout)
    assert elapsed <= 0.5 + SLACK
    assert server.count("/slow") == 3


class Passthrough(httpx.BaseTransport):
    """An inner transport we cannot see into (so its sockets cannot be cut)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_custom_inner_transport_stalled_server_is_cut_by_capped_read_timeout(
    server: DripServer,
) -> None:
    """A custom inner transport still gets read timeouts no longer than the time left."""
    server.set_default(hang())
    transport = ResilientTransport(Passthrough(), policy=_policy())
    error, elapsed = _sync_get(server, transport)
    assert isinstance(error, httpx.ReadTimeout)
    assert TIMEOUT <= elapsed <= TIMEOUT + SLACK


def test_custom_inner_transport_dripping_head_is_a_timeout_not_a_success(
    server: DripServer,
) -> None:
    """A head dripping within each read timeout cannot be cut there: it fails once it lands."""
    server.set_default(Drip(size=4, every=0.05, part="head"))  # 200 after ~0.5 s
    transport = ResilientTransport(Passthrough(), policy=_policy())
    error, elapsed = _sync_get(server, transport)
    assert isinstance(error, httpx.ReadTimeout)
    assert elapsed > TIMEOUT + SLACK  # not cut: the late 200 was turned into the timeout
    assert transport.breaker.snapshot().failures == 1


def test_streamed_body_read_after_the_attempt_is_not_cut_by_its_deadline(
    server: DripServer,
) -> None:
    """With read_body=False the deadline ends with the attempt: a slow body read later works."""
    server.set_default(Drip(size=16, every=0.1, part="body"))  # 64 bytes over ~0.4 s
    transport = ResilientTransport(policy=_policy(), read_body=False)
    client = httpx.Client(transport=transport, base_url=server.base_url)
    with client, client.stream("GET", "/slow") as response:
        assert response.read() == b"x" * 64
    assert transport.breaker.snapshot().failures == 0


# -- Redis through a latency proxy -----------------------------------------------------------
@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the machine's Redis."""
    with FaultProxy(("127.0.0.1", 6379)) as started:
        yield started


@pytest.fixture
def key() -> Iterator[str]:
    """A fresh key holding ``b"v"`` on the machine's Redis, deleted afterwards."""
    name = f"timeouts:{uuid.uuid4().hex}"
    with redis.Redis(host="127.0.0.1", port=6379) as raw:
        raw.set(name, "v")
        yield name
        raw.delete(name)


@pytest.fixture
def sync_redis(proxy: FaultProxy) -> Iterator[redis.Redis]:
    """An instrumented sync client through the proxy (call_timeout 0.3 s, one attempt)."""
    client = instrument(redis.Redis(host="127.0.0.1", port=proxy.port), policy=_policy())
    client.ping()
    yield client
    client.close()


@pytest.fixture
async def async_redis(proxy: FaultProxy) -> AsyncIterator[redis.asyncio.Redis]:
    """The async twin of :func:`sync_redis`."""
    client = instrument(redis.asyncio.Redis(host="127.0.0.1", port=proxy.port), policy=_policy())
    await client.ping()
    yield client
    await client.aclose()


def test_sync_redis_get_through_latency_is_cut_at_call_timeout(
    proxy: FaultProxy, sync_redis: redis.Redis, key: str
) -> None:
    """1 s of latency, call_timeout 0.3 s: GET fails as a Redis timeout within 50 ms."""
    proxy.set_mode(LATENCY, latency=1.0)
    started = time.monotonic()
    with pytest.raises(rex.TimeoutError) as caught:
        sync_redis.get(key)
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, TimeoutError)
    assert TIMEOUT <= elapsed <= TIMEOUT + SLACK
    assert breaker_of(sync_redis).snapshot().failures == 1


@pytest.mark.anyio
async def test_async_redis_get_through_latency_is_cut_at_call_timeout(
    proxy: FaultProxy, async_redis: redis.asyncio.Redis, key: str
) -> None:
    """Async: the same error class (redis and builtin TimeoutError), bound and breaker effect."""
    proxy.set_mode(LATENCY, latency=1.0)
    started = time.monotonic()
    with pytest.raises(rex.TimeoutError) as caught:
        await async_redis.get(key)
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, TimeoutError)
    assert TIMEOUT <= elapsed <= TIMEOUT + SLACK
    assert breaker_of(async_redis).snapshot().failures == 1


def test_sync_redis_connection_is_clean_after_a_cut(
    proxy: FaultProxy, sync_redis: redis.Redis, key: str
) -> None:
    """The late reply of a cut GET never answers a later command; the socket timeout is back."""
    proxy.set_mode(LATENCY, latency=0.5)
    with pytest.raises(rex.TimeoutError):
        sync_redis.get("absent-" + key)
    proxy.set_mode(PASS)
    assert sync_redis.get(key) == b"v"
    assert sync_redis.get(key) == b"v"
    (connection,) = sync_redis.connection_pool._available_connections
    assert connection._sock.gettimeout() == connection.socket_timeout


def test_sync_redis_pipeline_is_cut_at_call_timeout(
    proxy: FaultProxy, sync_redis: redis.Redis, key: str
) -> None:
    """A pipeline through the latency is cut at call_timeout like a single command."""
    proxy.set_mode(LATENCY, latency=1.0)
    started = time.monotonic()
    pipe = sync_redis.pipeline(transaction=False)
    pipe.get(key)
    pipe.get(key)
    with pytest.raises(rex.TimeoutError):
        pipe.execute()
    assert time.monotonic() - started <= TIMEOUT + SLACK


def test_sync_redis_total_timeout_holds_across_retries(proxy: FaultProxy, key: str) -> None:
    """call_timeout 0.2 s, total_timeout 0.5 s: the retried GET is over by 0.55 s."""
    policy = _policy(call_timeout=0.2, total_timeout=0.5, attempts=9)
    with instrument(redis.Redis(host="127.0.0.1", port=proxy.port), policy=policy) as client:
        client.ping()
        proxy.set_mode(LATENCY, latency=1.0)
        started = time.monotonic()
        with pytest.raises(rex.TimeoutError) as caught:
            client.get(key)
        assert time.monotonic() - started <= 0.5 + SLACK
        assert isinstance(caught.value, RetriesExhaustedError)
        assert caught.value.attempts == 3


BLOCK = 0.5  # a BLPOP's own block time, longer than TIMEOUT


def test_sync_blocking_command_may_block_past_call_timeout(sync_redis: redis.Redis) -> None:
    """BLPOP blocking 0.5 s under call_timeout 0.3 s ends empty at 0.5 s: a success."""
    started = time.monotonic()
    assert sync_redis.blpop([f"timeouts:empty:{uuid.uuid4().hex}"], timeout=BLOCK) is None
    assert BLOCK <= time.monotonic() - started < BLOCK + TIMEOUT  # ended by the block, not cut
    assert breaker_of(sync_redis).snapshot().failures == 0


@pytest.mark.anyio
async def test_async_blocking_command_may_block_past_call_timeout(
    async_redis: redis.asyncio.Redis,
) -> None:
    """The async BLPOP is not cancelled before its own block ends, and ends as a success."""
    started = time.monotonic()
    assert await async_redis.blpop([f"timeouts:empty:{uuid.uuid4().hex}"], timeout=BLOCK) is None
    assert BLOCK <= time.monotonic() - started < BLOCK + TIMEOUT  # ended by the block, not cut
    assert breaker_of(async_redis).snapshot().failures == 0


def test_sync_blocking_command_is_cut_at_block_plus_call_timeout(
    proxy: FaultProxy, sync_redis: redis.Redis
) -> None:
    """A silent server: BLPOP 0.5 s is cut at 0.5 + 0.3 s with a Redis (and builtin) timeout."""
    proxy.set_mode(BLACKHOLE)
    started = time.monotonic()
    with pytest.raises(rex.TimeoutError) as caught:
        sync_redis.blpop([f"timeouts:empty:{uuid.uuid4().hex}"], timeout=BLOCK)
    assert BLOCK + TIMEOUT <= time.monotonic() - started <= BLOCK + TIMEOUT + SLACK
    assert isinstance(caught.value, TimeoutError)
    assert "BLPOP attempt 1 exceeded its block time 0.500s" in str(caught.value)
    assert breaker_of(sync_redis).snapshot().failures == 1


@pytest.mark.anyio
async def test_async_blocking_command_is_cut_at_block_plus_call_timeout(
    proxy: FaultProxy, async_redis: redis.asyncio.Redis
) -> None:
    """Async: the same bound, error class and breaker effect."""
    proxy.set_mode(BLACKHOLE)
    started = time.monotonic()
    with pytest.raises(rex.TimeoutError) as caught:
        await async_redis.blpop([f"timeouts:empty:{uuid.uuid4().hex}"], timeout=BLOCK)
    assert BLOCK + TIMEOUT <= time.monotonic() - started <= BLOCK + TIMEOUT + SLACK
    assert isinstance(caught.value, TimeoutError)
    assert "BLPOP attempt 1 exceeded its block time 0.500s" in str(caught.value)
    assert breaker_of(async_redis).snapshot().failures == 1
