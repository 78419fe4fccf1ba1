"""A PostgreSQL primary switch under a write loop: two test-owned clusters, same schema.

The "old primary" is switched to ``default_transaction_read_only = on`` (reloaded, so open
sessions refuse writes with SQLSTATE 25006, as a demoted primary does), and writes must move to
the other cluster: through a TCP proxy re-pointed like a DNS name, or through a multi-host DSN
with ``target_session_attrs=read-write``. One writer runs plain ``execute`` inserts, one runs
``run_in_transaction`` with two inserts; every row id is unique, so a write applied twice
shows up as the same id on both clusters.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest

from resilience_otel.asyncpg import run_in_transaction, wrap
from tests.integration.pg_server import PostgresServer, find_postgres_bin
from tests.support.faultproxy import FaultProxy

from .checks import Checks, check_recovery, check_telemetry
from .conftest import RECOVERY_BOUND, Otel, failover_policy
from .workload import Ledger, Switch, async_writers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.failover,
    pytest.mark.anyio,
    pytest.mark.skipif(find_postgres_bin() is None, reason="no PostgreSQL binaries"),
]

SCHEMA = "CREATE TABLE writes (id text PRIMARY KEY, kind text NOT NULL)"
WARM_UP = 40
AFTERWARDS = 200  # acknowledged writes after it (a few tenths of a second of load)
TX = "tx:"  # ledger ids of transactions; their rows are <id>:a and <id>:b


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """Two independent clusters (initdb once per module): the old primary and the new."""
    with PostgresServer() as old, PostgresServer() as new:
        yield old, new


@pytest.fixture
async def servers(
    clusters: tuple[PostgresServer, PostgresServer],
) -> tuple[PostgresServer, PostgresServer]:
    """Both clusters writable, with an empty ``writes`` table."""
    for server in clusters:
        await set_read_only(server, on=False, wait=True)
        connection = await asyncpg.connect(server.dsn)
        try:
            await connection.execute("DROP TABLE IF EXISTS writes")
            await connection.execute(SCHEMA)
        finally:
            await connection.close()
    return clusters


async def set_read_only(server: PostgresServer, *, on: bool, wait: bool = False) -> None:
    """Switch ``default_transaction_read_only`` and reload; with ``wait``, until new sessions
    see it (the reload is asynchronous)."""
    connection = await asyncpg.connect(server.dsn)
    try:
        value = "on" if on else "off"
        await connection.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()
    for _ in range(100 if wait else 0):
        probe = await asyncpg.connect(server.dsn)
        try:
            if await probe.fetchval("SHOW default_transaction_read_only") == value:
                return
        finally:
            await probe.close()
        await asyncio.sleep(0.02)


def writer(pool: Any) -> Callable[[int, int], Awaitable[str]]:
    """Writer 0 inserts one row with ``execute``; the others insert two in a transaction."""
    run = uuid.uuid4().hex[:8]

    async def write(number: int, n: int) -> str:
        ident = f"{run}:{number}:{n}"
        if number == 0:
            await pool.execute("INSERT INTO writes (id, kind) VALUES ($1, 'execute')", ident)
            return ident

        async def both(connection: Any) -> None:
            insert = "INSERT INTO writes (id, kind) VALUES ($1, 'transaction')"
            await connection.execute(insert, f"{ident}:a")
            await connection.execute(insert, f"{ident}:b")

        await run_in_transaction(pool, both)
        return TX + ident

    return write


async def rows(server: PostgresServer) -> set[str]:
    """Every row id on ``server``."""
    connection = await asyncpg.connect(server.dsn)
    try:
        return {row["id"] for row in await connection.fetch("SELECT id FROM writes")}
    finally:
        await connection.close()


async def client_sessions(server: PostgresServer) -> int:
    """Client sessions open on ``server``, the one asking aside."""
    connection = await asyncpg.connect(server.dsn)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await connection.close()


async def check_rows(
    checks: Checks, old: PostgresServer, new: PostgresServer, ledger: Ledger
) -> None:
    """Each acknowledged write is present exactly once across both clusters (a transaction's
    two rows together), no id on both, and the new cluster took writes."""
    on_old, on_new = await rows(old), await rows(new)
    both = on_old & on_new
    checks.expect(not both, f"{len(both)} rows were written on both clusters: {sorted(both)[:3]}")
    present = on_old | on_new
    missing, split = [], []
    for ident in ledger.acked:
        if ident.startswith(TX):
            parts = {f"{ident[len(TX) :]}:a", f"{ident[len(TX) :]}:b"}
            if not parts <= present:
                missing.append(ident)
            elif not (parts <= on_old or parts <= on_new):
                split.append(ident)
        elif ident not in present:
            missing.append(ident)
    checks.expect(not missing, f"{len(missing)} acknowledged writes are missing: {missing[:3]}")
    checks.expect(not split, f"{len(split)} transactions were split across clusters")
    checks.expect(bool(on_new), "no write reached the new primary")
    acked_tx = sum(ident.startswith(TX) for ident in ledger.acked)
    print(f"{checks.scenario}: rows old={len(on_old)} new={len(on_new)} tx acked={acked_tx}")


async def check_pool(checks: Checks, pool: Any, old: PostgresServer, new: PostgresServer) -> None:
    """The same pool is open and every connection it hands out reaches the new primary; no
    session is left on the old one."""
    checks.expect(not pool.raw._closed, "the pool was closed")
    ports = await asyncio.gather(
        *(pool.fetchval("SELECT current_setting('port')::int") for _ in range(4))
    )
    checks.expect(set(ports) == {new.port}, f"pool connections reach ports {set(ports)}")
    for _ in range(100):
        if (left := await client_sessions(old)) == 0:
            break
        await asyncio.sleep(0.02)
    checks.expect(left == 0, f"{left} sessions are still open on the old primary")


async def run_scenario(
    scenario: str,
    dsn: str,
    servers: tuple[PostgresServer, PostgresServer],
    switch_over: Callable[[], Awaitable[None]],
    otel: Otel,
) -> None:
    """Writers on a wrapped pool of ``dsn``; ``switch_over`` mid-loop; every check."""
    old, new = servers
    async with AsyncExitStack() as stack:
        raw = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        stack.push_async_callback(raw.close)
        pool = wrap(raw, policy=failover_policy("orders"), **otel.providers)
        ledger = Ledger()
        async with async_writers(writer(pool), ledger):
            await ledger.await_successes(0.0, WARM_UP, limit=10.0)
            began = time.monotonic()
            await switch_over()
            switch = Switch(began, time.monotonic())
            await ledger.await_successes(switch.ended, AFTERWARDS, RECOVERY_BOUND + 3.0)
        checks = Checks(scenario)
        await check_rows(checks, old, new, ledger)
        check_recovery(checks, ledger, switch)
        check_telemetry(checks, otel, ledger, "postgresql", "25006")  # before more calls
        await check_pool(checks, pool, old, new)
        checks.verify()


async def test_pool_behind_proxy_moves_to_new_primary(
    servers: tuple[PostgresServer, PostgresServer], otel: Otel
) -> None:
    """Proxy re-pointed after the old primary turned read-only: writes land exactly once,
    the same pool recovers within the bound, the failover is counted."""
    old, new = servers
    with FaultProxy((old.host, old.port)) as proxy:

        async def switch_over() -> None:
            await set_read_only(old, on=True)
            proxy.upstream = (new.host, new.port)

        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
        await run_scenario("postgresql proxy", dsn, servers, switch_over, otel)


async def test_multi_host_dsn_moves_to_read_write_host(
    servers: tuple[PostgresServer, PostgresServer], otel: Otel
) -> None:
    """Multi-host DSN with ``target_session_attrs=read-write``: after the first host turns
    read-only, the wrapped pool keeps writing, on the second host, exactly once."""
    old, new = servers
    dsn = (
        f"postgresql://postgres@127.0.0.1:{old.port},127.0.0.1:{new.port}/postgres"
        "?target_session_attrs=read-write"
    )

    async def switch_over() -> None:
        await set_read_only(old, on=True)

    await run_scenario("postgresql multi-host", dsn, servers, switch_over, otel)
