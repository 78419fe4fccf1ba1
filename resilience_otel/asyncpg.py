"""Resilient asyncpg connections and pools.

    pool = resilience_otel.asyncpg.wrap(await asyncpg.create_pool(dsn), policy=policy)
    rows = await pool.fetch("SELECT * FROM orders WHERE id = $1", order_id)

Retry safety: a statement is never resent inside an open transaction. Outside one, read-only
statements (``SELECT``, ``SHOW``, ``VALUES``, ``TABLE``, ``EXPLAIN`` and ``WITH`` queries
without data-modifying words) are retried; writes are retried only when they certainly had no
effect (connection refused, pool exhausted, serialization failure or deadlock) or when the call
says ``idempotent=True``. :func:`run_in_transaction` reruns a whole transaction function on
serialization failure (40001), deadlock (40P01) and connection loss before ``COMMIT``; a
connection lost *during* ``COMMIT`` leaves the outcome unknown and is raised, never rerun.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from asyncpg import exceptions as pgx

from . import _semconv as sc
from ._breaker import CircuitBreaker
from ._classify import ErrorClass, Failure, FailureKind, classify_exception
from ._clock import SYSTEM_CLOCK, Clock
from ._config import Policy
from ._dbshell import DbShell, Operation
from ._engine import Attempt, Classifier
from ._events import Observer
from ._exceptions import CircuitOpenError, mix_with
from .dlq import DeadLetterQueue

__all__ = [
    "ResilientConnection",
    "ResilientPool",
    "classify_postgres",
    "is_read_only",
    "probe",
    "run_in_transaction",
    "strip_literals",
    "wrap",
]

T = TypeVar("T")

_TRANSIENT_STATES = frozenset(
    {"40001", "40P01", "57P01", "57P02", "57P03", "53300", "55P03", "57014"}
)
_NO_EFFECT_STATES = frozenset({"40001", "40P01", "57P03", "53300"})  # rolled back or refused
_CRITICAL_STATES = frozenset({"53100", "53200", "XX001", "XX002", "58030"})
_PERMANENT_PREFIXES = ("22", "23", "42", "28", "3D", "0A", "2B", "2D", "25", "44")
_ROLLED_BACK_MARK = "_resilience_rolled_back"


def _kind_of(state: str) -> FailureKind:
    if state in ("40001", "40P01", "55P03"):
        return FailureKind.OTHER
    if state == "57014":
        return FailureKind.TIMEOUT
    if state.startswith("08") or state in ("57P01", "57P02", "57P03", "53300"):
        return FailureKind.CONNECTION
    return FailureKind.SERVER_ERROR


def classify_postgres(value: object, error: Exception | None) -> Failure | None:
    """The default asyncpg classifier, by SQLSTATE.

    TRANSIENT: connection exceptions (08xxx), admin/crash shutdown (57P01, 57P02), cannot
    connect now (57P03), too many connections (53300), serialization failure (40001), deadlock
    (40P01), lock not available (55P03), statement timeout (57014), socket errors, timeouts, a
    closed connection and asyncpg's refusal to send on a connection whose backend died while
    idle (``InternalClientError``: "cannot switch to state"; not sent). PERMANENT: data
    (22xxx), integrity (23xxx), syntax/undefined (42xxx), authentication (28xxx) and the rest.
    CRITICAL: disk full (53100), out of memory (53200), data corruption (XX001, XX002), I/O
    error (58030).
    """
    if error is None:
        return None
    name = type(error).__name__
    critical = classify_exception(error)
    if critical is not None:
        return critical
    rolled_back = bool(getattr(error, _ROLLED_BACK_MARK, False))
    state = getattr(error, "sqlstate", None)
    if isinstance(error, pgx.PostgresError) and isinstance(state, str):
        if state in _CRITICAL_STATES:
            return Failure(ErrorClass.CRITICAL, FailureKind.SERVER_ERROR, error_type=state)
        if state in _TRANSIENT_STATES or state.startswith("08"):
            no_effect = rolled_back or state in _NO_EFFECT_STATES
            return Failure(
                ErrorClass.TRANSIENT, _kind_of(state), sent=not no_effect, error_type=state
            )
        return Failure(ErrorClass.PERMANENT, FailureKind.CLIENT_ERROR, error_type=state)
    if isinstance(error, TimeoutError):
        return Failure(
            ErrorClass.TRANSIENT, FailureKind.TIMEOUT, sent=not rolled_back, error_type=name
        )
    refused = isinstance(error, ConnectionRefusedError | pgx.TooManyConnectionsError)
    if isinstance(error, OSError | pgx.InterfaceError) and (
        isinstance(error, OSError) or "connection" in str(error).lower()
    ):
        no_effect = refused or rolled_back
        return Failure(
            ErrorClass.TRANSIENT, FailureKind.CONNECTION, sent=not no_effect, error_type=name
        )
    if isinstance(error, pgx.InternalClientError) and "another operation" in str(error):
        # A backend terminated while the connection sat idle leaves asyncpg's protocol busy
        # with the unsolicited error; it then refuses to send ("cannot switch to state"):
        # nothing reached the server.
        return Failure(ErrorClass.TRANSIENT, FailureKind.CONNECTION, sent=False, error_type=name)
    return Failure(ErrorClass.PERMANENT, FailureKind.OTHER, error_type=name)


def _reject_as_connection_error(error: CircuitOpenError) -> BaseException:
    return mix_with(error, ConnectionError)


# -- statements ----------------------------------------------------------------------------------
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_WRITES = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|CREATE|DROP|ALTER|TRUNCATE|GRANT|COPY|CALL)\b", re.I
)
_READ_ONLY_FIRST = frozenset({"SELECT", "SHOW", "VALUES", "TABLE", "WITH", "EXPLAIN"})
_LITERALS = re.compile(
    r"'(?:[^']|'')*'|\$([A-Za-z_]\w*|)\$.*?\$\1\$|(?<![$\w])\d+(?:\.\d+)?\b", re.S
)  # strings, dollar quotes with or without a tag ($$x$$, $pw$x$pw$), numbers


def operation_name(query: str) -> str:
    """The statement's first keyword, upper-cased (``SELECT``); a bounded label value."""
    words = _COMMENTS.sub(" ", query).split(None, 1)
    return words[0].upper()[:16] if words else "UNKNOWN"


def is_read_only(query: str) -> bool:
    """Whether ``query`` cannot change data (judged from its text; see the module docstring)."""
    text = _COMMENTS.sub(" ", query)
    first = text.split(None, 1)[0].upper() if text.split() else ""
    if first not in _READ_ONLY_FIRST:
        return False
    if first == "EXPLAIN" and not re.search(r"\bANALY[SZ]E\b", text, re.I):
        return True  # a plain EXPLAIN plans the statement without running it
    return first in ("SHOW", "VALUES", "TABLE") or _WRITES.search(text) is None


def strip_literals(query: str) -> str:
    """``query`` with string, dollar-quoted and numeric literals replaced by ``?``."""
    return _LITERALS.sub("?", query)


# -- the shared runner -----------------------------------------------------------------------------
class _Runner:
    """A shell plus the query-text policy; shared by a pool and the connections it lends."""

    _MAX_STATEMENTS = 1024

    def __init__(self, shell: DbShell, record_query: bool) -> None:
        self.shell = shell
        self.record_query = record_query
        # query -> (operation, read-only, span attributes for the query text): statements are
        # mostly constants, so each is parsed once. Bounded: cleared when full (queries built
        # with literals in them).
        self._statements: dict[str, tuple[Operation, bool, dict[str, Any] | None]] = {}

    def statement(self, query: str) -> tuple[Operation, bool, dict[str, Any] | None]:
        """The operation of ``query``, whether it is read-only, and its ``db.query.text``
        attribute (only with ``record_query``, literals stripped)."""
        known = self._statements.get(query)
        if known is None:
            text = {sc.DB_QUERY_TEXT: strip_literals(query)} if self.record_query else None
            known = (self.shell.operation(operation_name(query)), is_read_only(query), text)
            if len(self._statements) >= self._MAX_STATEMENTS:
                self._statements.clear()
            self._statements[query] = known
        return known

    def run(
        self,
        query: str,
        attempt: Callable[[Attempt], Awaitable[T]],
        *,
        idempotent: bool,
        in_transaction: bool = False,
        operation: str | None = None,
    ) -> Awaitable[T]:
        """Run ``query``'s attempts through the shell (to await)."""
        op, read_only, extra = self.statement(query)
        if operation is not None:
            op = self.shell.operation(operation)
        return self.shell.run_async(
            op,
            attempt,
            replayable=idempotent or read_only,
            extra=extra,
            retry=not in_transaction,
        )


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
    clock: Clock,
    rng: random.Random | None,
) -> _Runner:
    host, port, database = _server_of(target)
    shell = DbShell(
        policy, system="postgresql", classify=classifier or classify_postgres,
        reject_as=_reject_as_connection_error, server=(host, int(port) if port else None),
        namespace=str(database) if database else None, breaker=breaker, dead_letters=dead_letters,
        observers=tuple(observers), tracer_provider=tracer_provider,
        meter_provider=meter_provider, clock=clock, rng=rng,
    )  # fmt: skip
    return _Runner(shell, record_query)


def _server_of(target: Any) -> tuple[str, int | None, str | None]:
    """Server address, port and database of a connection or pool (for span attributes)."""
    if isinstance(target, asyncpg.Pool):
        kwargs = getattr(target, "_connect_kwargs", None) or {}
        args = getattr(target, "_connect_args", None) or ()
        parts = urlsplit(args[0]) if args and isinstance(args[0], str) else None
        host = kwargs.get("host") or (parts.hostname if parts else None) or "localhost"
        port = kwargs.get("port") or (parts.port if parts else None)
        database = kwargs.get("database") or (parts.path.lstrip("/") if parts else None)
        return str(host), int(port) if port else None, database or None
    address = target._addr
    if isinstance(address, tuple):
        return str(address[0]), int(address[1]), target._params.database
    return str(address), None, target._params.database


class _Queries:
    """The query methods, written once for connections and pools.

    Each returns the awaitable of the guarded call (no coroutine of its own in between:
    every layer costs on each resumption of the query).
    """

    _target: Any
    _runner: _Runner

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
            query, lambda _: self._target.execute(query, *args, timeout=timeout),
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
            command, lambda _: self._target.executemany(command, rows, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def fetch(
        self, query: str, *args: Any, timeout: float | None = None, idempotent: bool = False
    ) -> Awaitable[list[Any]]:
        """``fetch`` with resilience."""
        return self._runner.run(
            query, lambda _: self._target.fetch(query, *args, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None, idempotent: bool = False
    ) -> Awaitable[Any]:
        """``fetchrow`` with resilience."""
        return self._runner.run(
            query, lambda _: self._target.fetchrow(query, *args, timeout=timeout),
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
            query, lambda _: self._target.fetchval(query, *args, column=column, timeout=timeout),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def copy_from_table(self, table_name: str, **kwargs: Any) -> Awaitable[str]:
        """``copy_from_table`` (a read of the table): retried like a SELECT."""
        return self._runner.run(
            "SELECT", lambda _: self._target.copy_from_table(table_name, **kwargs),
            idempotent=True, in_transaction=self._in_transaction(), operation="COPY",
        )  # fmt: skip

    def copy_from_query(self, query: str, *args: Any, **kwargs: Any) -> Awaitable[str]:
        """``copy_from_query``: retried when ``query`` is read-only."""
        return self._runner.run(
            query, lambda _: self._target.copy_from_query(query, *args, **kwargs),
            idempotent=False, in_transaction=self._in_transaction(), operation="COPY",
        )  # fmt: skip

    def copy_to_table(
        self, table_name: str, *, idempotent: bool = False, **kwargs: Any
    ) -> Awaitable[str]:
        """``copy_to_table`` (a write): resent only when it had no effect or ``idempotent``."""
        return self._runner.run(
            "COPY", lambda _: self._target.copy_to_table(table_name, **kwargs),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def copy_records_to_table(
        self, table_name: str, *, records: Iterable[Any], idempotent: bool = False, **kwargs: Any
    ) -> Awaitable[str]:
        """``copy_records_to_table`` (a write): resent only when safe or ``idempotent``."""
        rows = list(records)
        target = self._target
        return self._runner.run(
            "COPY", lambda _: target.copy_records_to_table(table_name, records=rows, **kwargs),
            idempotent=idempotent, in_transaction=self._in_transaction(),
        )  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        # Everything else (transaction(), prepare(), add_listener(), ...) is the driver's own.
        return getattr(self._target, name)


class ResilientConnection(_Queries):
    """An ``asyncpg.Connection`` whose queries go through the policy; see :func:`wrap`."""

    def __init__(self, connection: asyncpg.Connection, runner: _Runner) -> None:
        self._target = connection
        self._runner = runner

    @property
    def raw(self) -> asyncpg.Connection:
        """The wrapped connection."""
        return self._target

    def _in_transaction(self) -> bool:
        return bool(self._target.is_in_transaction())


class ResilientPool(_Queries):
    """An ``asyncpg.Pool`` whose queries go through the policy; see :func:`wrap`.

    Each attempt of a pool-level query acquires a connection, so a retry after a lost
    connection uses a fresh one.
    """

    def __init__(self, pool: asyncpg.Pool, runner: _Runner) -> None:
        self._target = pool
        self._runner = runner

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
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
) -> Any:
    """Wrap an ``asyncpg.Connection`` (-> :class:`ResilientConnection`) or ``asyncpg.Pool``
    (-> :class:`ResilientPool`).

    Args:
        record_query: put the statement on spans as ``db.query.text``, with literals replaced
            by ``?``; off by default (queries may carry personal data).
        Others: as for the httpx transports (``classifier`` defaults to
            :func:`classify_postgres`).
    """
    runner = _make_runner(
        target, policy=policy, classifier=classifier, breaker=breaker, dead_letters=dead_letters,
        observers=observers, tracer_provider=tracer_provider, meter_provider=meter_provider,
        record_query=record_query, clock=clock, rng=rng,
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
    or a connection lost before ``COMMIT``.

    ``fn`` must be safe to run again (no side effects outside the database). Pass a
    :class:`ResilientPool` to share its breaker and telemetry, or a raw pool with ``policy``.
    """
    if isinstance(pool, ResilientPool):
        runner, raw = pool._runner, pool.raw
    else:
        if policy is None:
            raise ValueError("run_in_transaction needs policy= when given a raw asyncpg pool")
        runner, raw = wrap(pool, policy=policy)._runner, pool

    async def attempt(step: Attempt) -> T:
        async with raw.acquire() as connection:
            transaction = connection.transaction(
                isolation=isolation, readonly=readonly, deferrable=deferrable
            )
            await transaction.start()
            try:
                result = await fn(connection)
            except Exception as exc:
                await _rollback_quietly(transaction)
                _mark_rolled_back(exc)  # nothing was committed: safe to rerun
                raise
            except BaseException:
                await _rollback_quietly(transaction)
                raise
            try:
                await transaction.commit()
            except pgx.PostgresError as exc:
                if exc.sqlstate in ("40001", "40P01"):
                    _mark_rolled_back(exc)  # the server refused the commit and rolled back
                raise
            return result

    shell = runner.shell
    return await shell.run_async(shell.operation("TRANSACTION"), attempt, replayable=False)


async def _rollback_quietly(transaction: Any) -> None:
    with contextlib.suppress(Exception):
        await transaction.rollback()


def _mark_rolled_back(error: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _ROLLED_BACK_MARK, True)


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
