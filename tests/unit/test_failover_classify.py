"""The FAILOVER failure class: classification, retry, breaker, telemetry and retirement
(no sockets, fake clock, in-memory OTel SDK)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asyncpg import exceptions as pgx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import exceptions as rex

from resilience_otel import (
    BreakerConfig,
    ErrorClass,
    Failure,
    FailureKind,
    Jitter,
    Observer,
    Policy,
    RetryConfig,
)
from resilience_otel._clients.dbshell import DbShell
from resilience_otel._clients.postgres.client import _dsn_parts
from resilience_otel._clients.postgres.failover import honour_retired_mark
from resilience_otel._clients.redis.guard import Guard, retiring_async, retiring_sync
from resilience_otel._clients.redis.pipeline import honour_pipeline_marks
from resilience_otel._core.engine import Attempt
from resilience_otel._telemetry import semconv as sc
from resilience_otel.asyncpg import classify_postgres
from resilience_otel.redis import classify_redis
from resilience_otel.testing import FakeClock

F = ErrorClass.FAILOVER
SERVICE = "cache"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


def failover_of(code: str) -> Failure:
    """What every failover classifies as: refused before running, so not sent."""
    return Failure(F, FailureKind.FAILOVER, sent=False, error_type=code)


# -- classification ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (rex.ReadOnlyError("You can't write against a read only replica."), "READONLY"),
        (rex.ResponseError("READONLY You can't write against a read only replica."), "READONLY"),
        (rex.MasterDownError("Link with MASTER is down"), "MASTERDOWN"),
        (rex.ResponseError("MASTERDOWN Link with MASTER is down"), "MASTERDOWN"),
        (rex.BusyLoadingError("Redis is loading the dataset in memory"), "LOADING"),
        (rex.ConnectionError("The previous master is now a slave"), "READONLY"),
    ],
    ids=lambda value: str(value)[:24] if isinstance(value, Exception) else value,
)
def test_redis_replies_of_a_demoted_node_are_failovers(error: Exception, code: str) -> None:
    """READONLY, MASTERDOWN, LOADING and Sentinel's demotion error are FAILOVER, not sent."""
    assert classify_redis(None, error) == failover_of(code)


def test_redis_other_connection_errors_stay_transient() -> None:
    """A ConnectionError that is not Sentinel's demotion stays TRANSIENT."""
    failure = classify_redis(None, rex.ConnectionError("Connection reset by peer"))
    assert failure is not None
    assert failure.error_class is ErrorClass.TRANSIENT


def test_redis_readonly_later_in_a_reply_is_not_a_failover() -> None:
    """Only the leading reply code counts: "ERR ... READONLY" stays PERMANENT."""
    failure = classify_redis(None, rex.ResponseError("ERR unknown command 'READONLY x'"))
    assert failure is not None
    assert failure.error_class is ErrorClass.PERMANENT


@pytest.mark.parametrize(
    ("error_type", "sqlstate"),
    [
        (pgx.ReadOnlySQLTransactionError, "25006"),
        (pgx.CannotConnectNowError, "57P03"),
        (pgx.AdminShutdownError, "57P01"),
    ],
)
def test_postgres_states_of_a_demoted_server_are_failovers(
    error_type: type[pgx.PostgresError], sqlstate: str
) -> None:
    """25006, 57P03 and 57P01 are FAILOVER, not sent, with the SQLSTATE as error type."""
    error = error_type("cannot execute INSERT in a read-only transaction")
    assert error.sqlstate == sqlstate
    assert classify_postgres(None, error) == failover_of(sqlstate)


def test_postgres_other_25_states_stay_permanent() -> None:
    """Another invalid-transaction-state error (25P02) is still PERMANENT."""
    failure = classify_postgres(None, pgx.InFailedSQLTransactionError("aborted"))
    assert failure is not None
    assert failure.error_class is ErrorClass.PERMANENT


def test_failover_counts_toward_the_breaker() -> None:
    """A failover is the upstream's fault: the breaker counts it."""
    assert failover_of("READONLY").counts_as_failure


def test_failover_is_retried_by_default() -> None:
    """RetryConfig.retry_on includes FAILOVER by default, next to TRANSIENT."""
    assert RetryConfig().retry_on == frozenset({ErrorClass.TRANSIENT, F})


def test_failover_is_a_metric_label_and_a_retry_reason() -> None:
    """The value "failover" is its own error_class label value and retry reason."""
    assert F.value in sc.ERROR_CLASS_VALUES
    assert FailureKind.FAILOVER.value in sc.RETRY_REASON_VALUES


def test_retired_mark_makes_a_failover_final() -> None:
    """An error of a retired held connection keeps its class but is not resendable."""
    error = pgx.ReadOnlySQLTransactionError("read-only")
    classify = honour_retired_mark(classify_postgres)
    assert classify(None, error) == failover_of("25006")
    error._resilience_retired = True  # type: ignore[attr-defined]
    failure = classify(None, error)
    assert failure is not None
    assert (failure.error_class, failure.resendable) == (F, False)


def test_a_plain_pipeline_failover_counts_as_sent() -> None:
    """A plain pipeline's error is marked: its failover stays FAILOVER but counts as sent
    (other commands of the pipeline may have run); an unmarked one stays unsent."""
    classify = honour_pipeline_marks(classify_redis)
    assert classify(None, rex.ReadOnlyError("x")) == failover_of("READONLY")
    error = rex.ReadOnlyError("x")
    error._resilience_pipeline_ran = True  # type: ignore[attr-defined]
    failure = classify(None, error)
    assert failure is not None
    assert (failure.error_class, failure.sent) == (F, True)


# -- through the engine --------------------------------------------------------------------------
@dataclass
class Otel:
    """Per-test providers with in-memory span export and metric reading."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def counter(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        """The points of counter ``name`` by attribute set."""
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, Any]], float] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            assert isinstance(point, NumberDataPoint)
                            found[frozenset(point.attributes.items())] = point.value
        return found


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


class Heard(Observer):
    """Records the failover hook's calls."""

    def __init__(self) -> None:
        self.failovers: list[tuple[str, str, str]] = []

    def failover(self, service: str, client: str, error_type: str) -> None:
        self.failovers.append((service, client, error_type))


def make_shell(otel: Otel, clock: FakeClock, observer: Observer, **retry: Any) -> DbShell:
    """A Redis shell with fixed 0.1 s backoff, no budget and no timeouts."""
    policy = Policy(
        service=SERVICE,
        breaker=BreakerConfig(failure_threshold=100, call_timeout=None),
        retry=RetryConfig(max_attempts=3, base_delay=0.1, jitter=Jitter.NONE, budget=None, **retry),
    )
    return DbShell(
        policy, system="redis", classify=classify_redis, reject_as=lambda e: e,
        server=("127.0.0.1", 6379), namespace="0", breaker=None, dead_letters=None,
        observers=(observer,), tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider, clock=clock, rng=None,
    )  # fmt: skip


class Replies:
    """An attempt that fails with ``errors`` in turn, then returns "OK"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def __call__(self, step: Attempt) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return "OK"


def test_a_write_refused_by_a_demoted_node_is_resent(otel: Otel) -> None:
    """A non-replayable write refused with READONLY is resent and succeeds on attempt 2."""
    shell = make_shell(otel, FakeClock(), Heard())
    attempt = Replies(rex.ReadOnlyError("You can't write against a read only replica."))
    result = shell.run_sync(shell.operation("INCR"), attempt, replayable=False)
    assert (result, attempt.attempts) == ("OK", 2)


def test_a_failover_is_counted_heard_and_put_on_the_span(otel: Otel) -> None:
    """resilience.failovers counts it by service and db.system.name; the observer hears it;
    the operation's span has a resilience.failover event naming the reply code."""
    heard = Heard()
    shell = make_shell(otel, FakeClock(), heard)
    attempt = Replies(rex.ReadOnlyError("You can't write"))
    shell.run_sync(shell.operation("SET"), attempt, replayable=False)
    assert heard.failovers == [(SERVICE, "redis", "READONLY")]
    key = frozenset({(sc.SERVICE, SERVICE), (sc.DB_SYSTEM_NAME, "redis")})
    assert otel.counter(sc.FAILOVERS[0]) == {key: 1}
    (span,) = otel.spans.get_finished_spans()
    events = [e for e in span.events if e.name == sc.EVENT_FAILOVER]
    assert [dict(e.attributes or {}) for e in events] == [
        {sc.DB_SYSTEM_NAME: "redis", sc.ERROR_TYPE: "READONLY"}
    ]


def test_a_failover_outside_retry_on_is_not_resent(otel: Otel) -> None:
    """retry_on without FAILOVER turns the resend off (the failover is still counted)."""
    heard = Heard()
    shell = make_shell(otel, FakeClock(), heard, retry_on={ErrorClass.TRANSIENT})
    attempt = Replies(rex.ReadOnlyError("You can't write"))
    with pytest.raises(rex.ReadOnlyError):
        shell.run_sync(shell.operation("SET"), attempt, replayable=False)
    assert (attempt.attempts, len(heard.failovers)) == (1, 1)


def test_a_failover_opens_the_breaker(otel: Otel) -> None:
    """Failovers count as breaker failures: enough of them open it."""
    policy_shell = make_shell(otel, FakeClock(), Heard(), retry_on={ErrorClass.TRANSIENT})
    breaker = policy_shell.breaker
    for _ in range(100):
        with pytest.raises(rex.ReadOnlyError):
            policy_shell.run_sync(
                policy_shell.operation("SET"), Replies(rex.ReadOnlyError("x")), replayable=False
            )
    assert breaker.current_state.value == "open"


def test_a_final_failover_is_not_resent(otel: Otel) -> None:
    """A failover its classifier marks not resendable ends the call at once."""

    def final(value: object, error: Exception | None) -> Failure | None:
        failure = classify_redis(value, error)
        return None if failure is None else Failure(F, FailureKind.FAILOVER, sent=False,
                                                    resendable=False)  # fmt: skip

    shell = make_shell(otel, FakeClock(), Heard())
    shell.engine.classify = final
    attempt = Replies(rex.ReadOnlyError("x"))
    with pytest.raises(rex.ReadOnlyError):
        shell.run_sync(shell.operation("SET"), attempt, replayable=True)
    assert attempt.attempts == 1


# -- retiring Redis connections --------------------------------------------------------------
class FakeConnection:
    """Counts disconnects."""

    def __init__(self) -> None:
        self.disconnects = 0

    def disconnect(self) -> None:
        self.disconnects += 1


class FakePool:
    """Records disconnect(inuse_connections=...) calls."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def disconnect(self, inuse_connections: bool = True) -> None:
        self.calls.append(inuse_connections)


@dataclass
class Holder:
    """A client, pipeline or pub/sub: the connection it keeps and its pool."""

    connection: FakeConnection | None
    connection_pool: FakePool


def make_guard(otel: Otel) -> Guard:
    """A guard over a Redis shell."""
    policy = Policy(service=SERVICE)
    return Guard(
        policy, lambda p, b: make_shell(otel, FakeClock(), Heard()), frozenset(), single_try=True
    )


def test_failover_retires_the_failing_held_and_idle_connections(otel: Otel) -> None:
    """After READONLY: the failing and the held connection are disconnected once each, and
    the pool's idle connections (never those in use)."""
    guard = make_guard(otel)
    failing, held = FakeConnection(), FakeConnection()
    holder = Holder(held, FakePool())
    guard.retire_sync(holder, rex.ReadOnlyError("x"), failing)
    assert (failing.disconnects, held.disconnects, holder.connection_pool.calls) == (1, 1, [False])


def test_the_held_failing_connection_is_disconnected_once(otel: Otel) -> None:
    """A single-connection client's failing connection is its held one: one disconnect."""
    guard = make_guard(otel)
    conn = FakeConnection()
    guard.retire_sync(Holder(conn, FakePool()), rex.ReadOnlyError("x"), conn)
    assert conn.disconnects == 1


def test_other_failures_retire_nothing(otel: Otel) -> None:
    """A WRONGTYPE (or any non-failover) leaves every connection alone."""
    guard = make_guard(otel)
    conn = FakeConnection()
    holder = Holder(conn, FakePool())
    guard.retire_sync(holder, rex.ResponseError("WRONGTYPE x"), conn)
    assert (conn.disconnects, holder.connection_pool.calls) == (0, [])


def test_a_pubsub_command_failing_over_retires_its_connection(otel: Otel) -> None:
    """A pub/sub's own connection is disconnected when its command fails over, and the
    error still reaches the caller."""
    guard = make_guard(otel)
    held = FakeConnection()
    holder = Holder(held, FakePool())

    def subscribe(*args: Any) -> None:
        raise rex.BusyLoadingError("Redis is loading the dataset in memory")

    with pytest.raises(rex.BusyLoadingError):
        retiring_sync(subscribe, guard, holder)("SUBSCRIBE", "events")
    assert (held.disconnects, holder.connection_pool.calls) == (1, [False])


class AsyncFakeConnection:
    """Counts awaited disconnects; the first may fail."""

    def __init__(self, fail: bool = False) -> None:
        self.disconnects = 0
        self.fail = fail

    async def disconnect(self) -> None:
        self.disconnects += 1
        if self.fail:
            raise TimeoutError("Timed out closing connection")


class AsyncFakePool:
    """Records awaited disconnect(inuse_connections=...) calls."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    async def disconnect(self, inuse_connections: bool = True) -> None:
        self.calls.append(inuse_connections)


@pytest.mark.anyio
async def test_async_failover_retires_held_and_idle_connections(otel: Otel) -> None:
    """redis.asyncio: the held connection and the pool's idle ones are disconnected
    (awaited) before the error is re-raised."""
    guard = make_guard(otel)
    holder = type("H", (), {})()
    holder.connection = AsyncFakeConnection()
    holder.connection_pool = AsyncFakePool()

    async def incr(*args: Any) -> int:
        raise rex.ReadOnlyError("You can't write against a read only replica.")

    with pytest.raises(rex.ReadOnlyError):
        await retiring_async(incr, guard, holder, single=True)("INCR", "n")
    assert (holder.connection.disconnects, holder.connection_pool.calls) == (1, [False])


@pytest.mark.anyio
async def test_a_failing_close_does_not_hide_the_error(otel: Otel) -> None:
    """A close that times out during retirement is logged; the caller gets READONLY."""
    guard = make_guard(otel)
    holder = type("H", (), {})()
    holder.connection = AsyncFakeConnection(fail=True)
    holder.connection_pool = AsyncFakePool()

    async def incr(*args: Any) -> int:
        raise rex.ReadOnlyError("x")

    with pytest.raises(rex.ReadOnlyError):
        await retiring_async(incr, guard, holder, single=False)("INCR", "n")


# -- multi-host DSNs (how failover setups name their primary) ------------------------------------
@pytest.mark.parametrize(
    ("dsn", "parts"),
    [
        ("postgresql://app@10.0.0.1:5432,10.0.0.2:5433/shop", ("10.0.0.1", 5432, "shop")),
        ("postgresql://app:secret@db.internal/shop", ("db.internal", None, "shop")),
        ("postgresql://[::1]:5433/shop", ("::1", 5433, "shop")),
        ("postgresql:///shop?host=/run/postgresql", (None, None, "shop")),
    ],
)
def test_a_pool_dsn_names_its_first_host(dsn: str, parts: tuple[Any, ...]) -> None:
    """A pool's span attributes come from its DSN; a multi-host one names its first host."""
    assert _dsn_parts(dsn) == parts
