"""Many concurrent calls through one resilient transport against a real failing server.

Bounds used below (breaker with ``failure_threshold`` F, ``reset_timeout`` long enough that
no probe happens during the test):

- Every attempt needs a breaker permit, and once the breaker is open no permit is granted.
- When it opens, exactly F failures have been recorded; every other permit granted so far
  belongs to an attempt still in flight. So the server sees at most F + (attempts in flight
  at the open). With W workers (threads, or a semaphore's slots) each running one call at a
  time, that is at most F + W - 1 (the call that tripped the breaker has no attempt in flight).
- Permits are taken before httpx's connection pool is entered, so a burst larger than the
  pool is all "in flight" at once: the breaker cannot stop it, only its retries.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from resilience_otel import (
    AsyncResilientTransport,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    ResilientTransport,
    RetriesExhaustedError,
    StateChange,
)

from .conftest import fast_policy
from .faultserver import FaultServer, slow

if TYPE_CHECKING:
    from resilience_otel import Policy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THRESHOLD = 5
REQUESTS = 500
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
DOCUMENTED = {"HTTP 503", "CircuitOpenError", "RetriesExhaustedError", "unretried ReadError"}
DEADLINE = 20.0  # seconds; a deadlock fails the test long before pytest's own timeout


def _policy(*, reset_timeout: float = 60.0) -> Policy:
    """Retries on (3 attempts, 10 ms backoff), F=5, one half-open probe, generous call_timeout."""
    return fast_policy(
        max_attempts=3,
        failure_threshold=THRESHOLD,
        reset_timeout=reset_timeout,
        half_open_max_calls=1,
        call_timeout=5.0,  # pool waits count toward it; a 500-call burst must not time out
    )


def _label(result: httpx.Response | BaseException) -> str:
    """How one call ended, as a short label."""
    if isinstance(result, httpx.Response):
        return f"HTTP {result.status_code}"
    if isinstance(result, CircuitOpenError):
        return "CircuitOpenError"
    if isinstance(result, RetriesExhaustedError):
        return "RetriesExhaustedError"
    if type(result) is httpx.ReadError:  # the breaker opened before a resend: its own error
        return "unretried ReadError"
    return f"undocumented {type(result).__name__}: {result}"


class _AsyncCountingTransport(httpx.AsyncBaseTransport):
    """Counts attempts as they enter the real transport (on the event loop: no lock needed)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.started = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.started += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _OpenWatch:
    """Notes, at each transition to OPEN, the attempts started and the failures recorded."""

    def __init__(self, breaker: CircuitBreaker, counting: _AsyncCountingTransport) -> None:
        self.opens: list[tuple[int, int]] = []
        self._breaker = breaker
        self._counting = counting
        breaker.add_listener(self._on_change)

    def _on_change(self, change: StateChange) -> None:
        if change.to_state is BreakerState.OPEN:
            failures = self._breaker.snapshot().failures
            self.opens.append((self._counting.started, failures))


async def _async_call(client: httpx.AsyncClient, path: str = "/quotes") -> str:
    try:
        return _label(await client.get(path))
    except Exception as error:
        return _label(error)


def _async_setup(
    server: FaultServer, policy: Policy
) -> tuple[httpx.AsyncClient, AsyncResilientTransport, _OpenWatch]:
    counting = _AsyncCountingTransport(httpx.AsyncHTTPTransport(limits=LIMITS))
    transport = AsyncResilientTransport(counting, policy=policy)
    watch = _OpenWatch(transport.breaker, counting)
    client = httpx.AsyncClient(transport=transport, base_url=server.base_url)
    return client, transport, watch


# -- a failing upstream ----------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_burst_gets_no_attempt_after_the_breaker_opens(
    fault_server: FaultServer,
) -> None:
    """100 simultaneous calls on a 503 upstream: each is sent once, retries stop at the open."""
    # All calls take their permit before any failure is recorded, so all of them are in flight
    # at the open and the breaker can only stop their retries. (The burst is the pool's size,
    # not 500: httpcore 1.0.9's pool bookkeeping is quadratic in queued requests, so 500 queued
    # calls cost ~20 s of client CPU; encode/httpcore#1035.)
    burst = LIMITS.max_connections or 100
    fault_server.set_default("503")
    client, _, watch = _async_setup(fault_server, _policy())
    async with client:
        async with asyncio.timeout(DEADLINE):
            results = await asyncio.gather(*(_async_call(client) for _ in range(burst)))
    started_at_open, failures_at_open = watch.opens[0]
    in_flight_at_open = started_at_open - failures_at_open
    assert len(watch.opens) == 1
    assert failures_at_open == THRESHOLD
    assert fault_server.count() == THRESHOLD + in_flight_at_open  # nothing sent after the open
    # Without the breaker the retries would have tripled the load; here only calls that failed
    # before the open (at most F - 1) may have sent a second attempt.
    assert burst <= fault_server.count() <= burst + THRESHOLD - 1
    assert set(results) <= DOCUMENTED


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["503", "reset"])
async def test_async_500_calls_at_50_in_flight_are_shed_once_the_breaker_opens(
    fault_server: FaultServer, fault: str
) -> None:
    """500 calls, at most 50 in flight: the server sees at most F + 49 requests, none after open."""
    workers = 50
    fault_server.set_default(fault)
    client, _, watch = _async_setup(fault_server, _policy())
    slots = asyncio.Semaphore(workers)

    async def call() -> str:
        async with slots:
            return await _async_call(client)

    async with client:
        async with asyncio.timeout(DEADLINE):
            results = await asyncio.gather(*(call() for _ in range(REQUESTS)))
    started_at_open, failures_at_open = watch.opens[0]
    assert len(watch.opens) == 1
    assert failures_at_open == THRESHOLD
    assert fault_server.count() <= started_at_open  # == F + in flight at the open
    assert fault_server.count() <= THRESHOLD + workers - 1
    assert set(results) <= DOCUMENTED
    assert collections.Counter(results)["CircuitOpenError"] >= REQUESTS - workers - THRESHOLD


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_32_threads_on_one_client_are_shed_once_the_breaker_opens(
    fault_server: FaultServer, fault: str
) -> None:
    """32 threads x 16 calls share a client: at most F + 31 requests reach the server."""
    threads, calls_each = 32, 16
    fault_server.set_default(fault)
    transport = ResilientTransport(httpx.HTTPTransport(limits=LIMITS), policy=_policy())
    results: list[str] = []
    start = threading.Barrier(threads)

    def worker(client: httpx.Client) -> None:
        start.wait()
        for _ in range(calls_each):
            try:
                results.append(_label(client.get("/quotes")))
            except Exception as error:
                results.append(_label(error))

    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        pool = [threading.Thread(target=worker, args=(client,)) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=DEADLINE)
        assert not any(thread.is_alive() for thread in pool)
    assert len(results) == threads * calls_each
    assert transport.breaker.state is BreakerState.OPEN
    assert fault_server.count() <= THRESHOLD + threads - 1
    assert set(results) <= DOCUMENTED


# -- half-open: one probe among many --------------------------------------------------------
async def _open_async(client: httpx.AsyncClient, transport: AsyncResilientTransport) -> None:
    """Two calls of up to 3 attempts each against a 503 upstream make the 5 failures."""
    for _ in range(2):
        await client.get("/quotes")
    assert transport.breaker.state is BreakerState.OPEN


@pytest.mark.anyio
async def test_async_half_open_admits_one_probe_among_50_concurrent_calls(
    fault_server: FaultServer,
) -> None:
    """While the slow probe is out, the 49 other calls are rejected: the server sees just it."""
    fault_server.set_default("503")
    transport = AsyncResilientTransport(policy=_policy(reset_timeout=0.2))
    async with httpx.AsyncClient(transport=transport, base_url=fault_server.base_url) as client:
        await _open_async(client, transport)
        assert fault_server.count() == THRESHOLD
        fault_server.set_default("200")
        fault_server.script("/quotes", [slow(0.3)])  # the probe's answer takes 0.3 s
        await asyncio.sleep(0.25)
        async with asyncio.timeout(DEADLINE):
            results = await asyncio.gather(*(_async_call(client) for _ in range(50)))
    assert collections.Counter(results) == {"HTTP 200": 1, "CircuitOpenError": 49}
    assert fault_server.count() == THRESHOLD + 1
    assert transport.breaker.snapshot().state is BreakerState.CLOSED


def test_threads_half_open_admits_one_probe_among_50_concurrent_calls(
    fault_server: FaultServer,
) -> None:
    """50 threads calling at once in half-open: one probe reaches the server, 49 are rejected."""
    fault_server.set_default("503")
    transport = ResilientTransport(policy=_policy(reset_timeout=0.2))
    results: list[str] = []
    start = threading.Barrier(50)

    def worker(client: httpx.Client) -> None:
        start.wait()
        try:
            results.append(_label(client.get("/quotes")))
        except Exception as error:
            results.append(_label(error))

    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        for _ in range(2):
            client.get("/quotes")
        assert transport.breaker.state is BreakerState.OPEN
        fault_server.set_default("200")
        # Threads reach the breaker less promptly than tasks: give the probe a wider window.
        fault_server.script("/quotes", [slow(0.5)])
        pool = [threading.Thread(target=worker, args=(client,)) for _ in range(50)]
        time.sleep(0.25)  # past reset_timeout
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=DEADLINE)
        assert not any(thread.is_alive() for thread in pool)
    assert collections.Counter(results) == {"HTTP 200": 1, "CircuitOpenError": 49}
    assert fault_server.count() == THRESHOLD + 1
    assert transport.breaker.snapshot().state is BreakerState.CLOSED
