"""The resilient asyncpg shell against real PostgreSQL servers on loopback.

Normal-path tests use the machine's server (127.0.0.1:5432, database ``test``) with a uniquely
named table per test. Faults come from killing backends with ``pg_terminate_backend`` from a
second connection, from a test-owned server that is stopped and started (``pg_server.py``), and
from the TCP fault proxy (latency, black hole).
"""

# Statements are built with f-strings only to name the per-test tables this module creates.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from asyncpg import exceptions as pgx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from resilience_otel import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    ErrorClass,
    FailureKind,
    Jitter,
    Observer,
    Policy,
    RetriesExhaustedError,
    RetryConfig,
)
from resilience_otel._telemetry import semconv as sc
from resilience_otel.asyncpg import (
    ResilientConnection,
    ResilientPool,
    probe,
    run_in_transaction,
    wrap,
)
from tests.support.faultproxy import BLACKHOLE, LATENCY, PASS, FaultProxy

from .pg_server import PostgresServer

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
# What asyncpg raises on a statement whose backend is gone (see classify_postgres).
LOST_CONNECTION = (pgx.PostgresConnectionError, pgx.InterfaceError, pgx.InternalClientError)


# -- helpers -------------------------------------------------------------------------------------
def fast_policy(
    *,
    max_attempts: int = 3,
    failure_threshold: int = 100,
    reset_timeout: float = 60.0,
    call_timeout: float | None = 5.0,
    base_delay: float = 0.01,
    multiplier: float = 2.0,
) -> Policy:
    """10 ms backoff, no jitter, no retry budget; a breaker that trips only when asked to."""
    return Policy(
        service="pg",
        breaker=BreakerConfig(
            failure_threshold=failure_threshold,
            monitoring_period=60.0,
            reset_timeout=reset_timeout,
            call_timeout=call_timeout,
        ),
        retry=RetryConfig(
            max_attempts=max_attempts,
            base_delay=base_delay,
            max_delay=max(base_delay, 0.05),
            multiplier=multiplier,
            jitter=Jitter.NONE,
            budget=None,
        ),
    )


@dataclass
class Recorder(Observer):
    """Counts what the engine reports: retries and finished calls."""

    retries: list[FailureKind] = field(default_factory=list)
    finished: list[tuple[str, ErrorClass | None, int]] = field(default_factory=list)

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self.retries.append(reason)

    def call_finished(
        self,
        service: str,
        client: str,
        outcome: str,
        error_class: ErrorClass | None,
        attempts: int,
        duration: float,
    ) -> None:
        self.finished.append((outcome, error_class, attempts))

    @property
    def attempts(self) -> list[int]:
        """Attempts of each finished call, in order."""
        return [attempts for _, _, attempts in self.finished]


@dataclass
class Otel:
    """Per-test SDK providers: spans exported to memory, metrics read in memory."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        """Every data point of metric ``name``."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


async def wait_for_backend(admin: asyncpg.Connection, marker: str, within: float = 5.0) -> int:
    """The pid of the backend running a statement that contains ``marker``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity"
            " WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE $1",
            f"%{marker}%",
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no backend ran a statement containing {marker!r}")


async def terminate_when_running(admin: asyncpg.Connection, marker: str) -> int:
    """Terminate the backend running ``marker`` once it runs; returns its pid."""
    pid = await wait_for_backend(admin, marker)
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    return pid


async def terminate(admin: asyncpg.Connection, pid: int) -> None:
    """Terminate backend ``pid`` and wait until it is gone."""
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(500):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)


def unique_marker() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh SDK providers, never the global ones."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def recorder() -> Recorder:
    """An observer counting retries and attempts."""
    return Recorder()


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A raw connection for set-up, checks and killing other backends."""
    connection = await asyncpg.connect(DSN)
    yield connection
    await connection.close()


@pytest.fixture
async def table(admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A fresh table ``(id int primary key, v int)``, dropped after the test."""
    name = f"resilience_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
    yield name
    await admin.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
async def raw_pool() -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the machine's server."""
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def pool(raw_pool: asyncpg.Pool, otel: Otel, recorder: Recorder) -> ResilientPool:
    """The wrapped pool, with SDK telemetry and the recorder."""
    wrapped: ResilientPool = wrap(
        raw_pool,
        policy=fast_policy(),
        observers=[recorder],
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    return wrapped


@pytest.fixture
async def connection(otel: Otel, recorder: Recorder) -> AsyncIterator[ResilientConnection]:
    """A wrapped single connection, with SDK telemetry and the recorder."""
    raw = await asyncpg.connect(DSN)
    yield wrap(
        raw,
        policy=fast_policy(),
        observers=[recorder],
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    await raw.close()


@pytest.fixture(params=["pool", "connection"])
async def db(
    request: pytest.FixtureRequest, otel: Otel, recorder: Recorder
) -> AsyncIterator[ResilientPool | ResilientConnection]:
    """Each query-method test runs against a wrapped pool and a wrapped connection."""
    raw: asyncpg.Pool | asyncpg.Connection
    if request.param == "pool":
        raw = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    else:
        raw = await asyncpg.connect(DSN)
    yield wrap(
        raw,
        policy=fast_policy(),
        observers=[recorder],
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )
    await raw.close()


@pytest.fixture(scope="session")
def owned_server_session() -> Iterator[PostgresServer]:
    """A test-owned PostgreSQL (initdb once per session); killed and removed at the end."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def owned_server(owned_server_session: PostgresServer) -> Iterator[PostgresServer]:
    """The test-owned server, running at the start and again after the test."""
    owned_server_session.start()
    yield owned_server_session
    owned_server_session.start()


@pytest.fixture
async def owned_table(owned_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh table ``(id int primary key, v int)`` on the test-owned server."""
    name = f"resilience_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(owned_server.dsn)
    try:
        await connection.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int)")
    finally:
        await connection.close()
    yield name
    owned_server.start()
    connection = await asyncpg.connect(owned_server.dsn)
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        await connection.close()


async def count_rows(dsn: str, table: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await connection.close()


async def start_later(server: PostgresServer, delay: float) -> None:
    """Start ``server`` after ``delay`` seconds without blocking the event loop."""
    await asyncio.sleep(delay)
    await asyncio.to_thread(server.start)


# -- wrapping ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_wrap_connection_gives_resilient_connection() -> None:
    """wrap(connection) is a ResilientConnection over that connection."""
    raw = await asyncpg.connect(DSN)
    try:
        wrapped = wrap(raw, policy=fast_policy())
        assert isinstance(wrapped, ResilientConnection)
        assert wrapped.raw is raw
    finally:
        await raw.close()


@pytest.mark.anyio
async def test_wrap_pool_gives_resilient_pool(raw_pool: asyncpg.Pool) -> None:
    """wrap(pool) is a ResilientPool over that pool."""
    wrapped = wrap(raw_pool, policy=fast_policy())
    assert isinstance(wrapped, ResilientPool)
    assert wrapped.raw is raw_pool


# -- every wrapped method, on a pool and on a connection -------------------------------------------
@pytest.mark.anyio
async def test_execute(db: ResilientPool | ResilientConnection, table: str) -> None:
    """execute runs the statement and returns its status."""
    status = await db.execute(f"INSERT INTO {table} (id, v) VALUES ($1, $2)", 1, 10)
    assert status == "INSERT 0 1"
    assert await db.fetchval(f"SELECT v FROM {table} WHERE id = 1") == 10


@pytest.mark.anyio
async def test_executemany(db: ResilientPool | ResilientConnection, table: str) -> None:
    """executemany runs the statement once per argument tuple."""
    await db.executemany(f"INSERT INTO {table} (id, v) VALUES ($1, $2)", [(1, 1), (2, 2), (3, 3)])
    assert await db.fetchval(f"SELECT sum(v) FROM {table}") == 6


@pytest.mark.anyio
async def test_fetch(db: ResilientPool | ResilientConnection) -> None:
    """fetch returns every row."""
    rows = await db.fetch("SELECT g FROM generate_series(1, $1::int) AS g", 3)
    assert [row["g"] for row in rows] == [1, 2, 3]


@pytest.mark.anyio
async def test_fetchrow(db: ResilientPool | ResilientConnection) -> None:
    """fetchrow returns the first row."""
    row = await db.fetchrow("SELECT $1::int AS a, $2::text AS b", 7, "x")
    assert (row["a"], row["b"]) == (7, "x")


@pytest.mark.anyio
async def test_fetchval_column(db: ResilientPool | ResilientConnection) -> None:
    """fetchval returns one value, honouring column=."""
    assert await db.fetchval("SELECT 1, 2", column=1) == 2


@pytest.mark.anyio
async def test_copy_to_table(db: ResilientPool | ResilientConnection, table: str) -> None:
    """copy_to_table loads rows from a file-like source."""
    status = await db.copy_to_table(table, source=io.BytesIO(b"1\t10\n2\t20\n"))
    assert status == "COPY 2"
    assert await db.fetchval(f"SELECT sum(v) FROM {table}") == 30


@pytest.mark.anyio
async def test_copy_records_to_table(db: ResilientPool | ResilientConnection, table: str) -> None:
    """copy_records_to_table loads Python tuples."""
    status = await db.copy_records_to_table(table, records=iter([(1, 10), (2, 20)]))
    assert status == "COPY 2"
    assert await db.fetchval(f"SELECT count(*) FROM {table}") == 2


@pytest.mark.anyio
async def test_copy_from_table(db: ResilientPool | ResilientConnection, table: str) -> None:
    """copy_from_table writes the table's rows to the output."""
    await db.execute(f"INSERT INTO {table} (id, v) VALUES (1, 10), (2, 20)")
    output = io.BytesIO()
    await db.copy_from_table(table, output=output)
    assert sorted(output.getvalue().splitlines()) == [b"1\t10", b"2\t20"]


@pytest.mark.anyio
async def test_copy_from_query(db: ResilientPool | ResilientConnection, table: str) -> None:
    """copy_from_query writes a query's rows (with arguments) to the output."""
    await db.execute(f"INSERT INTO {table} (id, v) VALUES (1, 10), (2, 20)")
    output = io.BytesIO()
    await db.copy_from_query(f"SELECT v FROM {table} WHERE id = $1", 2, output=output)
    assert output.getvalue() == b"20\n"


@pytest.mark.anyio
async def test_pool_acquire_yields_resilient_connection(pool: ResilientPool) -> None:
    """pool.acquire() lends a ResilientConnection sharing the pool's breaker."""
    async with pool.acquire() as connection:
        assert isinstance(connection, ResilientConnection)
        assert connection.breaker is pool.breaker
        assert await connection.fetchval("SELECT 41 + 1") == 42


@pytest.mark.anyio
async def test_other_attributes_delegate_to_the_driver(
    connection: ResilientConnection, table: str
) -> None:
    """transaction() and is_in_transaction() are asyncpg's own; a rollback undoes the insert."""
    seen_inside: list[bool] = []

    async def insert_then_fail() -> None:
        async with connection.transaction():
            seen_inside.append(connection.is_in_transaction())
            await connection.execute(f"INSERT INTO {table} (id) VALUES (1)")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        await insert_then_fail()
    assert seen_inside == [True]
    assert not connection.is_in_transaction()
    assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0


@pytest.mark.anyio
async def test_probe_true_on_live_server(pool: ResilientPool) -> None:
    """probe() answers True when the server answers SELECT 1."""
    assert await probe(pool) is True


@pytest.mark.slow
@pytest.mark.anyio
async def test_probe_false_on_stopped_server(owned_server: PostgresServer) -> None:
    """probe() answers False, quickly, when the server is down."""
    raw = await asyncpg.create_pool(owned_server.dsn, min_size=1, max_size=1)
    try:
        pool = wrap(raw, policy=fast_policy())
        owned_server.stop()
        begin = time.monotonic()
        assert await probe(pool, timeout=1.0) is False
        assert time.monotonic() - begin < 2.0
    finally:
        raw.terminate()


# -- spans -----------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_one_client_span_with_db_attributes(pool: ResilientPool, otel: Otel) -> None:
    """A query is one CLIENT span with the database semantic-convention attributes."""
    await pool.fetchval("SELECT 1")
    [span] = otel.spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "SELECT"
    attributes = dict(span.attributes or {})
    assert attributes[sc.DB_SYSTEM_NAME] == "postgresql"
    assert attributes[sc.DB_OPERATION_NAME] == "SELECT"
    assert attributes[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert sc.SERVER_PORT not in attributes  # the default port is left out (semconv)
    assert attributes[sc.DB_NAMESPACE] == "test"


@pytest.mark.anyio
async def test_connection_span_has_server_attributes(
    owned_server: PostgresServer, otel: Otel
) -> None:
    """A wrapped connection reports the server address, its non-default port and database."""
    raw = await asyncpg.connect(owned_server.dsn)
    try:
        connection = wrap(
            raw,
            policy=fast_policy(),
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
        await connection.fetchval("SELECT 1")
    finally:
        await raw.close()
    [span] = otel.spans()
    attributes = dict(span.attributes or {})
    assert attributes[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[sc.SERVER_PORT] == owned_server.port
    assert attributes[sc.DB_NAMESPACE] == owned_server.database


@pytest.mark.anyio
async def test_no_query_text_by_default(pool: ResilientPool, otel: Otel) -> None:
    """Without record_query the statement never reaches the span."""
    await pool.fetchval("SELECT $1::text", "x")
    [span] = otel.spans()
    assert sc.DB_QUERY_TEXT not in (span.attributes or {})


@pytest.mark.anyio
async def test_operation_names(pool: ResilientPool, otel: Otel, table: str) -> None:
    """db.operation.name is the statement's verb; COPY for the copy methods."""
    await pool.execute(f"INSERT INTO {table} (id) VALUES (1)")
    await pool.copy_records_to_table(table, records=[(2, 0)])
    await pool.copy_from_table(table, output=io.BytesIO())
    names = [(span.attributes or {})[sc.DB_OPERATION_NAME] for span in otel.spans()]
    assert names == ["INSERT", "COPY", "COPY"]


@pytest.mark.anyio
async def test_run_in_transaction_span_is_transaction(pool: ResilientPool, otel: Otel) -> None:
    """run_in_transaction is one TRANSACTION span."""

    async def body(connection: asyncpg.Connection) -> int:
        return int(await connection.fetchval("SELECT 1"))

    assert await run_in_transaction(pool, body) == 1
    [span] = otel.spans()
    assert (span.attributes or {})[sc.DB_OPERATION_NAME] == "TRANSACTION"


@pytest.mark.anyio
async def test_record_query_strips_literals(raw_pool: asyncpg.Pool, otel: Otel) -> None:
    """record_query=True records the text with literals as ``?`` and placeholders kept."""
    pool = wrap(raw_pool, policy=fast_policy(), tracer_provider=otel.tracer_provider,
                meter_provider=otel.meter_provider, record_query=True)  # fmt: skip
    await pool.fetchval("SELECT $1::int + 42 WHERE 'hunter2-secret' <> 'y'", 1)
    [span] = otel.spans()
    text = (span.attributes or {})[sc.DB_QUERY_TEXT]
    assert text == "SELECT $1::int + ? WHERE ? <> ?"


@pytest.mark.anyio
async def test_statement_analysis_stays_bounded_and_right(
    raw_pool: asyncpg.Pool, otel: Otel
) -> None:
    """Thousands of distinct statements keep the per-pool cache bounded, and a statement
    met again after the cache was cleared is still named and recorded correctly."""
    pool = wrap(raw_pool, policy=fast_policy(), tracer_provider=otel.tracer_provider,
                meter_provider=otel.meter_provider, record_query=True)  # fmt: skip
    for n in range(1100):
        assert await pool.fetchval(f"SELECT {n} + $1::int", 1) == n + 1
    assert len(pool._runner._statements) <= pool._runner._MAX_STATEMENTS
    await pool.fetchval("SELECT 0 + $1::int", 1)  # parsed before the cache was cleared
    last = otel.spans()[-1]
    assert (last.attributes or {})[sc.DB_OPERATION_NAME] == "SELECT"
    assert (last.attributes or {})[sc.DB_QUERY_TEXT] == "SELECT ? + $1::int"


@pytest.mark.anyio
async def test_secret_literal_never_reaches_spans(raw_pool: asyncpg.Pool, otel: Otel) -> None:
    """A secret string literal appears nowhere in the span, even on failure."""
    pool = wrap(raw_pool, policy=fast_policy(), tracer_provider=otel.tracer_provider,
                meter_provider=otel.meter_provider, record_query=True)  # fmt: skip
    with pytest.raises(pgx.UndefinedTableError):
        await pool.fetchval("SELECT * FROM no_such_table WHERE pw = 'hunter2-secret'")
    [span] = otel.spans()
    dump = span.to_json()
    assert "hunter2" not in dump
    assert span.attributes is not None
    assert span.attributes[sc.ERROR_TYPE] == "42P01"


@pytest.mark.anyio
async def test_retried_query_is_one_span_with_retry_event(
    pool: ResilientPool, otel: Otel, admin: asyncpg.Connection
) -> None:
    """A query retried after its backend was killed is still one span, with a retry event."""
    marker = unique_marker()
    killer = asyncio.create_task(terminate_when_running(admin, marker))
    await pool.fetchval(f"SELECT 1 FROM pg_sleep(0.2) /* {marker} */")
    await killer
    [span] = otel.spans()
    events = [event.name for event in span.events]
    assert events.count(sc.EVENT_RETRY) == 1
    assert events.count(sc.EVENT_ATTEMPT_FAILED) == 1


# -- metrics ---------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_calls_metric_has_postgresql_client(pool: ResilientPool, otel: Otel) -> None:
    """resilience.calls counts the call with client="postgresql" and outcome success."""
    await pool.fetchval("SELECT 1")
    [point] = otel.points(sc.CALLS[0])
    assert point.attributes[sc.CLIENT] == "postgresql"
    assert point.attributes[sc.OUTCOME] == "success"
    assert point.attributes[sc.SERVICE] == "pg"
    assert point.value == 1


@pytest.mark.anyio
async def test_db_operation_duration_metric(pool: ResilientPool, otel: Otel) -> None:
    """db.client.operation.duration records one operation, labelled without the namespace."""
    await pool.fetchval("SELECT 1")
    [point] = otel.points(sc.DB_CLIENT_OPERATION_DURATION[0])
    assert point.count == 1
    assert point.attributes[sc.DB_SYSTEM_NAME] == "postgresql"
    assert point.attributes[sc.DB_OPERATION_NAME] == "SELECT"
    assert sc.DB_NAMESPACE not in point.attributes


# -- retry safety ----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_statement_in_transaction_is_not_retried(
    connection: ResilientConnection, admin: asyncpg.Connection, recorder: Recorder
) -> None:
    """After the backend dies inside a transaction, the next SELECT fails after one attempt."""
    transaction = connection.transaction()
    await transaction.start()
    await terminate(admin, connection.get_server_pid())
    with pytest.raises(LOST_CONNECTION):
        await connection.fetchval("SELECT 1")
    assert recorder.retries == []
    assert recorder.attempts == [1]


@pytest.mark.anyio
async def test_select_in_transaction_killed_midway_is_not_retried(
    pool: ResilientPool, admin: asyncpg.Connection, recorder: Recorder
) -> None:
    """A read-only statement killed mid-way inside a transaction is not resent."""
    marker = unique_marker()
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        killer = asyncio.create_task(terminate_when_running(admin, marker))
        with pytest.raises(LOST_CONNECTION):
            await connection.fetchval(f"SELECT 1 FROM pg_sleep(2) /* {marker} */")
        await killer
    assert recorder.attempts == [1]


@pytest.mark.anyio
async def test_select_outside_transaction_is_retried_on_fresh_connection(
    pool: ResilientPool, admin: asyncpg.Connection, recorder: Recorder
) -> None:
    """A pool-level SELECT whose backend was killed is resent and answered by another backend."""
    marker = unique_marker()
    killer = asyncio.create_task(terminate_when_running(admin, marker))
    pid = await pool.fetchval(f"SELECT pg_backend_pid() FROM pg_sleep(0.2) /* {marker} */")
    killed = await killer
    assert pid != killed
    assert recorder.retries == [FailureKind.CONNECTION]
    assert recorder.finished == [("success", None, 2)]


@pytest.fixture
async def single_pool(recorder: Recorder) -> AsyncIterator[ResilientPool]:
    """A wrapped pool of exactly one connection, so every query reuses the same backend."""
    raw = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
    yield wrap(raw, policy=fast_policy(), observers=[recorder])
    await raw.close()


@pytest.mark.anyio
async def test_select_after_idle_backend_killed_uses_fresh_connection(
    single_pool: ResilientPool, admin: asyncpg.Connection, recorder: Recorder
) -> None:
    """After the pooled connection's backend is killed while idle, a SELECT still succeeds."""
    killed = await single_pool.fetchval("SELECT pg_backend_pid()")
    await terminate(admin, killed)
    pid = await single_pool.fetchval("SELECT pg_backend_pid()")
    assert pid != killed
    assert recorder.finished[-1][0] == "success"


@pytest.mark.anyio
async def test_insert_after_idle_backend_killed_lands_once(
    single_pool: ResilientPool, admin: asyncpg.Connection, recorder: Recorder, table: str
) -> None:
    """An INSERT on a pooled connection whose backend died while idle lands exactly once."""
    await terminate(admin, await single_pool.fetchval("SELECT pg_backend_pid()"))
    await single_pool.execute(f"INSERT INTO {table} (id) VALUES (1)")
    assert recorder.finished[-1][0] == "success"
    assert await admin.fetchval(f"SELECT count(*) FROM {table}") == 1


@pytest.mark.anyio
async def test_insert_killed_midway_is_not_retried(
    pool: ResilientPool, admin: asyncpg.Connection, recorder: Recorder, table: str
) -> None:
    """An INSERT whose backend died mid-statement is not resent: no row, one attempt."""
    marker = unique_marker()
    killer = asyncio.create_task(terminate_when_running(admin, marker))
    with pytest.raises(pgx.PostgresConnectionError) as caught:
        await pool.execute(f"INSERT INTO {table} (id) SELECT 1 FROM pg_sleep(0.5) /* {marker} */")
    await killer
    assert not isinstance(caught.value, RetriesExhaustedError)
    assert recorder.attempts == [1]
    assert await admin.fetchval(f"SELECT count(*) FROM {table}") == 0


@pytest.mark.anyio
async def test_idempotent_write_is_resent(
    pool: ResilientPool, admin: asyncpg.Connection, recorder: Recorder, table: str
) -> None:
    """idempotent=True lets a write killed mid-statement be resent; it lands exactly once."""
    marker = unique_marker()
    killer = asyncio.create_task(terminate_when_running(admin, marker))
    await pool.execute(
        f"INSERT INTO {table} (id) SELECT 1 FROM pg_sleep(0.2) /* {marker} */"
        " ON CONFLICT (id) DO NOTHING",
        idempotent=True,
    )
    await killer
    assert recorder.attempts == [2]
    assert await admin.fetchval(f"SELECT count(*) FROM {table}") == 1


@pytest.mark.slow
@pytest.mark.anyio
async def test_insert_on_refused_connection_is_retried_until_server_returns(
    owned_server: PostgresServer, owned_table: str
) -> None:
    """An INSERT refused while the server is down is resent once it is back: one row."""
    raw = await asyncpg.create_pool(owned_server.dsn, min_size=1, max_size=2)
    recorder = Recorder()
    policy = fast_policy(max_attempts=100, base_delay=0.05, multiplier=1.0)
    pool = wrap(raw, policy=policy, observers=[recorder])
    try:
        owned_server.stop()
        await asyncio.sleep(0.1)  # let asyncpg see its pooled connection close
        starter = asyncio.create_task(start_later(owned_server, 0.3))
        await pool.execute(f"INSERT INTO {owned_table} (id) VALUES (1)")
        await starter
    finally:
        raw.terminate()
    assert len(recorder.retries) >= 2
    assert recorder.finished[-1][0] == "success"
    assert await count_rows(owned_server.dsn, owned_table) == 1


@pytest.mark.slow
@pytest.mark.anyio
async def test_insert_on_refused_connection_exhausts_cleanly(
    owned_server: PostgresServer, owned_table: str
) -> None:
    """With the server down for good, the INSERT ends in RetriesExhaustedError, an OSError."""
    raw = await asyncpg.create_pool(owned_server.dsn, min_size=1, max_size=2)
    recorder = Recorder()
    pool = wrap(raw, policy=fast_policy(max_attempts=3), observers=[recorder])
    try:
        owned_server.stop()
        await asyncio.sleep(0.1)
        with pytest.raises(RetriesExhaustedError) as caught:
            await pool.execute(f"INSERT INTO {owned_table} (id) VALUES (1)")
    finally:
        raw.terminate()
    assert isinstance(caught.value, ConnectionRefusedError)
    assert caught.value.attempts == 3
    owned_server.start()
    assert await count_rows(owned_server.dsn, owned_table) == 0


# -- run_in_transaction ----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_serialization_failure_reruns_loser_once(
    pool: ResilientPool, admin: asyncpg.Connection, table: str
) -> None:
    """Two SERIALIZABLE read-then-write transactions: the loser reruns; both increments land."""
    await admin.execute(f"INSERT INTO {table} (id, v) VALUES (1, 0)")
    calls = {"a": 0, "b": 0}
    have_read = {"a": asyncio.Event(), "b": asyncio.Event()}

    def increment(me: str, other: str) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        async def body(connection: asyncpg.Connection) -> None:
            calls[me] += 1
            value = await connection.fetchval(f"SELECT v FROM {table} WHERE id = 1")
            if calls[me] == 1:  # the first runs both read before either writes
                have_read[me].set()
                await have_read[other].wait()
            await connection.execute(f"UPDATE {table} SET v = $1 WHERE id = 1", value + 1)

        return body

    await asyncio.gather(
        run_in_transaction(pool, increment("a", "b"), isolation="serializable"),
        run_in_transaction(pool, increment("b", "a"), isolation="serializable"),
    )
    assert sorted(calls.values()) == [1, 2]
    assert await admin.fetchval(f"SELECT v FROM {table} WHERE id = 1") == 2


@pytest.mark.anyio
async def test_deadlock_reruns_victim_once(
    pool: ResilientPool, admin: asyncpg.Connection, table: str
) -> None:
    """Two transactions locking rows in opposite order: the deadlock victim reruns once."""
    await admin.execute(f"INSERT INTO {table} (id, v) VALUES (1, 0), (2, 0)")
    calls = {"a": 0, "b": 0}
    locked = {"a": asyncio.Event(), "b": asyncio.Event()}

    def cross(me: str, other: str, first: int, second: int) -> Any:
        async def body(connection: asyncpg.Connection) -> None:
            calls[me] += 1
            await connection.execute("SET LOCAL deadlock_timeout = '50ms'")
            await connection.execute(f"UPDATE {table} SET v = v + 1 WHERE id = $1", first)
            if calls[me] == 1:  # both hold their first lock before either asks for the second
                locked[me].set()
                await locked[other].wait()
            await connection.execute(f"UPDATE {table} SET v = v + 1 WHERE id = $1", second)

        return body

    await asyncio.gather(
        run_in_transaction(pool, cross("a", "b", 1, 2)),
        run_in_transaction(pool, cross("b", "a", 2, 1)),
    )
    assert sorted(calls.values()) == [1, 2]
    rows = await admin.fetch(f"SELECT v FROM {table} ORDER BY id")
    assert [row["v"] for row in rows] == [2, 2]


@pytest.mark.anyio
async def test_permanent_error_in_transaction_is_not_rerun(
    pool: ResilientPool, admin: asyncpg.Connection, table: str
) -> None:
    """A unique violation inside the function is raised after one run; nothing commits."""
    await admin.execute(f"INSERT INTO {table} (id) VALUES (1)")
    calls = 0

    async def body(connection: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        await connection.execute(f"INSERT INTO {table} (id) VALUES (2)")
        await connection.execute(f"INSERT INTO {table} (id) VALUES (1)")

    with pytest.raises(pgx.UniqueViolationError):
        await run_in_transaction(pool, body)
    assert calls == 1
    assert await admin.fetchval(f"SELECT count(*) FROM {table}") == 1


@pytest.mark.anyio
async def test_connection_lost_before_commit_reruns_once(
    pool: ResilientPool, admin: asyncpg.Connection, table: str
) -> None:
    """A backend killed during the function is rerun and commits exactly once."""
    calls = 0

    async def body(connection: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        await connection.execute(f"INSERT INTO {table} (id) VALUES (1)")
        if calls == 1:
            await terminate(admin, connection.get_server_pid())
        await connection.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")

    await run_in_transaction(pool, body)
    assert calls == 2
    assert [tuple(row) for row in await admin.fetch(f"SELECT id, v FROM {table}")] == [(1, 1)]


# -- breaker and faults ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.anyio
async def test_breaker_opens_on_stopped_server_and_closes_after_restart(
    owned_server: PostgresServer,
) -> None:
    """Refused calls open the breaker; after a restart a half-open probe closes it."""
    raw = await asyncpg.create_pool(owned_server.dsn, min_size=1, max_size=2)
    policy = fast_policy(max_attempts=1, failure_threshold=3, reset_timeout=0.3)
    pool = wrap(raw, policy=policy)
    try:
        owned_server.stop()
        await asyncio.sleep(0.1)
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                await pool.fetchval("SELECT 1")
        states = [pool.breaker.state]
        with pytest.raises(CircuitOpenError) as rejected:
            await pool.fetchval("SELECT 1")
        assert isinstance(rejected.value, ConnectionError)
        await asyncio.to_thread(owned_server.start)
        await asyncio.sleep(0.3)
        states.append(pool.breaker.state)
        assert await pool.fetchval("SELECT 1") == 1
        states.append(pool.breaker.state)
        assert states == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    finally:
        raw.terminate()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the machine's PostgreSQL."""
    with FaultProxy(("127.0.0.1", 5432)) as fault_proxy:
        yield fault_proxy


async def proxied_pool(
    proxy: FaultProxy, size: int, command_timeout: float | None = None
) -> asyncpg.Pool:
    """A pool through the proxy. ``command_timeout`` also bounds asyncpg's cancel request."""
    return await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/test",
        min_size=size,
        max_size=size,
        command_timeout=command_timeout,
    )


@pytest.mark.slow
@pytest.mark.anyio
async def test_latency_beyond_call_timeout_times_out_and_counts(proxy: FaultProxy) -> None:
    """A reply slower than call_timeout is cancelled, retried and counted as a failure.

    Observed: the caller regains control only after asyncpg has cleaned up the cancelled
    query (a cancel request and a reset, shielded inside the pool's release), i.e. several
    proxy round trips past ``call_timeout``. The pooled connections survive.
    """
    raw = await proxied_pool(proxy, size=2)
    recorder = Recorder()
    policy = fast_policy(max_attempts=2, failure_threshold=2, call_timeout=0.1)
    pool = wrap(raw, policy=policy, observers=[recorder])
    try:
        proxy.set_mode(LATENCY, latency=0.15)
        with pytest.raises(RetriesExhaustedError) as caught:
            await pool.fetchval("SELECT 1")
        assert isinstance(caught.value, TimeoutError)
        assert recorder.retries == [FailureKind.TIMEOUT]
        assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 2)]
        assert pool.breaker.current_state is BreakerState.OPEN
    finally:
        raw.terminate()


@pytest.mark.slow
@pytest.mark.anyio
async def test_pool_recovers_after_cancelled_queries(proxy: FaultProxy) -> None:
    """After timeouts cancelled queries mid-flight, the pool answers again once latency ends."""
    raw = await proxied_pool(proxy, size=2)
    pool = wrap(raw, policy=fast_policy(max_attempts=1, call_timeout=0.1))
    try:
        proxy.set_mode(LATENCY, latency=0.15)
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await pool.fetchval("SELECT 1")
        proxy.set_mode(PASS)
        recovered = wrap(raw, policy=fast_policy(max_attempts=3, call_timeout=2.0))
        assert await recovered.fetchval("SELECT 2") == 2
    finally:
        raw.terminate()


@pytest.mark.slow
@pytest.mark.anyio
async def test_blackhole_times_out_and_opens_breaker(proxy: FaultProxy) -> None:
    """With every byte held back, calls time out and the breaker opens.

    The pool needs asyncpg's ``command_timeout``: it bounds the cancel request asyncpg sends
    for the timed-out query, which a black hole never answers (see the xfail below).
    """
    raw = await proxied_pool(proxy, size=1, command_timeout=0.3)
    policy = fast_policy(max_attempts=1, failure_threshold=3, call_timeout=0.1)
    pool = wrap(raw, policy=policy)
    try:
        proxy.set_mode(BLACKHOLE)
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await pool.fetchval("SELECT 1")
        assert pool.breaker.current_state is BreakerState.OPEN
        begin = time.monotonic()
        with pytest.raises(CircuitOpenError):
            await pool.fetchval("SELECT 1")
        assert time.monotonic() - begin < 0.05
    finally:
        raw.terminate()


@pytest.mark.xfail(
    strict=True,
    reason="call_timeout does not bound a pool-level query whose cancellation hangs: asyncpg's "
    "pool release (shielded) waits for the CancelRequest, unbounded without command_timeout",
)
@pytest.mark.slow
@pytest.mark.anyio
async def test_call_timeout_bounds_blackholed_pool_query(proxy: FaultProxy) -> None:
    """A black-holed pool query gives up near call_timeout even without command_timeout."""
    raw = await proxied_pool(proxy, size=1)
    pool = wrap(raw, policy=fast_policy(max_attempts=1, call_timeout=0.1))
    try:
        proxy.set_mode(BLACKHOLE)
        with pytest.raises(TimeoutError) as caught:
            async with asyncio.timeout(1.0):  # the test's own guard against hanging
                await pool.fetchval("SELECT 1")
        assert isinstance(caught.value, RetriesExhaustedError)  # ours, not the guard's
    finally:
        raw.terminate()
