"""Shared breaker state (sync and async stores) and the stream dead-letter queue on a real
six-node Redis Cluster: every key of one breaker in one slot, state shared between processes'
stores, letters replayed exactly once."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis.asyncio.cluster
import redis.cluster

from resilience_otel import BreakerConfig, BreakerState, DeadLetter, DeadLetterReason
from resilience_otel.dlq import RedisStreamDeadLetterQueue
from resilience_otel.redis import AsyncRedisBreakerStore, RedisBreakerStore

from .cluster_server import RedisClusterServers

pytestmark = pytest.mark.integration

CONFIG = BreakerConfig(failure_threshold=3, reset_timeout=30.0)


def cluster_client(cluster: RedisClusterServers) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(
        host="127.0.0.1", port=cluster.ports[0], socket_timeout=1.0, socket_connect_timeout=1.0
    )


def fail(breaker: Any) -> None:
    permit = breaker.acquire(time.monotonic())
    breaker.record(permit, failure=True, duration=0.001, now=time.monotonic())


def test_a_breakers_keys_share_one_slot(cluster: RedisClusterServers) -> None:
    """State, probe slots and window of one breaker hash to one slot; the script ran there."""
    client = cluster_client(cluster)
    prefix = f"test-cluster:{uuid.uuid4().hex}"
    breaker = RedisBreakerStore(client, prefix=prefix).breaker(CONFIG, name="orders")
    fail(breaker)
    keys = [f"{prefix}:{{orders}}:{suffix}" for suffix in ("s", "p", "w")]
    assert len({client.keyslot(key) for key in keys}) == 1
    assert client.exists(keys[2]) == 1  # the window was written on the cluster
    assert (breaker.fallbacks, breaker.refusals) == (0, 0)
    client.close()


def test_sync_stores_on_the_cluster_share_a_trip(cluster: RedisClusterServers) -> None:
    """Failures split between two stores (two processes' clients) open the breaker for both."""
    prefix = f"test-cluster:{uuid.uuid4().hex}"
    first_client, second_client = cluster_client(cluster), cluster_client(cluster)
    first = RedisBreakerStore(first_client, prefix=prefix, sync_interval=0).breaker(
        CONFIG, name="b"
    )
    second = RedisBreakerStore(second_client, prefix=prefix, sync_interval=0).breaker(
        CONFIG, name="b"
    )
    fail(first)
    fail(second)
    fail(first)
    assert second.state is BreakerState.OPEN
    assert (first.fallbacks, second.fallbacks) == (0, 0)
    first_client.close()
    second_client.close()


@pytest.mark.anyio
async def test_async_stores_on_the_cluster_share_a_trip(cluster: RedisClusterServers) -> None:
    """The asyncio store on the cluster: failures from two stores open the breaker for both,
    once their scheduled steps have reached Redis."""
    prefix = f"test-cluster:{uuid.uuid4().hex}"
    clients = [
        redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        for _ in range(2)
    ]
    stores = [AsyncRedisBreakerStore(c, prefix=prefix, sync_interval=0) for c in clients]
    first, second = (store.breaker(CONFIG, name="b") for store in stores)
    try:
        for breaker, store in ((first, stores[0]), (second, stores[1]), (first, stores[0])):
            fail(breaker)
            await store.flush()
        second.state  # noqa: B018 (reading it schedules a refresh)
        await stores[1].flush()
        assert second.current_state is BreakerState.OPEN
        assert (first.fallbacks, second.fallbacks) == (0, 0)
    finally:
        for client in clients:
            await client.aclose()


def test_stream_dead_letters_are_stored_and_replayed_once_on_the_cluster(
    cluster: RedisClusterServers,
) -> None:
    """Letters put on a cluster-backed queue reach the stream and a replay handles each once;
    a second replay finds nothing."""
    client = cluster_client(cluster)
    stream = f"test-cluster:dead-letters:{uuid.uuid4().hex}"
    queue = RedisStreamDeadLetterQueue(client, stream=stream, maxlen=3, claim_idle=5.0)
    operations = [f"GET /{i}" for i in range(5)]
    for operation in operations:
        queue.put(letter(operation))
    assert queue.flush()
    assert (len(queue), queue.trimmed) == (3, 2)  # maxlen held, the trim counted
    handled: list[str] = []
    result = queue.replay(lambda item: handled.append(item.operation))
    assert (handled, result.succeeded) == (operations[2:], 3)
    assert queue.replay(lambda item: handled.append(item.operation)).succeeded == 0
    assert len(queue) == 0
    queue.close()
    client.delete(stream)
    client.close()


def letter(operation: str) -> DeadLetter:
    return DeadLetter(
        service="svc",
        operation=operation,
        reason=DeadLetterReason.RETRIES_EXHAUSTED,
        error_class="transient",
        error_type="503",
        message="HTTP 503",
        attempts=3,
        first_attempt_at=1_767_225_600.0,
        failed_at=1_767_225_601.0,
    )
