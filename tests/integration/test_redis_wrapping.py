"""What ``redis.instrument()`` must not change: the retry of other clients on the pool, the
client's own explicit retry settings, blocking commands' block times, the error types a Redis
handler catches; and the paths it must guard too: commands while a pipeline WATCHes, pub/sub.

Fault tests start their own ``redis-server`` and put a fault proxy in front of it; the rest use
the machine's Redis under a random key prefix.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis import exceptions as rex
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience_otel import BreakerState, CircuitOpenError
from resilience_otel.redis import breaker_of, instrument
from tests.support.faultproxy import BLACKHOLE, FaultProxy

from .redis_server import RedisServer
from .test_redis import EVENT_RETRY, HOST, SHARED_PORT, Otel, event_names, fast_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def otel() -> Iterator[Otel]:
    """In-memory span and metric exporters for one test."""
    telemetry = Otel()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def key() -> Iterator[str]:
    """A key name unique to this test on the shared Redis, deleted afterwards."""
    name = f"resilience-otel-test:{uuid.uuid4().hex[:12]}"
    yield name
    with redis.Redis(host=HOST, port=SHARED_PORT) as raw:
        raw.delete(name)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of a test-owned redis-server."""
    with RedisServer() as server, FaultProxy((HOST, server.port)) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def async_proxy() -> AsyncIterator[FaultProxy]:
    """:func:`proxy` for async tests (the same server and proxy, set up in the loop's test)."""
    with RedisServer() as server, FaultProxy((HOST, server.port)) as fault_proxy:
        yield fault_proxy


def _retries(pool: Any) -> set[int]:
    """The retry counts of every connection ``pool`` holds."""
    held = [*pool._available_connections, *pool._in_use_connections]
    return {conn.retry.get_retries() for conn in held}


# -- retry: which layer, and never another client's -------------------------------------------
def test_sync_instrumenting_one_client_leaves_another_on_its_pool_alone(proxy: FaultProxy) -> None:
    """Two clients on one pool: instrumenting a keeps b's 2 retries, which still ride out a
    dropped connection, while a's commands get one redis-py try each."""
    pool = redis.ConnectionPool(host=HOST, port=proxy.port, retry=Retry(NoBackoff(), 2))
    a, b = redis.Redis(connection_pool=pool), redis.Redis(connection_pool=pool)
    b.ping()
    instrument(a, policy=fast_policy(max_attempts=1), keep_client_retry=False)
    assert b.get_retry() is not None
    assert b.get_retry().get_retries() == 2
    assert _retries(pool) == {2}
    proxy.reset_all()
    assert b.get("k") is None  # redis-py reconnected and resent
    proxy.reset_all()
    with pytest.raises(rex.ConnectionError):
        a.get("k")  # one try: the policy (one attempt) is the only retry layer for a
    pool.disconnect()


@pytest.mark.anyio
async def test_async_instrumenting_one_client_leaves_another_on_its_pool_alone(
    async_proxy: FaultProxy,
) -> None:
    """The async twin: b keeps its retry and reconnects; a makes one try."""
    port = async_proxy.port
    pool = redis.asyncio.ConnectionPool(host=HOST, port=port, retry=AsyncRetry(NoBackoff(), 2))
    a, b = redis.asyncio.Redis(connection_pool=pool), redis.asyncio.Redis(connection_pool=pool)
    await b.ping()
    instrument(a, policy=fast_policy(max_attempts=1), keep_client_retry=False)
    assert b.get_retry() is not None
    assert b.get_retry().get_retries() == 2
    assert _retries(pool) == {2}
    async_proxy.reset_all()
    assert await b.get("k") is None
    async_proxy.reset_all()
    with pytest.raises(rex.ConnectionError):
        await a.get("k")
    await pool.disconnect()


def test_explicit_client_retry_is_kept_and_the_choice_logged(
    proxy: FaultProxy, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """retry=Retry(NoBackoff(), 2) with a retrying policy: redis-py retries, ours makes one
    attempt, and a warning says so."""
    client = redis.Redis(host=HOST, port=proxy.port, retry=Retry(NoBackoff(), 2))
    with caplog.at_level(logging.WARNING, logger="resilience_otel"):
        instrument(client, policy=fast_policy(max_attempts=3), **otel.providers)
    assert [r.getMessage() for r in caplog.records if "retries on its own" in r.getMessage()]
    assert client.get_retry().get_retries() == 2
    client.ping()
    proxy.reset_all()
    assert client.get("k") is None  # redis-py reconnected inside our one attempt
    (span,) = [span for span in otel.spans() if span.name == "GET"]
    assert EVENT_RETRY not in event_names(span)
    client.close()


def test_default_client_retry_gives_way_to_a_retrying_policy(
    proxy: FaultProxy, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py's default retry and max_attempts=3: ours retries (one retry event), quietly."""
    client = redis.Redis(host=HOST, port=proxy.port)
    with caplog.at_level(logging.WARNING, logger="resilience_otel"):
        instrument(client, policy=fast_policy(max_attempts=3), **otel.providers)
    assert not caplog.records
    client.ping()
    proxy.reset_all()
    assert client.get("k") is None
    (span,) = [span for span in otel.spans() if span.name == "GET"]
    assert event_names(span).count(EVENT_RETRY) == 1
    client.close()


def test_policy_that_does_not_retry_keeps_redis_py_retry(proxy: FaultProxy) -> None:
    """max_attempts=1 (nothing to stack): the client's default retry rides out a drop."""
    client = instrument(redis.Redis(host=HOST, port=proxy.port), policy=fast_policy(max_attempts=1))
    client.ping()
    proxy.reset_all()
    assert client.get("k") is None
    client.close()


# -- blocking commands -------------------------------------------------------------------------
@pytest.mark.anyio
async def test_async_empty_blpop_past_call_timeout_never_opens_the_breaker(key: str) -> None:
    """BLPOP 0.4 s under call_timeout 0.15 s, failure_threshold 2: two empty pops, closed."""
    policy = fast_policy(call_timeout=0.15, failure_threshold=2)
    client = instrument(redis.asyncio.Redis(host=HOST, port=SHARED_PORT), policy=policy)
    for _ in range(2):
        assert await client.blpop([key], timeout=0.4) is None
    assert breaker_of(client).state is BreakerState.CLOSED
    assert breaker_of(client).snapshot().failures == 0
    await client.aclose()


def test_sync_empty_blpop_past_call_timeout_never_opens_the_breaker(key: str) -> None:
    """The sync twin: the socket cut waits for the block time too."""
    policy = fast_policy(call_timeout=0.15, failure_threshold=2)
    client = instrument(redis.Redis(host=HOST, port=SHARED_PORT), policy=policy)
    for _ in range(2):
        assert client.blpop([key], timeout=0.4) is None
    assert breaker_of(client).state is BreakerState.CLOSED
    client.close()


@pytest.mark.anyio
async def test_async_xread_block_returns_what_arrives_during_the_block(key: str) -> None:
    """XREAD BLOCK 400 under call_timeout 0.15 s: an entry added at 0.25 s is returned."""
    client = instrument(
        redis.asyncio.Redis(host=HOST, port=SHARED_PORT), policy=fast_policy(call_timeout=0.15)
    )
    writer = redis.asyncio.Redis(host=HOST, port=SHARED_PORT)

    async def add_later() -> None:
        await asyncio.sleep(0.25)
        await writer.xadd(key, {"f": "v"})

    task = asyncio.create_task(add_later())
    result = await client.xread({key: "$"}, block=400)
    await task
    assert result
    assert result[0][0] == key.encode()
    await client.aclose()
    await writer.aclose()


def test_blocking_command_in_a_pipeline_extends_its_bound(key: str) -> None:
    """A (non-transaction) pipeline with BLPOP 0.4 s under call_timeout 0.15 s succeeds."""
    client = instrument(
        redis.Redis(host=HOST, port=SHARED_PORT), policy=fast_policy(call_timeout=0.15)
    )
    pipe = client.pipeline(transaction=False)
    pipe.blpop([key], timeout=0.4)
    pipe.llen(key)
    assert pipe.execute() == [None, 0]
    client.close()


# -- every timeout we raise is a redis TimeoutError ----------------------------------------------
def test_sync_timeouts_are_caught_by_redis_handlers(proxy: FaultProxy) -> None:
    """A silent server: command and pipeline timeouts are caught as RedisError and as
    redis.exceptions.TimeoutError."""
    client = instrument(
        redis.Redis(host=HOST, port=proxy.port), policy=fast_policy(call_timeout=0.15)
    )
    client.ping()
    proxy.set_mode(BLACKHOLE)
    with pytest.raises(rex.RedisError) as caught:
        client.get("k")
    assert isinstance(caught.value, rex.TimeoutError)
    assert isinstance(caught.value, TimeoutError)
    pipe = client.pipeline()
    pipe.get("k")
    with pytest.raises(rex.TimeoutError):
        pipe.execute()
    client.close()


@pytest.mark.anyio
async def test_async_timeouts_are_caught_by_redis_handlers(async_proxy: FaultProxy) -> None:
    """Async: a cancelled command and pipeline raise redis.exceptions.TimeoutError too."""
    client = instrument(
        redis.asyncio.Redis(host=HOST, port=async_proxy.port),
        policy=fast_policy(call_timeout=0.15),
    )
    await client.ping()
    async_proxy.set_mode(BLACKHOLE)
    with pytest.raises(rex.RedisError) as caught:
        await client.get("k")
    assert isinstance(caught.value, rex.TimeoutError)
    assert isinstance(caught.value, TimeoutError)
    pipe = client.pipeline()
    pipe.get("k")
    with pytest.raises(rex.TimeoutError):
        await pipe.execute()
    await client.aclose()


# -- WATCH mode --------------------------------------------------------------------------------
def test_sync_watch_mode_commands_are_guarded_operations(key: str, otel: Otel) -> None:
    """pipe.watch(k); pipe.get(k); MULTI/EXEC: WATCH and GET get spans of their own."""
    client = instrument(
        redis.Redis(host=HOST, port=SHARED_PORT), policy=fast_policy(), **otel.providers
    )
    with client.pipeline() as pipe:
        pipe.watch(key)
        assert pipe.get(key) is None
        pipe.multi()
        pipe.set(key, "v")
        assert pipe.execute() == [True]
    assert [span.name for span in otel.spans()] == ["WATCH", "GET", "MULTI"]
    client.close()


@pytest.mark.anyio
async def test_async_watch_mode_commands_are_guarded_operations(key: str, otel: Otel) -> None:
    """The async twin."""
    client = instrument(
        redis.asyncio.Redis(host=HOST, port=SHARED_PORT), policy=fast_policy(), **otel.providers
    )
    async with client.pipeline() as pipe:
        await pipe.watch(key)
        assert await pipe.get(key) is None
        pipe.multi()
        pipe.set(key, "v")
        assert await pipe.execute() == [True]
    assert [span.name for span in otel.spans()] == ["WATCH", "GET", "MULTI"]
    await client.aclose()


def test_watch_mode_command_is_never_resent(proxy: FaultProxy, otel: Otel) -> None:
    """A dropped connection while WATCHing: GET fails after one attempt (a resend would run
    without the WATCH), although GET is read-only and the policy retries."""
    client = instrument(
        redis.Redis(host=HOST, port=proxy.port),
        policy=fast_policy(max_attempts=3),
        **otel.providers,
    )
    with client.pipeline() as pipe:
        pipe.watch("k")
        proxy.reset_all()
        with pytest.raises(rex.RedisError):
            pipe.get("k")
    (span,) = [span for span in otel.spans() if span.name == "GET"]
    assert EVENT_RETRY not in event_names(span)
    client.close()


@pytest.mark.anyio
async def test_async_watch_mode_command_is_never_resent(
    async_proxy: FaultProxy, otel: Otel
) -> None:
    """The async twin: one attempt for a GET made while WATCHing, though the policy retries."""
    client = instrument(
        redis.asyncio.Redis(host=HOST, port=async_proxy.port),
        policy=fast_policy(max_attempts=3),
        **otel.providers,
    )
    async with client.pipeline() as pipe:
        await pipe.watch("k")
        async_proxy.reset_all()
        with pytest.raises(rex.RedisError):
            await pipe.get("k")
    (span,) = [span for span in otel.spans() if span.name == "GET"]
    assert EVENT_RETRY not in event_names(span)
    await client.aclose()


def _read_until_failure(pubsub: Any) -> None:
    """Read from ``pubsub`` until a read raises (at most 3 reads)."""
    for _ in range(3):
        pubsub.get_message(timeout=0.2)


# -- pub/sub -------------------------------------------------------------------------------------
def test_sync_subscribe_is_an_operation_and_an_open_breaker_refuses_it(otel: Otel) -> None:
    """SUBSCRIBE gets a span; with the breaker open, subscribing raises CircuitOpenError."""
    client = instrument(
        redis.Redis(host=HOST, port=SHARED_PORT), policy=fast_policy(), **otel.providers
    )
    channel = f"resilience-otel-test:{uuid.uuid4().hex}"
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=1.0)["type"] == "subscribe"
    assert [span.name for span in otel.spans()] == ["SUBSCRIBE"]
    pubsub.close()
    breaker_of(client).force_open()
    with pytest.raises(rex.ConnectionError) as caught:
        client.pubsub().subscribe(channel)
    assert isinstance(caught.value, CircuitOpenError)
    client.close()


@pytest.mark.anyio
async def test_async_subscribe_is_an_operation_and_an_open_breaker_refuses_it(otel: Otel) -> None:
    """The async twin: a SUBSCRIBE span, then a refusal while the breaker is open."""
    client = instrument(
        redis.asyncio.Redis(host=HOST, port=SHARED_PORT), policy=fast_policy(), **otel.providers
    )
    channel = f"resilience-otel-test:{uuid.uuid4().hex}"
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    message = await pubsub.get_message(timeout=1.0)
    assert message is not None
    assert message["type"] == "subscribe"
    assert [span.name for span in otel.spans()] == ["SUBSCRIBE"]
    await pubsub.aclose()
    breaker_of(client).force_open()
    with pytest.raises(rex.ConnectionError) as caught:
        await client.pubsub().subscribe(channel)
    assert isinstance(caught.value, CircuitOpenError)
    await client.aclose()


@pytest.mark.anyio
async def test_async_pubsub_reconnect_goes_through_the_breaker(
    async_proxy: FaultProxy, otel: Otel
) -> None:
    """The async twin: a dropped connection comes back as a RECONNECT operation and
    messages flow again."""
    client = instrument(
        redis.asyncio.Redis(host=HOST, port=async_proxy.port, retry=AsyncRetry(NoBackoff(), 1)),
        policy=fast_policy(max_attempts=1),
        **otel.providers,
    )
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("news")
    await pubsub.get_message(timeout=0.2)
    async_proxy.reset_all()
    await pubsub.get_message(timeout=0.2)
    assert "RECONNECT" in [span.name for span in otel.spans()]
    publisher = redis.asyncio.Redis(host=HOST, port=async_proxy.port)
    for _ in range(200):  # until the resubscription has reached the server (at most 2 s)
        if await publisher.publish("news", "hello"):
            break
        await asyncio.sleep(0.01)
    message = await pubsub.get_message(timeout=1.0)
    assert message is not None
    assert message["data"] == b"hello"
    await pubsub.aclose()
    await publisher.aclose()
    await client.aclose()


def test_sync_pubsub_reconnect_goes_through_the_breaker(proxy: FaultProxy, otel: Otel) -> None:
    """A dropped pub/sub connection is reconnected as a RECONNECT operation (resubscribed,
    messages flow again); with the breaker open the reconnect is refused."""
    client = instrument(
        redis.Redis(host=HOST, port=proxy.port, retry=Retry(NoBackoff(), 1)),
        policy=fast_policy(max_attempts=1),
        **otel.providers,
    )
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("news")
    pubsub.get_message(timeout=0.2)
    proxy.reset_all()
    pubsub.get_message(timeout=0.2)  # the read fails; redis-py reconnects and resubscribes
    assert "RECONNECT" in [span.name for span in otel.spans()]
    publisher = redis.Redis(host=HOST, port=proxy.port)
    deadline = time.monotonic() + 2.0
    while publisher.publish("news", "hello") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    message = pubsub.get_message(timeout=1.0)
    assert message is not None
    assert message["data"] == b"hello"
    breaker_of(client).force_open()
    proxy.reset_all()
    with pytest.raises(rex.ConnectionError) as refused:
        _read_until_failure(pubsub)
    assert isinstance(refused.value, CircuitOpenError)
    publisher.close()
    client.close()
