"""Nodes of a real six-node cluster crash: when a primary dies its replica takes over after the
cluster's node timeout, and a read issued at the crash succeeds through our retries alone
(redis-py refreshes the topology after each failed attempt but does not retry the command
itself); when every node dies the breaker counts the failures and opens."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis.cluster

from resilience_otel import BreakerConfig, CircuitOpenError, Policy, RetryConfig
from resilience_otel.redis import instrument

from .cluster_server import RedisClusterServers
from .conftest import SERVICE, Otel

pytestmark = pytest.mark.integration


def wait_for_key(port: int, key: str) -> None:
    """Wait until the replica on ``port`` has ``key`` (so the crash loses nothing)."""
    replica = redis.Redis(port=port)
    replica.execute_command("READONLY")
    deadline = time.monotonic() + 10
    while not replica.exists(key):
        assert time.monotonic() < deadline, f"{key} never reached the replica on {port}"
        time.sleep(0.05)
    replica.close()


def test_a_read_survives_the_crash_of_its_primary_through_our_retries(
    cluster: RedisClusterServers, otel: Otel
) -> None:
    """GET on a crashed primary's slot: failed attempts are retried by the policy until the
    replica is promoted, each failed attempt costs one topology refresh (none of redis-py's
    own whole-command retries), and the read succeeds."""
    policy = Policy(
        service=SERVICE,
        breaker=BreakerConfig(failure_threshold=1000, call_timeout=2.0),
        retry=RetryConfig(
            max_attempts=30, base_delay=0.2, max_delay=0.5, jitter="none",  # type: ignore[arg-type]
            budget=None, total_timeout=20.0,
        ),
    )  # fmt: skip
    client: Any = redis.cluster.RedisCluster(
        host="127.0.0.1", port=cluster.ports[0], socket_timeout=0.5, socket_connect_timeout=0.5
    )
    instrument(client, policy=policy, **otel.providers)
    key = uuid.uuid4().hex
    client.set(key, "kept")
    primary = cluster.primary_of_slot(client.keyslot(key))
    replica = cluster.replicas_of(primary)[0]
    wait_for_key(replica, key)
    refreshes = [0]
    initialize = client.nodes_manager.initialize

    def counting(*args: Any, **kwargs: Any) -> Any:
        refreshes[0] += 1
        return initialize(*args, **kwargs)

    client.nodes_manager.initialize = counting
    cluster.kill(primary)
    started = time.monotonic()
    assert client.get(key) == b"kept"
    took = time.monotonic() - started
    retries = sum(point.value for _, point in otel.points("resilience.retries"))
    assert retries > 0
    assert refreshes[0] <= retries + 2  # redis-py's own loop would refresh ~11 times per attempt
    assert otel.spans()[-1].attributes["server.port"] == replica
    print(f"primary crash: answered after {took:.2f}s, {retries} retries, {refreshes[0]} refreshes")
    client.close()


def test_a_cluster_with_every_node_down_opens_the_breaker(
    cluster: RedisClusterServers, otel: Otel
) -> None:
    """Every node killed: commands fail as transient connection failures (redis-py's
    "cannot be connected"), the breaker counts them and opens, and then rejects at once."""
    policy = Policy(
        service=SERVICE,
        breaker=BreakerConfig(failure_threshold=3, reset_timeout=60.0, call_timeout=2.0),
        retry=RetryConfig(max_attempts=1),
    )
    alive = next(p for p in cluster.ports if cluster.cli(p, "PING") == "PONG")
    client: Any = redis.cluster.RedisCluster(
        host="127.0.0.1", port=alive, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    instrument(client, policy=policy, **otel.providers)
    client.set(uuid.uuid4().hex, "v")
    for port in cluster.ports:
        cluster.kill(port)
    for _ in range(3):
        with pytest.raises(redis.exceptions.RedisClusterException, match="cannot be connected"):
            client.get("k")
    with pytest.raises(CircuitOpenError):
        client.get("k")
    assert otel.outcomes() == {
        ("success", "none"): 1, ("failure", "transient"): 3, ("rejected", "none"): 1,
    }  # fmt: skip
    client.close()
