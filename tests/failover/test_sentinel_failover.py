"""``SENTINEL FAILOVER`` under a write loop, with three test-owned Sentinels.

The writers use ``Sentinel(...).master_for("mymaster")`` instrumented: redis-py's
SentinelConnectionPool asks the Sentinels for the master on every new connection, and turns a
READONLY reply on a master connection into ``ConnectionError("The previous master is now a
slave")``. The wrapper must cooperate: that write is resent, on a new connection, to the new
master.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.sentinel
import redis.sentinel

from resilience_otel.redis import instrument

from .checks import Checks, check_recovery, check_redis, check_retired, check_telemetry
from .conftest import RECOVERY_BOUND, Otel, failover_policy
from .servers import MASTER_NAME, RedisPair, Sentinels
from .test_redis_failover import AFTERWARDS, WARM_UP, async_write, sync_write
from .workload import Ledger, Switch, async_writers, thread_writers

pytestmark = [pytest.mark.integration, pytest.mark.failover]

# Writes wait on the paused old master while Sentinel promotes the replica (1 to 3 s: it
# polls the promoted node's INFO every second, and the other Sentinels hear of it within 2 s):
# they must not time out meanwhile, neither in the policy nor on the socket.
SENTINEL_CALL_TIMEOUT = 8.0
SOCKET_TIMEOUT = SENTINEL_CALL_TIMEOUT + 1.0


def verify(scenario: str, sentinels: Sentinels, ledger: Ledger, switch: Switch, otel: Otel) -> None:
    """Every failover promise, the new master named by the Sentinels included."""
    checks = Checks(scenario)
    pair = sentinels.pair
    checks.expect(sentinels.master_port() == pair.primary.port, "the Sentinels name the old master")
    check_redis(checks, pair.primary.port, ledger)
    check_recovery(checks, ledger, switch)
    check_retired(checks, pair.replica.port)
    # redis-py reports the refusal as a ConnectionError, so no error.type is asserted here
    check_telemetry(checks, otel, ledger, "redis", None)
    checks.verify()


def test_sync_master_for_survives_sentinel_failover(otel: Otel) -> None:
    """Sync ``master_for`` client: acknowledged writes all on the promoted master, none
    doubled, writers back within the bound, failover counted."""
    with RedisPair() as pair, Sentinels(pair) as sentinels:
        sentinel = redis.sentinel.Sentinel(sentinels.addresses, socket_timeout=2.0)  # type: ignore[no-untyped-call]
        client = sentinel.master_for(MASTER_NAME, socket_timeout=SOCKET_TIMEOUT)  # type: ignore[no-untyped-call]
        instrument(
            client,
            policy=failover_policy("cache", call_timeout=SENTINEL_CALL_TIMEOUT),
            **otel.providers,
        )
        ledger = Ledger()
        try:
            with thread_writers(sync_write(client), ledger):
                ledger.wait_for_successes(0.0, WARM_UP, timeout=5.0)
                switch = sentinels.failover()
                ledger.wait_for_successes(switch.ended, AFTERWARDS, timeout=RECOVERY_BOUND + 3.0)
            verify("sentinel sync", sentinels, ledger, switch, otel)
        finally:
            client.close()
            for connection in sentinel.sentinels:
                connection.close()


@pytest.mark.anyio
async def test_async_master_for_survives_sentinel_failover(otel: Otel) -> None:
    """asyncio ``master_for`` client: the same promises as the sync one."""
    with RedisPair() as pair, Sentinels(pair) as sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(sentinels.addresses, socket_timeout=2.0)  # type: ignore[no-untyped-call]
        client = sentinel.master_for(MASTER_NAME, socket_timeout=SOCKET_TIMEOUT)
        instrument(
            client,
            policy=failover_policy("cache", call_timeout=SENTINEL_CALL_TIMEOUT),
            **otel.providers,
        )
        ledger = Ledger()
        try:
            async with async_writers(async_write(client), ledger):
                await ledger.await_successes(0.0, WARM_UP, limit=5.0)
                switch = await asyncio.to_thread(sentinels.failover)
                await ledger.await_successes(switch.ended, AFTERWARDS, RECOVERY_BOUND + 3.0)
            await asyncio.to_thread(verify, "sentinel asyncio", sentinels, ledger, switch, otel)
        finally:
            await client.aclose()
            for connection in sentinel.sentinels:
                await connection.aclose()
