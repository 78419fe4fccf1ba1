"""AsyncRedisBreakerStore against the machine's Redis: breaker state shared between asyncio
"processes" (each its own client and store), without a call ever waiting on Redis, and the
same fallback to local state as the sync store."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from resilience_otel import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    Policy,
    RetryConfig,
)
from resilience_otel.redis import (
    AsyncRedisBreakerStore,
    RedisBreakerStore,
    SharedCircuitBreaker,
    instrument,
)

pytestmark = pytest.mark.integration

CONFIG = BreakerConfig(failure_threshold=3, reset_timeout=30.0)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    return f"test-async-store:{uuid.uuid4().hex}"


@pytest.fixture
async def stores(prefix: str) -> AsyncIterator[list[AsyncRedisBreakerStore]]:
    """Two stores, each with its own client: two processes sharing Redis."""
    clients = [redis.asyncio.Redis(socket_timeout=1.0) for _ in range(2)]
    yield [AsyncRedisBreakerStore(c, prefix=prefix, sync_interval=0) for c in clients]
    keys = [key async for key in clients[0].scan_iter(match=f"{prefix}:*")]
    if keys:
        await clients[0].delete(*keys)
    for client in clients:
        await client.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def fail(breaker: SharedCircuitBreaker) -> None:
    permit = breaker.acquire(time.monotonic())
    breaker.record(permit, failure=True, duration=0.001, now=time.monotonic())


def succeed(breaker: SharedCircuitBreaker, permit: int) -> None:
    breaker.record(permit, failure=False, duration=0.001, now=time.monotonic())


@pytest.mark.anyio
async def test_failures_from_two_stores_open_the_breaker_for_both(
    stores: list[AsyncRedisBreakerStore],
) -> None:
    """Failures split between two processes open the shared breaker; both then reject."""
    first, second = (store.breaker(CONFIG, name="b") for store in stores)
    for breaker, store in ((first, stores[0]), (second, stores[1]), (first, stores[0])):
        fail(breaker)
        await store.flush()
    second.state  # noqa: B018 (reading a stale view schedules its refresh)
    await stores[1].flush()
    with pytest.raises(CircuitOpenError) as raised:
        second.acquire(time.monotonic())
    assert 29.0 < raised.value.retry_after <= 30.0
    assert (first.fallbacks, second.fallbacks) == (0, 0)


@pytest.mark.anyio
async def test_calls_never_wait_on_a_silent_redis(silent_port: int, prefix: str) -> None:
    """With Redis silent, acquire and record return at once; after the client's timeout the
    breaker falls back to local state, counted once."""
    client = redis.asyncio.Redis(port=silent_port, socket_timeout=0.3)
    store = AsyncRedisBreakerStore(client, prefix=prefix, sync_interval=0)
    breaker = store.breaker(CONFIG, name="b")
    started = time.monotonic()
    for _ in range(20):
        permit = breaker.acquire(time.monotonic())
        succeed(breaker, permit)
    assert time.monotonic() - started < 0.05  # twenty calls, no round trip waited for
    await store.flush()
    assert breaker.fallbacks == 1
    assert breaker.degraded
    await client.aclose()


@pytest.mark.anyio
async def test_unreachable_redis_falls_back_to_local_state_with_one_warning(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refusing connections: calls are admitted, local failures open the local breaker,
    one warning is logged."""
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    client = redis.asyncio.Redis(port=1, socket_timeout=0.2, socket_connect_timeout=0.2)
    store = AsyncRedisBreakerStore(client, prefix=prefix, recheck_interval=60.0)
    breaker = store.breaker(BreakerConfig(failure_threshold=2), name="b")
    fail(breaker)
    await store.flush()
    fail(breaker)  # now on local state
    fail(breaker)
    assert breaker.current_state is BreakerState.OPEN
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    await client.aclose()


@pytest.mark.anyio
async def test_a_probe_is_claimed_in_redis_and_its_success_closes_for_both(
    stores: list[AsyncRedisBreakerStore],
) -> None:
    """After reset_timeout the first call schedules a probe claim and is refused (retry_after
    0); the next runs as the probe, and its success closes the breaker for the other store."""
    config = BreakerConfig(failure_threshold=1, reset_timeout=0.2, call_timeout=None)
    first, second = (store.breaker(config, name="b") for store in stores)
    fail(first)
    await stores[0].flush()
    await asyncio.sleep(0.25)
    second.state  # noqa: B018 (a view learns of the trip at its first refresh)
    await stores[1].flush()
    with pytest.raises(CircuitOpenError) as raised:
        first.acquire(time.monotonic())
    assert raised.value.retry_after == 0.0
    await stores[0].flush()
    permit = first.acquire(time.monotonic())  # the claimed probe
    with pytest.raises(CircuitOpenError):
        second.acquire(time.monotonic())  # one probe slot across processes, taken
    await stores[1].flush()
    succeed(first, permit)
    await stores[0].flush()
    second.state  # noqa: B018
    await stores[1].flush()
    assert second.current_state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_force_open_reaches_the_other_store(stores: list[AsyncRedisBreakerStore]) -> None:
    """force_open in one process is seen by the other at its next refresh."""
    first, second = (store.breaker(CONFIG, name="b") for store in stores)
    first.force_open()
    await stores[0].flush()
    second.state  # noqa: B018
    await stores[1].flush()
    assert second.current_state is BreakerState.FORCED_OPEN


@pytest.mark.anyio
async def test_instrumented_async_client_trips_the_breaker_of_another_process(
    stores: list[AsyncRedisBreakerStore],
) -> None:
    """Failing commands of an instrumented redis.asyncio client, guarded by a shared breaker,
    open that breaker for another process's store."""
    config = BreakerConfig(failure_threshold=3, reset_timeout=30.0, call_timeout=1.0)
    policy = Policy(service="b", breaker=config, retry=RetryConfig(max_attempts=1))
    dead = redis.asyncio.Redis(port=1, retry=AsyncRetry(NoBackoff(), 0))
    client: Any = instrument(dead, policy=policy, breaker=stores[0].breaker(config, name="b"))
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.get("k")
        await stores[0].flush()
    other = stores[1].breaker(config, name="b")
    other.state  # noqa: B018
    await stores[1].flush()
    assert other.current_state is BreakerState.OPEN
    await dead.aclose()


def test_the_store_takes_only_asyncio_clients() -> None:
    """A sync client is refused with a TypeError naming what is expected."""
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        AsyncRedisBreakerStore(redis.Redis())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_counts_recorded_while_a_sync_is_in_flight_reach_redis_with_the_next(
    stores: list[AsyncRedisBreakerStore],
) -> None:
    """Five failures recorded back to back (one sync in flight at a time): all five are in the
    shared window once the steps have finished; none is lost to coalescing."""
    config = BreakerConfig(failure_threshold=100)
    first, second = (store.breaker(config, name="b") for store in stores)
    for _ in range(5):
        fail(first)
    await stores[0].flush()
    second.snapshot()  # schedules the other view's refresh
    await stores[1].flush()
    assert second.snapshot().failures == 5


@pytest.mark.anyio
async def test_a_sync_store_and_an_async_store_share_one_breaker(
    stores: list[AsyncRedisBreakerStore], prefix: str
) -> None:
    """Same prefix and name: a trip through the sync store is seen by the async store."""
    sync_client = redis.Redis(socket_timeout=1.0)
    tripping = RedisBreakerStore(sync_client, prefix=prefix).breaker(CONFIG, name="b")
    for _ in range(3):
        fail(tripping)
    watching = stores[0].breaker(CONFIG, name="b")
    watching.state  # noqa: B018
    await stores[0].flush()
    assert watching.current_state is BreakerState.OPEN
    sync_client.close()
