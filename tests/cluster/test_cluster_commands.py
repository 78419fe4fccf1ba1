"""Instrumented Redis Cluster clients against a real six-node cluster: spans name the node that
answered, redirects after slot moves are never failures nor our retries, a CLUSTER FAILOVER
under a command loop is survived with every acknowledged write applied exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience_otel.redis import breaker_of, instrument

from .cluster_server import RedisClusterServers, move_slot
from .conftest import Otel, policy

pytestmark = pytest.mark.integration


def sync_client(cluster: RedisClusterServers, otel: Otel, **options: Any) -> Any:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0], **options)
    return instrument(client, policy=policy(), **otel.providers)


@pytest.fixture
def client(cluster: RedisClusterServers, otel: Otel) -> Iterator[Any]:
    client = sync_client(cluster, otel)
    yield client
    client.close()


def key_on_each_primary(client: Any, cluster: RedisClusterServers) -> dict[int, str]:
    """A fresh key for each primary's port."""
    keys: dict[int, str] = {}
    while len(keys) < len(cluster.primaries()):
        key = uuid.uuid4().hex
        keys.setdefault(cluster.primary_of_slot(client.keyslot(key)), key)
    return keys


def node_of(span: Any) -> tuple[Any, Any]:
    return span.attributes.get("server.address"), span.attributes.get("server.port")


def test_each_command_span_names_the_primary_that_answered(
    client: Any, cluster: RedisClusterServers, otel: Otel
) -> None:
    """A SET on each primary's slot: one span each, naming that primary's address and port."""
    keys = key_on_each_primary(client, cluster)
    for key in keys.values():
        client.set(key, "v")
    spans = [s for s in otel.spans() if s.name == "SET"]
    assert [node_of(s) for s in spans] == [("127.0.0.1", port) for port in keys]
    assert {s.attributes["db.namespace"] for s in spans} == {"0"}


def test_moved_redirects_after_a_slot_move_are_neither_failures_nor_retries(
    client: Any, cluster: RedisClusterServers, otel: Otel
) -> None:
    """After the key's slot moves, redis-py follows MOVED: the calls succeed, none counts as a
    failure, none is retried, and the span names the new owner."""
    key = uuid.uuid4().hex
    client.set(key, "1")  # the client now caches the slot's old owner
    slot = client.keyslot(key)
    target = next(p for p in cluster.primaries() if p != cluster.primary_of_slot(slot))
    move_slot(cluster, slot, target)
    assert client.get(key) == b"1"
    assert client.incr(key) == 2
    assert otel.outcomes() == {("success", "none"): 3}
    assert otel.points("resilience.retries") == []
    assert node_of(otel.spans()[-1]) == ("127.0.0.1", target)


def test_pipeline_and_transaction_run_as_one_operation_each(client: Any, otel: Otel) -> None:
    """A cross-slot pipeline is one PIPELINE span; a one-slot transaction one MULTI span."""
    tag = uuid.uuid4().hex
    pipe = client.pipeline()
    pipe.set(f"a{tag}", 1).set(f"b{tag}", 2).get(f"a{tag}")
    assert pipe.execute() == [True, True, b"1"]
    tx = client.pipeline(transaction=True)
    tx.set(f"{{{tag}}}x", 1).incr(f"{{{tag}}}x")
    assert tx.execute() == [b"OK", 2]  # redis-py leaves a cluster transaction's OK raw
    spans = [(s.name, s.attributes.get("db.operation.batch.size")) for s in otel.spans()]
    assert spans == [("PIPELINE", 3), ("MULTI", 2)]


def test_redis_py_whole_command_retries_make_way_for_the_policy(
    cluster: RedisClusterServers, otel: Otel
) -> None:
    """By default redis-py's cluster retry stays as configured outside our attempts; an
    explicitly configured one is kept (and the policy then makes one attempt)."""
    plain = sync_client(cluster, otel)
    assert plain.retry.get_retries() == 10  # outside our attempts: redis-py's default
    kept = redis.cluster.RedisCluster(
        host="127.0.0.1", port=cluster.ports[0], retry=Retry(NoBackoff(), 2)
    )
    instrument(kept, policy=policy(), **otel.providers)
    assert type(kept.retry) is Retry  # redis-py's, untouched
    assert kept._resilience_guard.policy.retry.max_attempts == 1  # retries never multiply
    plain.close()
    kept.close()


def test_a_cluster_failover_under_a_command_loop_is_survived(
    client: Any, cluster: RedisClusterServers, otel: Otel
) -> None:
    """INCRs on every primary keep succeeding through a CLUSTER FAILOVER: each acknowledged
    INCR is applied once (the counters equal the acknowledgements), nothing fails or retries,
    and spans after it name the promoted replica."""
    keys = key_on_each_primary(client, cluster)
    acknowledged = dict.fromkeys(keys.values(), 0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for key in keys.values():
                try:
                    client.incr(key)
                except Exception as exc:  # recorded: the test asserts there are none
                    errors.append(exc)
                else:
                    acknowledged[key] += 1

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        time.sleep(0.2)
        old, key = next(iter(keys.items()))
        replica = cluster.replicas_of(old)[0]
        started = time.monotonic()
        cluster.failover(replica)
        took = time.monotonic() - started
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(10)
    assert errors == []
    assert {k: int(client.get(k)) for k in keys.values()} == acknowledged
    assert all(count > 0 for count in acknowledged.values())
    outcomes = otel.outcomes()
    assert set(outcomes) == {("success", "none")}, outcomes
    assert otel.points("resilience.retries") == []
    client.incr(key)
    assert node_of(otel.spans()[-1]) == ("127.0.0.1", replica)
    assert breaker_of(client).current_state.value == "closed"
    print(f"failover took {took:.2f}s; acknowledged {sum(acknowledged.values())} INCRs")


@pytest.mark.anyio
async def test_async_cluster_client_commands_and_pipelines(
    cluster: RedisClusterServers, otel: Otel
) -> None:
    """The asyncio cluster client: commands name the answering primary, a pipeline is one
    operation, and redirects after a slot move are not failures."""
    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    instrument(client, policy=policy(), **otel.providers)
    try:
        key = uuid.uuid4().hex
        assert await client.set(key, "v")
        owner = cluster.primary_of_slot(client.keyslot(key))
        assert node_of(otel.spans()[-1]) == ("127.0.0.1", owner)
        target = next(p for p in cluster.primaries() if p != owner)
        move_slot(cluster, client.keyslot(key), target)
        assert await client.get(key) == b"v"
        assert node_of(otel.spans()[-1]) == ("127.0.0.1", target)
        pipe = client.pipeline()
        pipe.set(f"{key}a", 1)
        pipe.get(key)
        assert await pipe.execute() == [True, b"v"]
        assert otel.spans()[-1].name == "PIPELINE"
        assert otel.outcomes() == {("success", "none"): 3}
        assert otel.points("resilience.retries") == []
    finally:
        await client.aclose()


@pytest.mark.parametrize("transaction", [False, True])
def test_a_pipeline_refused_at_connect_is_resent_whole_and_runs_once(
    client: Any, otel: Otel, transaction: bool
) -> None:
    """A pipeline (or transaction) whose first attempt could not connect is resent with its
    commands (and a transaction's slot) intact; its INCR is applied once."""
    tag = uuid.uuid4().hex
    pipe = client.pipeline(transaction=transaction)
    strategy = pipe._execution_strategy
    run = strategy.execute
    failures = [redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1.")]

    def refused_once(*args: Any, **kwargs: Any) -> Any:
        if failures:  # ClusterPipeline.execute() then resets the queue and slots, as always
            raise failures.pop()
        return run(*args, **kwargs)

    strategy.execute = refused_once
    pipe.incr(f"{{{tag}}}n").get(f"{{{tag}}}n")
    assert pipe.execute() == [1, b"1"]
    assert client.get(f"{{{tag}}}n") == b"1"
    assert sum(point.value for _, point in otel.points("resilience.retries")) == 1


def test_a_paused_node_is_cut_at_the_attempt_timeout_on_the_sync_client(
    cluster: RedisClusterServers, otel: Otel
) -> None:
    """With the key's primary paused (CLIENT PAUSE 1.5 s), a GET with call_timeout=0.3 fails
    as a timeout well before the pause ends, its span naming that primary; once the pause
    ends, the client works again."""
    client: Any = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    instrument(client, policy=policy(max_attempts=1, call_timeout=0.3), **otel.providers)
    key = uuid.uuid4().hex
    client.set(key, "v")
    owner = cluster.primary_of_slot(client.keyslot(key))
    assert cluster.cli(owner, "CLIENT", "PAUSE", "1500", "ALL") == "OK"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.get(key)
    took = time.monotonic() - started
    assert took < 1.0, took
    assert node_of(otel.spans()[-1]) == ("127.0.0.1", owner)  # the node it failed on
    time.sleep(1.6 - took)
    assert client.get(key) == b"v"
    client.close()


@pytest.mark.anyio
async def test_the_async_client_survives_a_cluster_failover_under_a_command_loop(
    cluster: RedisClusterServers, otel: Otel
) -> None:
    """asyncio INCRs on every primary keep succeeding through a CLUSTER FAILOVER: each
    acknowledged INCR applied once, no failure, no retry."""
    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    instrument(client, policy=policy(), **otel.providers)
    keys: dict[int, str] = {}
    while len(keys) < len(cluster.primaries()):
        key = uuid.uuid4().hex
        keys.setdefault(cluster.primary_of_slot(client.keyslot(key)), key)
    acknowledged = dict.fromkeys(keys.values(), 0)
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            for key in keys.values():
                await client.incr(key)
                acknowledged[key] += 1

    worker = asyncio.create_task(loop())
    try:
        await asyncio.sleep(0.2)
        replica = cluster.replicas_of(next(iter(keys)))[0]
        await asyncio.to_thread(cluster.failover, replica)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await worker  # re-raises any error the loop met
    assert {k: int(await client.get(k)) for k in keys.values()} == acknowledged
    assert all(count > 0 for count in acknowledged.values())
    assert set(otel.outcomes()) == {("success", "none")}
    assert otel.points("resilience.retries") == []
    await client.aclose()
