"""A Redis primary/replica switchover behind a TCP proxy (the "DNS name") under a write loop.

Two writers INCR a counter and SET unique keys through an instrumented client connected to the
proxy. Mid-loop the replica is promoted (writes paused on the old primary until the replica
caught up, so Redis itself loses nothing), the old primary demoted and the proxy re-pointed;
connections already open stay on the old node, which now refuses writes with READONLY.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis
import redis.asyncio

from resilience_otel.redis import instrument
from tests.support.faultproxy import FaultProxy

from .checks import (
    COUNTER,
    INCR,
    Checks,
    check_recovery,
    check_redis,
    check_retired,
    check_telemetry,
)
from .conftest import RECOVERY_BOUND, Otel, failover_policy
from .servers import HOST, RedisPair
from .workload import Ledger, Switch, async_writers, thread_writers

pytestmark = [pytest.mark.integration, pytest.mark.failover]

WARM_UP = 40  # acknowledged writes before the switchover
AFTERWARDS = 200  # acknowledged writes after it (a few tenths of a second of load)


def sync_write(client: redis.Redis) -> Callable[[int, int], str]:
    """Odd calls INCR the counter, even calls SET a fresh key; returns the ledger id."""
    run = uuid.uuid4().hex[:8]

    def write(writer: int, n: int) -> str:
        if n % 2:
            client.incr(COUNTER)
            return INCR
        key = f"failover:{run}:{writer}:{n}"
        client.set(key, n)
        return key

    return write


def async_write(client: redis.asyncio.Redis) -> Callable[[int, int], Awaitable[str]]:
    """:func:`sync_write` for an asyncio client."""
    run = uuid.uuid4().hex[:8]

    async def write(writer: int, n: int) -> str:
        if n % 2:
            await client.incr(COUNTER)
            return INCR
        key = f"failover:{run}:{writer}:{n}"
        await client.set(key, n)
        return key

    return write


def verify(
    scenario: str,
    pair: RedisPair,
    ledger: Ledger,
    switch: Switch,
    otel: Otel,
    *,
    breaker_opens: bool = False,
) -> None:
    """Every failover promise for one run of the loop (see :mod:`.checks`), checked while
    the client is still open (its pool would keep connections to the demoted node)."""
    checks = Checks(scenario)
    check_redis(checks, pair.primary.port, ledger)
    check_recovery(checks, ledger, switch, breaker_opens=breaker_opens)
    check_retired(checks, pair.replica.port)
    check_telemetry(checks, otel, ledger, "redis", "READONLY")
    checks.verify()


@pytest.mark.parametrize("failure_threshold", [10, 1], ids=["resent", "breaker-opens"])
def test_sync_client_survives_switchover(otel: Otel, failure_threshold: int) -> None:
    """Sync client: acknowledged writes all on the new primary, none doubled, writers back
    within the bound (refused writes resent; or, when the first refusal opens the breaker,
    after one open period and a probe), connections to the demoted node retired, failover
    counted."""
    policy = failover_policy("cache", failure_threshold=failure_threshold)
    with RedisPair() as pair, FaultProxy(pair.primary_address) as proxy:
        client = redis.Redis(host=HOST, port=proxy.port, socket_timeout=2.0)
        instrument(client, policy=policy, **otel.providers)
        ledger = Ledger()
        try:
            with thread_writers(sync_write(client), ledger):
                ledger.wait_for_successes(0.0, WARM_UP, timeout=5.0)
                switch = pair.switchover(proxy)
                ledger.wait_for_successes(switch.ended, AFTERWARDS, timeout=RECOVERY_BOUND + 3.0)
            scenario = f"redis sync, failure_threshold={failure_threshold}"
            # checked with the client still open
            verify(scenario, pair, ledger, switch, otel, breaker_opens=failure_threshold == 1)
        finally:
            client.close()


@pytest.mark.anyio
async def test_async_client_survives_switchover(otel: Otel) -> None:
    """asyncio client: the same promises as the sync one."""
    with RedisPair() as pair, FaultProxy(pair.primary_address) as proxy:
        client = redis.asyncio.Redis(host=HOST, port=proxy.port, socket_timeout=2.0)
        instrument(client, policy=failover_policy("cache"), **otel.providers)
        ledger = Ledger()
        try:
            async with async_writers(async_write(client), ledger):
                await ledger.await_successes(0.0, WARM_UP, limit=5.0)
                switch = await asyncio.to_thread(pair.switchover, proxy)
                await ledger.await_successes(switch.ended, AFTERWARDS, RECOVERY_BOUND + 3.0)
            await asyncio.to_thread(verify, "redis asyncio", pair, ledger, switch, otel)
        finally:
            await client.aclose()
