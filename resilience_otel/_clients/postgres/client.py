"""The implementation behind :mod:`resilience_otel.asyncpg` (documented there)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from asyncpg import exceptions as pgx

from ..._config.policy import Policy
from ..._core.breaker import CircuitBreaker
from ..._core.clock import SYSTEM_CLOCK, Clock
from ..._core.engine import Classifier
from ..._core.exceptions import CircuitOpenError, mix_with
from ..._core.validate import check_bool, check_callable, check_type
from ..._deadletters.base import DeadLetterQueue
from ..._telemetry.events import Observer
from ..arguments import check_shell_args
from ..dbshell import DbShell
from .classify import classify_postgres
from .failover import ConnectionCalls, PoolCalls, failed_over_by, honour_retired_mark
from .runner import Runner, honour_copy_marks, trusted_functions
from .sql import is_read_only, operation_name, strip_literals
from .transaction import run_transaction

__all__ = [
    "ResilientConnection",
    "ResilientPool",
    "classify_postgres",
    "is_read_only",
    "operation_name",
    "probe",
    "run_in_transaction",
    "strip_literals",
    "wrap",
]

T = TypeVar("T")


def _reject_as_connection_error(error: CircuitOpenError) -> BaseException:
    return mix_with(error, ConnectionError)


def _make_runner(
    target: asyncpg.Connection | asyncpg.Pool,
    *,
    policy: Policy,
    classifier: Classifier | None,
    breaker: CircuitBreaker | None,
    dead_letters: DeadLetterQueue | None,
    observers: Iterable[Observer],
    tracer_provider: Any,
    meter_provider: Any,
    record_query: bool,
    read_only_functions: bool | Collection[str],
    clock: Clock,
    rng: random.Random | None,
) -> Runner:
    trusted = trusted_functions(read_only_functions)
    host, port, database = _server_of(target)
    classify = honour_retired_mark(honour_copy_marks(classifier or classify_postgres))
    shell = DbShell(
        policy, system="postgresql", classify=classify,
        reject_as=_reject_as_connection_error, server=(host, int(port) if port else None),
        namespace=str(database) if database else None, breaker=breaker, dead_letters=dead_letters,
        observers=tuple(observers), tracer_provider=tracer_provider,
        meter_provider=meter_provider, clock=clock, rng=rng, owner="wrap",
    )  # fmt: skip
    return Runner(shell, record_query, trusted)


def _server_of(target: Any) -> tuple[str, int | None, str | None]:
    """Server address, port and database of a connection or pool (for span attributes)."""
    if isinstance(target, asyncpg.Pool):
        kwargs = getattr(target, "_connect_kwargs", None) or {}
        args = getattr(target, "_connect_args", None) or ()
        dsn = args[0] if args and isinstance(args[0], str) else None
        dsn_host, dsn_port, dsn_database = _dsn_parts(dsn) if dsn else (None, None, None)
        host = _first(kwargs.get("host")) or dsn_host or "localhost"
        port = _first(kwargs.get("port")) or dsn_port
        database = kwargs.get("database") or dsn_database
        return str(host), int(port) if port else None, database or None
    address = target._addr
    if isinstance(address, tuple):
        return str(address[0]), int(address[1]), target._params.database
    return str(address), None, target._params.database


def _first(value: Any) -> Any:
    """The first of several hosts or ports (a multi-host pool names its first one)."""
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def _dsn_parts(dsn: str) -> tuple[str | None, int | None, str | None]:
    """Host, port and database of a DSN; of a multi-host one
    (``postgresql://u@a:5432,b:5433/db``), the first host's."""
    parts = urlsplit(dsn)
    first = parts.netloc.rpartition("@")[2].split(",", 1)[0]
    if first.startswith("["):  # [IPv6]:port
        host, _, rest = first[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = first.partition(":")
    return host or None, int(port) if port.isdigit() else None, parts.path.lstrip("/") or None


class _Queries:
    """The query methods, written once for connections and pools.

    Each returns the awaitable of the guarded call (no coroutine of its own in between:
    every layer costs on each resumption of the query).
    """

    _target: Any
    _runner: Runner
    _calls: PoolCalls | ConnectionCalls  # runs the driver's query methods, retiring on failover

    def _in_transaction(self) -> bool:
        return False

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker guarding this pool or connection."""
        return self._runner.shell.breaker

    def execute(
        self, query: str, *args: Any, timeout: float | None = None, idempotent: bool = False
    ) -> Awaitable[str]:
        """``execute`` with resilience; ``idempotent=True`` allows resending a write."""
        return self._runner.run(
            query, lambda _: self._calls.run("execute", query, *args, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def executemany(
        self,
        command: str,
        args: Iterable[Any],
        *,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> Awaitable[None]:
        """``executemany`` with resilience (a write: resent only when ``idempotent``)."""
        rows = list(args)
        return self._runner.run(
            command, lambda _: self._calls.run("executemany", command, rows, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def fetch(
        self, query: str, *args: Any, timeout: float | None = None, idempotent: bool = False
    ) -> Awaitable[list[Any]]:
        """``fetch`` with resilience."""
        return self._runner.run(
            query, lambda _: self._calls.run("fetch", query, *args, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None, idempotent: bool = False
    ) -> Awaitable[Any]:
        """``fetchrow`` with resilience."""
        return self._runner.run(
            query, lambda _: self._calls.run("fetchrow", query, *args, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def fetchval(
        self,
        query: str,
        *args: Any,
        column: int = 0,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> Awaitable[Any]:
        """``fetchval`` with resilience."""
        return self._runner.run(
            query,
            lambda _: self._calls.run("fetchval", query, *args, column=column, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def copy_from_table(self, table_name: str, *, output: Any, **kwargs: Any) -> Awaitable[str]:
        """``copy_from_table`` (a read of the table): resent after a failure only until the
        first rows reached ``output`` (a path is rewritten from the start on each attempt)."""
        run = self._calls.run
        return self._runner.copy_out(
            None, lambda out: run("copy_from_table", table_name, output=out, **kwargs),
            output, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def copy_from_query(self, query: str, *args: Any, output: Any, **kwargs: Any) -> Awaitable[str]:
        """``copy_from_query``: resent after a failure only when ``query`` is read-only and
        no rows reached ``output`` yet."""
        run = self._calls.run
        return self._runner.copy_out(
            query, lambda out: run("copy_from_query", query, *args, output=out, **kwargs),
            output, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def copy_to_table(
        self, table_name: str, *, idempotent: bool = False, **kwargs: Any
    ) -> Awaitable[str]:
        """``copy_to_table`` (a write): resent only when it had no effect or ``idempotent``."""
        return self._runner.run(
            "COPY", lambda _: self._calls.run("copy_to_table", table_name, **kwargs),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def copy_records_to_table(
        self, table_name: str, *, records: Iterable[Any], idempotent: bool = False, **kwargs: Any
    ) -> Awaitable[str]:
        """``copy_records_to_table`` (a write): resent only when safe or ``idempotent``."""
        rows = list(records)
        run = self._calls.run
        return self._runner.run(
            "COPY", lambda _: run("copy_records_to_table", table_name, records=rows, **kwargs),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        # Everything else (transaction(), prepare(), add_listener(), ...) is the driver's own.
        return getattr(self._target, name)


class ResilientConnection(_Queries):
    """An ``asyncpg.Connection`` whose queries go through the policy; see :func:`wrap`.

    After a failover (25006, 57P03, 57P01) the connection is terminated (and, when it was
    borrowed from a pool, the pool's other connections expired) and the error is raised, not
    resent: a connection cannot be replaced in the caller's hands, so reconnecting (or
    acquiring again) is the caller's. A :class:`ResilientPool` resends on a fresh connection.
    """

    def __init__(self, connection: asyncpg.Connection, runner: Runner) -> None:
        self._target = connection
        self._runner = runner
        self._calls = ConnectionCalls(connection, failed_over_by(runner.shell.engine.classify))

    @property
    def raw(self) -> asyncpg.Connection:
        """The wrapped connection."""
        return self._target

    def _in_transaction(self) -> bool:
        return bool(self._target.is_in_transaction())


class ResilientPool(_Queries):
    """An ``asyncpg.Pool`` whose queries go through the policy; see :func:`wrap`.

    Each attempt of a pool-level query acquires a connection, so a retry after a lost
    connection uses a fresh one. After a failover (25006, 57P03, 57P01) the connection that
    got it is terminated and ``expire_connections()`` makes the pool replace the others at
    their next acquire (the pool is never closed); the statement is resent, even a write,
    since the server refused it.
    """

    def __init__(self, pool: asyncpg.Pool, runner: Runner) -> None:
        self._target = pool
        self._runner = runner
        self._calls = PoolCalls(pool, failed_over_by(runner.shell.engine.classify))

    @property
    def raw(self) -> asyncpg.Pool:
        """The wrapped pool."""
        return self._target

    @contextlib.asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[ResilientConnection]:
        """Borrow a connection (guarded by the same breaker and policy)."""
        async with self._target.acquire(timeout=timeout) as connection:
            yield ResilientConnection(connection, self._runner)


def wrap(
    target: asyncpg.Connection | asyncpg.Pool,
    *,
    policy: Policy,
    classifier: Classifier | None = None,
    breaker: CircuitBreaker | None = None,
    dead_letters: DeadLetterQueue | None = None,
    observers: Iterable[Observer] = (),
    tracer_provider: Any = None,
    meter_provider: Any = None,
    record_query: bool = False,
    read_only_functions: bool | Collection[str] = False,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
) -> Any:
    """Wrap an ``asyncpg.Connection`` (-> :class:`ResilientConnection`) or ``asyncpg.Pool``
    (-> :class:`ResilientPool`).

    Args:
        target: the connection or pool to wrap.
        policy: the service's policy.
        classifier: overrides :func:`classify_postgres`.
        breaker: share a breaker (e.g. with a ``RedisBreakerStore``-backed one).
        dead_letters: where failed statements are recorded (operation name only, no values).
        observers: receive call events (telemetry, health).
        tracer_provider: the OTel tracer provider (default: the global one).
        meter_provider: the OTel meter provider (default: the global one).
        clock: time source; ``resilience_otel.testing.FakeClock`` makes retries instant.
        rng: random source for jitter.
        record_query: put the statement on spans as ``db.query.text``, scrubbed by
            :func:`strip_literals` (every literal a ``?``, comments removed); off by default
            (queries may carry personal data).
        read_only_functions: vouch that functions called by read-only statements change
            nothing, so ``SELECT get_price($1)`` is resent after a failure that may have
            reached the server: ``True`` for every function, or a collection of names
            (``{"get_price", "shop.find_order"}``; a bare name matches in any schema, case
            does not matter). Default ``False``: a statement calling a function that is not
            a known side-effect-free built-in is not resent once sent. Built-ins that write
            (``nextval``, ``setval``, ``pg_notify``, advisory locks, ...) never become safe.
            For one call, ``idempotent=True`` says the statement is safe to resend.
    """
    check_type(
        "wrap(target=...)", target,
        (asyncpg.Connection, asyncpg.Pool, asyncpg.pool.PoolConnectionProxy),
        "an asyncpg.Connection or asyncpg.Pool",
    )  # fmt: skip
    check_shell_args(
        "wrap", policy=policy, classifier=classifier, breaker=breaker, observers=observers,
        clock=clock, rng=rng, flags={"record_query": record_query},
    )  # fmt: skip
    runner = _make_runner(
        target, policy=policy, classifier=classifier, breaker=breaker, dead_letters=dead_letters,
        observers=observers, tracer_provider=tracer_provider, meter_provider=meter_provider,
        record_query=record_query, read_only_functions=read_only_functions, clock=clock, rng=rng,
    )  # fmt: skip
    if isinstance(target, asyncpg.Pool):
        return ResilientPool(target, runner)
    return ResilientConnection(target, runner)


async def run_in_transaction(
    pool: ResilientPool | asyncpg.Pool,
    fn: Callable[[Any], Awaitable[T]],
    *,
    policy: Policy | None = None,
    isolation: str | None = None,
    readonly: bool = False,
    deferrable: bool = False,
) -> T:
    """Run ``fn(connection)`` in a transaction, rerunning the whole function when the
    transaction failed without committing: serialization failure (40001), deadlock (40P01),
    a connection lost before ``COMMIT``, or a failover (25006, 57P03, 57P01: the connection
    is terminated, the pool's others expired, and the rerun gets a fresh connection).

    ``fn`` must be safe to run again (no side effects outside the database). Pass a
    :class:`ResilientPool` to share its breaker and telemetry, or a raw pool with ``policy``.
    """
    check_callable("run_in_transaction(fn=...)", fn)
    check_bool("run_in_transaction(readonly=...)", readonly)
    check_bool("run_in_transaction(deferrable=...)", deferrable)
    if isinstance(pool, ResilientPool):
        runner, raw = pool._runner, pool.raw
    else:
        if policy is None:
            raise ValueError("run_in_transaction needs policy= when given a raw asyncpg pool")
        runner, raw = wrap(pool, policy=policy)._runner, pool

    return await run_transaction(
        runner, raw, fn, isolation=isolation, readonly=readonly, deferrable=deferrable
    )


async def probe(
    target: ResilientPool | ResilientConnection | asyncpg.Pool | asyncpg.Connection,
    timeout: float = 2.0,
) -> bool:
    """Health probe: ``SELECT 1`` within ``timeout`` seconds, bypassing retries and breaker."""
    raw = target.raw if isinstance(target, ResilientPool | ResilientConnection) else target
    try:
        return bool(await raw.fetchval("SELECT 1", timeout=timeout) == 1)
    except (OSError, TimeoutError, pgx.PostgresError, pgx.InterfaceError):
        return False
