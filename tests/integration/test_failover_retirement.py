"""Failover recovery against real servers: a node that is no longer the primary refuses a
write, the connection is retired, and the write is resent once on a fresh connection.

Redis: two test-owned servers; the "old primary" is made a replica of the other
(``REPLICAOF``), so writes reaching it get ``READONLY``, and a fault proxy in front plays the
DNS name: when the failover is heard, the proxy is re-pointed at the new primary, and only a
fresh connection goes there. PostgreSQL: one test-owned server switched to read-only for
every session (``ALTER SYSTEM SET default_transaction_read_only`` and a reload) answers 25006;
the setting is turned off again before the retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis
import redis.asyncio
from asyncpg import exceptions as pgx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience_otel import BreakerConfig, Observer, Policy, RetryConfig
from resilience_otel._core.clock import SystemClock
from resilience_otel._telemetry import semconv as sc
from resilience_otel.asyncpg import run_in_transaction, wrap
from resilience_otel.redis import instrument
from tests.support.faultproxy import FaultProxy

from .pg_server import PostgresServer, find_postgres_bin
from .redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(
    not __import__("os").path.exists(REDIS_SERVER), reason="redis-server is not installed"
)


def policy(service: str) -> Policy:
    """Three attempts 10 ms apart, no budget, a breaker that does not trip here."""
    return Policy(
        service=service,
        breaker=BreakerConfig(failure_threshold=100, call_timeout=5.0),
        retry=RetryConfig(max_attempts=3, base_delay=0.01, max_delay=0.05, budget=None),
    )


@dataclass
class Otel:
    """Per-test providers: finished spans and metrics in memory."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def failovers(self) -> dict[tuple[str, str], float]:
        """resilience.failovers by (service, db.system.name)."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[str, str], float] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != sc.FAILOVERS[0]:
                        continue
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        attributes = dict(point.attributes)
                        key = (str(attributes[sc.SERVICE]), str(attributes[sc.DB_SYSTEM_NAME]))
                        found[key] = point.value
        return found

    def failover_events(self, name: str) -> list[dict[str, Any]]:
        """The resilience.failover events of the finished spans called ``name``."""
        spans: list[ReadableSpan] = [s for s in self.spans.get_finished_spans() if s.name == name]
        return [
            dict(e.attributes or {}) for s in spans for e in s.events if e.name == sc.EVENT_FAILOVER
        ]


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh providers for one test; never the global ones."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, spans, reader, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


class OnFailover(Observer):
    """Runs ``action`` when the engine reports a failover (before the retry's wait)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.heard: list[str] = []

    def failover(self, service: str, client: str, error_type: str) -> None:
        self.heard.append(error_type)
        self.action()


# -- Redis -------------------------------------------------------------------------------------
@dataclass
class Pair:
    """The demoted old primary, the new primary, and the proxy clients connect through."""

    old: RedisServer
    new: RedisServer
    proxy: FaultProxy

    def switch(self) -> None:
        """What a failover does to the address clients resolve: it now leads to the new one."""
        self.proxy.upstream = (self.new.host, self.new.port)


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Two servers, the first a replica of the second; the proxy still leads to the first."""
    with RedisServer() as old, RedisServer() as new, FaultProxy((old.host, old.port)) as proxy:
        admin = redis.Redis(host=old.host, port=old.port)
        admin.replicaof(new.host, new.port)
        yield Pair(old, new, proxy)
        # A primary waits for its replicas on shutdown (shutdown-timeout): detach first.
        admin.replicaof("NO", "ONE")
        admin.close()


def roles_of_pool(client: redis.Redis, count: int) -> list[str]:
    """The ROLE of the node behind each of ``count`` connections checked out together."""
    pool = client.connection_pool
    conns = [pool.get_connection() for _ in range(count)]
    try:
        roles = []
        for conn in conns:
            conn.send_command("ROLE")
            roles.append(conn.read_response()[0].decode())
        return roles
    finally:
        for conn in conns:
            pool.release(conn)


async def async_roles_of_pool(client: redis.asyncio.Redis, count: int) -> list[str]:
    """:func:`roles_of_pool` for a ``redis.asyncio`` client."""
    pool = client.connection_pool
    conns = [await pool.get_connection() for _ in range(count)]
    try:
        roles = []
        for conn in conns:
            await conn.send_command("ROLE")
            roles.append((await conn.read_response())[0].decode())
        return roles
    finally:
        for conn in conns:
            await pool.release(conn)


def warm(client: redis.Redis, count: int) -> None:
    """Open ``count`` pooled connections (to the node the proxy leads to now)."""
    assert roles_of_pool(client, count) == ["slave"] * count


def test_redis_write_refused_with_readonly_is_resent_on_a_fresh_connection(
    pair: Pair, otel: Otel
) -> None:
    """INCR refused with READONLY is resent once, through a new connection, to the new
    primary; the pool's idle connections were retired too; the failover is counted and on
    the span."""
    heard = OnFailover(pair.switch)
    client = instrument(
        redis.Redis(host="127.0.0.1", port=pair.proxy.port), policy=policy("cache"),
        observers=[heard], tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )  # fmt: skip
    warm(client, 2)
    opened = pair.proxy.connections
    assert client.incr("orders") == 1
    assert heard.heard == ["READONLY"]
    assert pair.proxy.connections == opened + 1  # the retry's fresh connection
    new = redis.Redis(host=pair.new.host, port=pair.new.port)
    assert new.get("orders") == b"1"  # applied exactly once
    assert roles_of_pool(client, 2) == ["master", "master"]  # no idle one left on the old node
    assert otel.failovers() == {("cache", "redis"): 1}
    assert otel.failover_events("INCRBY") == [
        {sc.DB_SYSTEM_NAME: "redis", sc.ERROR_TYPE: "READONLY"}
    ]
    client.close()
    new.close()


def test_redis_transaction_refused_with_readonly_is_resent_whole(pair: Pair, otel: Otel) -> None:
    """A MULTI/EXEC whose queued writes were refused (EXECABORT after READONLY) ran nothing:
    it is resent whole on a fresh connection and each INCR lands once."""
    heard = OnFailover(pair.switch)
    client = instrument(
        redis.Redis(host="127.0.0.1", port=pair.proxy.port), policy=policy("cache"),
        observers=[heard], meter_provider=otel.meter_provider,
        tracer_provider=otel.tracer_provider,
    )  # fmt: skip
    warm(client, 1)
    pipe = client.pipeline(transaction=True)
    pipe.incr("a").incr("b")
    assert pipe.execute() == [1, 1]
    assert heard.heard == ["READONLY"]
    new = redis.Redis(host=pair.new.host, port=pair.new.port)
    assert new.mget("a", "b") == [b"1", b"1"]
    assert otel.failovers() == {("cache", "redis"): 1}
    client.close()
    new.close()


def test_redis_plain_pipeline_refused_with_readonly_is_not_resent(pair: Pair, otel: Otel) -> None:
    """A plain pipeline's commands run one by one (a replica takes PUBLISH, reads): after
    READONLY it is not resent, but its connections are still retired and it is counted."""
    heard = OnFailover(pair.switch)
    client = instrument(
        redis.Redis(host="127.0.0.1", port=pair.proxy.port), policy=policy("cache"),
        observers=[heard], meter_provider=otel.meter_provider,
    )  # fmt: skip
    warm(client, 1)
    pipe = client.pipeline(transaction=False)
    pipe.publish("events", "sent").incr("a")
    with pytest.raises(redis.exceptions.ReadOnlyError):
        pipe.execute()
    assert heard.heard == ["READONLY"]
    assert otel.failovers() == {("cache", "redis"): 1}
    assert roles_of_pool(client, 1) == ["master"]  # the next command goes to the new primary
    new = redis.Redis(host=pair.new.host, port=pair.new.port)
    assert new.get("a") is None
    client.close()
    new.close()


@pytest.mark.anyio
async def test_async_redis_write_refused_with_readonly_is_resent_on_a_fresh_connection(
    pair: Pair, otel: Otel
) -> None:
    """redis.asyncio: the same recovery; the idle connections are gone from the old node."""
    heard = OnFailover(pair.switch)
    client = instrument(
        redis.asyncio.Redis(host="127.0.0.1", port=pair.proxy.port), policy=policy("cache"),
        observers=[heard], tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )  # fmt: skip
    assert await async_roles_of_pool(client, 2) == ["slave", "slave"]
    opened = pair.proxy.connections
    assert await client.incr("orders") == 1
    assert pair.proxy.connections == opened + 1
    assert await async_roles_of_pool(client, 2) == ["master", "master"]
    new = redis.Redis(host=pair.new.host, port=pair.new.port)
    assert new.get("orders") == b"1"
    assert heard.heard == ["READONLY"]
    assert otel.failovers() == {("cache", "redis"): 1}
    assert otel.failover_events("INCRBY") == [
        {sc.DB_SYSTEM_NAME: "redis", sc.ERROR_TYPE: "READONLY"}
    ]
    await client.aclose()
    new.close()


def test_redis_promoted_in_place_takes_the_resent_write(otel: Otel) -> None:
    """No proxy: the replica the client talks to is promoted (REPLICAOF NO ONE) when the
    failover is heard, and the resent INCR lands there once."""
    with RedisServer() as replica, RedisServer() as primary:
        admin = redis.Redis(host=replica.host, port=replica.port)
        admin.replicaof(primary.host, primary.port)
        heard = OnFailover(lambda: admin.replicaof("NO", "ONE"))
        client = instrument(
            redis.Redis(host=replica.host, port=replica.port), policy=policy("cache"),
            observers=[heard], meter_provider=otel.meter_provider,
        )  # fmt: skip
        before = client.client_id()
        assert client.incr("n") == 1
        assert client.client_id() != before  # the connection that got READONLY was retired
        assert admin.get("n") == b"1"
        client.close()
        admin.close()


# -- PostgreSQL --------------------------------------------------------------------------------
needs_postgres = pytest.mark.skipif(find_postgres_bin() is None, reason="no PostgreSQL binaries")


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """One test-owned cluster for the module (initdb takes a few seconds)."""
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL binaries")
    with PostgresServer() as server:
        yield server


async def set_read_only(dsn: str, on: bool) -> None:
    """Switch every session of the server to read-only transactions (or back) and wait
    until a new session sees it."""
    admin = await asyncpg.connect(dsn)
    try:
        if on:
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    want = "on" if on else "off"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = await asyncpg.connect(dsn)
        try:
            if await probe.fetchval("SHOW default_transaction_read_only") == want:
                return
        finally:
            await probe.close()
        await asyncio.sleep(0.02)
    raise AssertionError(f"default_transaction_read_only did not become {want}")


class BeforeRetry(SystemClock):
    """The real clock; ``hook`` runs once, in the wait before the first retry."""

    def __init__(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.hook: Callable[[], Awaitable[None]] | None = hook
        self.waits = 0

    async def asleep(self, seconds: float) -> None:
        self.waits += 1
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        await super().asleep(seconds)


@pytest.fixture
async def pg(pg_server: PostgresServer) -> AsyncIterator[PostgresServer]:
    """The server with a fresh ``events`` table, writable at the start and at the end."""
    admin = await asyncpg.connect(pg_server.dsn)
    await admin.execute("DROP TABLE IF EXISTS events; CREATE TABLE events (id int)")
    await admin.close()
    yield pg_server
    await set_read_only(pg_server.dsn, False)


async def backend_pids(pool: asyncpg.Pool, count: int) -> set[int]:
    """The backend pids of ``count`` pool connections held at once."""
    held = [await pool.acquire() for _ in range(count)]
    try:
        return {await c.fetchval("SELECT pg_backend_pid()") for c in held}
    finally:
        for connection in held:
            await pool.release(connection)


async def count_events(dsn: str) -> int:
    """Rows in ``events``, read by a new session."""
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM events"))
    finally:
        await connection.close()


@needs_postgres
@pytest.mark.anyio
async def test_pool_insert_refused_by_a_read_only_server_lands_once(
    pg: PostgresServer, otel: Otel
) -> None:
    """An INSERT refused with 25006 is resent (even a write) on a new backend once the
    server takes writes again; every old backend of the pool was retired; counted as a
    failover."""
    raw = await asyncpg.create_pool(pg.dsn, min_size=2, max_size=2)
    clock = BeforeRetry(lambda: set_read_only(pg.dsn, False))
    pool = wrap(
        raw, policy=policy("orders"), clock=clock, tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )  # fmt: skip
    before = await backend_pids(raw, 2)
    await set_read_only(pg.dsn, True)
    await pool.execute("INSERT INTO events VALUES (1)")
    assert clock.waits == 1  # one retry
    assert await count_events(pg.dsn) == 1
    assert not (await backend_pids(raw, 2)) & before  # no old backend is reused
    assert otel.failovers() == {("orders", "postgresql"): 1}
    assert otel.failover_events("INSERT") == [
        {sc.DB_SYSTEM_NAME: "postgresql", sc.ERROR_TYPE: "25006"}
    ]
    await raw.close()


@needs_postgres
@pytest.mark.anyio
async def test_transaction_function_refused_by_a_read_only_server_reruns_once(
    pg: PostgresServer, otel: Otel
) -> None:
    """run_in_transaction reruns the whole function after 25006 on a fresh connection; the
    rows land once."""
    raw = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=1)
    clock = BeforeRetry(lambda: set_read_only(pg.dsn, False))
    pool = wrap(raw, policy=policy("orders"), clock=clock, meter_provider=otel.meter_provider)
    runs: list[int] = []

    async def transfer(connection: Any) -> None:
        runs.append(await connection.fetchval("SELECT pg_backend_pid()"))
        await connection.execute("INSERT INTO events VALUES (1), (2)")

    await set_read_only(pg.dsn, True)
    await run_in_transaction(pool, transfer)
    assert len(runs) == 2
    assert runs[0] != runs[1]  # the rerun ran on a new backend
    assert await count_events(pg.dsn) == 2
    assert otel.failovers() == {("orders", "postgresql"): 1}
    await raw.close()


@needs_postgres
@pytest.mark.anyio
async def test_bare_connection_is_terminated_and_the_error_raised(
    pg: PostgresServer, otel: Otel
) -> None:
    """A bare connection cannot be replaced in the caller's hands: after 25006 it is
    terminated and the error raised at once (no resend on a dead connection)."""
    raw = await asyncpg.connect(pg.dsn)
    clock = BeforeRetry(lambda: set_read_only(pg.dsn, False))
    connection = wrap(raw, policy=policy("orders"), clock=clock, meter_provider=otel.meter_provider)
    await set_read_only(pg.dsn, True)
    with pytest.raises(pgx.ReadOnlySQLTransactionError):
        await connection.execute("INSERT INTO events VALUES (1)")
    assert clock.waits == 0
    assert raw.is_closed()
    assert otel.failovers() == {("orders", "postgresql"): 1}
    assert await count_events(pg.dsn) == 0


@needs_postgres
@pytest.mark.anyio
async def test_borrowed_connection_is_terminated_and_its_pool_expired(
    pg: PostgresServer, otel: Otel
) -> None:
    """A connection borrowed with acquire() is in the caller's hands: after 25006 it is
    terminated, the error raised at once, and the pool's other connections replaced."""
    raw = await asyncpg.create_pool(pg.dsn, min_size=2, max_size=2)
    clock = BeforeRetry(lambda: set_read_only(pg.dsn, False))
    pool = wrap(raw, policy=policy("orders"), clock=clock, meter_provider=otel.meter_provider)
    before = await backend_pids(raw, 2)
    await set_read_only(pg.dsn, True)
    with pytest.raises(pgx.ReadOnlySQLTransactionError):
        async with pool.acquire() as connection:
            await connection.execute("INSERT INTO events VALUES (1)")
    assert clock.waits == 0
    await set_read_only(pg.dsn, False)
    assert not (await backend_pids(raw, 2)) & before
    assert otel.failovers() == {("orders", "postgresql"): 1}
    await raw.close()
