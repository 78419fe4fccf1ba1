"""Resilient redis-py clients (sync ``redis.Redis`` and ``redis.asyncio.Redis``).

One call makes an existing client resilient::

    client = resilience_otel.redis.instrument(redis.Redis(), policy=Policy(service="cache"))

Every command (``client.get(...)``, ``client.execute_command(...)``) and every pipeline or
transaction (``client.pipeline().execute()``) then runs through the breaker, retries,
timeouts, dead letters and telemetry, with one CLIENT span per command or pipeline.

Which layer retries: **ours**. ``instrument`` turns redis-py's own ``Retry`` off (0 retries) so
retries do not multiply; pass ``keep_client_retry=True`` to keep redis-py's and set
``RetryConfig(max_attempts=1)`` yourself.

Retry safety: read-only commands are retried; a write is retried only when the failure
happened before it was sent (connection refused) or when it is marked idempotent, either by
name (``idempotent_commands={"SET", "DEL"}``) or for a block of code (``with idempotent():``).
A pipeline is retried as a whole only when all its commands qualify.

Timeouts: ``call_timeout`` (or what is left of ``total_timeout``) ends every attempt, blocking
commands included. ``redis.asyncio`` attempts are cancelled; on a sync client the connection's
socket timeout is cut to the time left while a command, a pipeline or a reconnect handshake
runs (and restored after), and ``instrument`` caps the pool's ``socket_connect_timeout`` to the
policy's timeout. Either way the attempt fails with a ``redis.exceptions.TimeoutError`` that
is also a builtin ``TimeoutError``.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis import exceptions as rex
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import _semconv as sc
from ._argcheck import check_shell_args
from ._breaker import CircuitBreaker
from ._classify import ErrorClass, Failure, FailureKind, classify_exception
from ._clock import SYSTEM_CLOCK, Clock
from ._config import Policy
from ._dbshell import DbShell, Operation
from ._engine import Attempt, Classifier
from ._events import Observer
from ._exceptions import CircuitOpenError, mix_with
from ._redis_deadline import (
    bound_commands,
    bound_handshakes,
    cap_connect_timeout,
    redis_timed_out,
    run_until,
)
from ._shared import RedisBreakerStore, SharedCircuitBreaker
from ._validate import check_names, check_type
from .dlq import DeadLetterQueue

__all__ = [
    "READ_ONLY_COMMANDS",
    "RedisBreakerStore",
    "SharedCircuitBreaker",
    "breaker_of",
    "classify_redis",
    "idempotent",
    "instrument",
]

ClientT = TypeVar("ClientT", redis.Redis, redis.asyncio.Redis)

READ_ONLY_COMMANDS: frozenset[str] = frozenset(
    """
    BITCOUNT BITPOS DBSIZE DUMP ECHO EXISTS EXPIRETIME GEODIST GEOHASH GEOPOS GEORADIUS_RO
    GEORADIUSBYMEMBER_RO GEOSEARCH GET GETBIT GETRANGE HEXISTS HGET HGETALL HKEYS HLEN HMGET
    HRANDFIELD HSCAN HSTRLEN HVALS INFO KEYS LCS LINDEX LLEN LPOS LRANGE MGET OBJECT PEXPIRETIME
    PFCOUNT PING PTTL RANDOMKEY SCAN SCARD SDIFF SINTER SINTERCARD SISMEMBER SMEMBERS SMISMEMBER
    SRANDMEMBER SSCAN STRLEN SUBSTR SUNION TIME TOUCH TTL TYPE XINFO XLEN XPENDING XRANGE
    XREVRANGE ZCARD ZCOUNT ZDIFF ZINTER ZINTERCARD ZLEXCOUNT ZMSCORE ZRANDMEMBER ZRANGE
    ZRANGEBYLEX ZRANGEBYSCORE ZRANK ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN
    ZSCORE ZUNION EVALSHA_RO EVAL_RO FCALL_RO
    """.split()  # noqa: SIM905 (a word list reads better than 90 quoted strings)
)
"""Commands that never change data; they are always safe to resend."""

_idempotent_block: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "resilience_otel_redis_idempotent", default=False
)


@contextlib.contextmanager
def idempotent() -> Iterator[None]:
    """Mark every command issued inside the block as safe to resend (e.g. ``SET k v``)."""
    token = _idempotent_block.set(True)
    try:
        yield
    finally:
        _idempotent_block.reset(token)


_CRITICAL_REPLIES = ("MISCONF", "OOM", "READONLY")


def _not_sent(error: BaseException) -> bool:
    # redis-py words connect failures "Error N connecting to host:port" / "Timeout connecting".
    if isinstance(error.__cause__ or error.__context__, ConnectionRefusedError):
        return True
    return "connecting to" in str(error) or "Timeout connecting" in str(error)


def classify_redis(value: object, error: Exception | None) -> Failure | None:
    """The default redis classifier.

    TRANSIENT: connection errors, timeouts, ``BusyLoadingError`` (LOADING), ``TryAgainError``,
    ``ClusterDownError``. PERMANENT: ``ResponseError`` (WRONGTYPE, syntax, NOSCRIPT, ...),
    authentication and permission errors, ``DataError``, ``WatchError``. CRITICAL: OOM,
    READONLY, MISCONF replies, and the package-wide critical errors (disk full, ...).
    """
    if error is None:
        return None
    name = type(error).__name__
    critical = classify_exception(error)
    if critical is not None:
        return critical
    if isinstance(error, rex.OutOfMemoryError | rex.ReadOnlyError) or (
        isinstance(error, rex.ResponseError) and str(error).startswith(_CRITICAL_REPLIES)
    ):
        return Failure(ErrorClass.CRITICAL, FailureKind.SERVER_ERROR, error_type=name)
    permanent_auth = rex.AuthenticationError | rex.AuthorizationError | rex.NoPermissionError
    if isinstance(error, permanent_auth):
        return Failure(ErrorClass.PERMANENT, FailureKind.CLIENT_ERROR, error_type=name)
    if isinstance(error, rex.BusyLoadingError | rex.TryAgainError | rex.ClusterDownError):
        return Failure(ErrorClass.TRANSIENT, FailureKind.SERVER_ERROR, error_type=name)
    if isinstance(error, rex.TimeoutError | TimeoutError):
        return Failure(
            ErrorClass.TRANSIENT, FailureKind.TIMEOUT, sent=not _not_sent(error), error_type=name
        )
    if isinstance(error, rex.ConnectionError | ConnectionError):
        return Failure(
            ErrorClass.TRANSIENT, FailureKind.CONNECTION, sent=not _not_sent(error), error_type=name
        )
    return Failure(ErrorClass.PERMANENT, FailureKind.OTHER, error_type=name)


def _reject_as_redis_error(error: CircuitOpenError) -> BaseException:
    return mix_with(error, rex.ConnectionError)


def _command_name(args: tuple[Any, ...]) -> str:
    if not args:
        return "UNKNOWN"
    first = args[0]
    name = first.decode("ascii", "replace") if isinstance(first, bytes) else str(first)
    # Bounded label values: command names only, never arguments.
    return name.split(" ", 1)[0].upper()[:32]


def _server_of(client: redis.Redis | redis.asyncio.Redis) -> tuple[str, int | None, str | None]:
    kwargs = client.connection_pool.connection_kwargs
    host = str(kwargs.get("host") or kwargs.get("path") or "localhost")
    port = kwargs.get("port")
    return host, int(port) if port is not None else None, str(kwargs.get("db", 0))


class _Guard:
    """The shell bound to one client: names commands and decides replayability."""

    _MAX_NAMES = 1024

    def __init__(self, shell: DbShell, idempotent_commands: frozenset[str]) -> None:
        self.shell = shell
        self.safe = READ_ONLY_COMMANDS | idempotent_commands
        # args[0] -> (operation, safe to resend by name); bounded
        self.commands: dict[str | bytes, tuple[Operation, bool]] = {}

    def command(self, args: tuple[Any, ...]) -> tuple[Operation, bool]:
        """The command's operation and whether its name alone makes it safe to resend,
        looked up once per spelling of the command."""
        first = args[0] if args else None
        if not isinstance(first, str | bytes):
            return self._describe(args)
        known = self.commands.get(first)
        if known is None:
            known = self._describe(args)
            if len(self.commands) < self._MAX_NAMES:
                self.commands[first] = known
        return known

    def _describe(self, args: tuple[Any, ...]) -> tuple[Operation, bool]:
        name = _command_name(args)
        return self.shell.operation(name), name in self.safe

    def all_replayable(self, names: Iterable[str]) -> bool:
        return _idempotent_block.get() or all(name in self.safe for name in names)


def instrument(
    client: ClientT,
    *,
    policy: Policy,
    idempotent_commands: Iterable[str] = (),
    classifier: Classifier | None = None,
    breaker: CircuitBreaker | None = None,
    dead_letters: DeadLetterQueue | None = None,
    observers: Iterable[Observer] = (),
    tracer_provider: Any = None,
    meter_provider: Any = None,
    keep_client_retry: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
) -> ClientT:
    """Make ``client`` (``redis.Redis`` or ``redis.asyncio.Redis``) resilient, in place.

    Args:
        client: the client to guard; it is returned for chaining.
        policy: the service's policy.
        idempotent_commands: write commands that are safe to resend (``{"SET", "DEL"}``).
        classifier: overrides :func:`classify_redis` (signature ``(None, error)``).
        breaker: share a breaker (e.g. with a ``RedisBreakerStore``-backed one).
        dead_letters: where failed commands are recorded (command name only, no arguments).
        observers, tracer_provider, meter_provider, clock, rng: as for the httpx transports.
        keep_client_retry: keep redis-py's own ``Retry`` (then disable ours).
    """
    check_type(
        "instrument(client=...)", client, (redis.Redis, redis.asyncio.Redis),
        "a redis.Redis or redis.asyncio.Redis",
    )  # fmt: skip
    check_shell_args(
        "instrument", policy=policy, classifier=classifier, breaker=breaker, observers=observers,
        clock=clock, rng=rng, flags={"keep_client_retry": keep_client_retry},
    )  # fmt: skip
    idempotent = check_names("instrument(idempotent_commands=...)", idempotent_commands)
    if getattr(client, "_resilience_guard", None) is not None:
        raise ValueError(f"client {client!r} is already instrumented")
    host, port, db = _server_of(client)
    shell = DbShell(
        policy, system="redis", classify=classifier or classify_redis,
        reject_as=_reject_as_redis_error, server=(host, port), namespace=db, breaker=breaker,
        dead_letters=dead_letters, observers=tuple(observers), tracer_provider=tracer_provider,
        meter_provider=meter_provider, clock=clock, rng=rng,
        timed_out=redis_timed_out, owner="instrument",  # one timeout type, sync and async
    )  # fmt: skip
    guard = _Guard(shell, frozenset(c.upper() for c in idempotent))
    if isinstance(client, redis.asyncio.Redis):
        if not keep_client_retry:
            client.set_retry(AsyncRetry(NoBackoff(), 0))
        _patch_async(client, guard)
    else:
        if not keep_client_retry:
            client.set_retry(Retry(NoBackoff(), 0))
        cap_connect_timeout(client, policy)
        bound_handshakes(client)
        _patch_sync(client, guard)
    setattr(client, "_resilience_guard", guard)  # noqa: B010 (marks the client as guarded)
    return client


def breaker_of(client: redis.Redis | redis.asyncio.Redis) -> CircuitBreaker:
    """The breaker guarding an instrumented client."""
    guard = getattr(client, "_resilience_guard", None)
    if not isinstance(guard, _Guard):
        raise ValueError(f"client {client!r} is not instrumented")
    return guard.shell.breaker


def _patch_sync(client: redis.Redis, guard: _Guard) -> None:
    execute_command = client.execute_command
    make_pipeline = client.pipeline
    shell = guard.shell
    commands = guard.commands

    def guarded_execute(*args: Any, **options: Any) -> Any:
        try:
            op, safe = commands[args[0]]
        except (KeyError, IndexError, TypeError):
            op, safe = guard.command(args)
        return shell.run_sync(
            op,
            lambda step: run_until(step, execute_command, args, options),
            replayable=safe or _idempotent_block.get(),
        )

    def guarded_pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = make_pipeline(transaction, shard_hint)
        execute = pipe.execute
        bound_commands(pipe)

        def guarded_pipeline_execute(raise_on_error: bool = True) -> Any:
            stack = list(pipe.command_stack)  # execute() empties it; each attempt needs it
            names = [guard.command(args)[0].name for args, _ in stack]

            def attempt(step: Attempt) -> Any:
                pipe.command_stack = list(stack)
                return run_until(step, execute, (raise_on_error,), {})

            operation = "MULTI" if getattr(pipe, "transaction", False) is True else "PIPELINE"
            extra = {sc.DB_OPERATION_BATCH_SIZE: len(stack)}
            return shell.run_sync(
                shell.operation(operation),
                attempt,
                replayable=guard.all_replayable(names),
                extra=extra,
            )

        pipe.execute = guarded_pipeline_execute  # type: ignore[method-assign]
        return pipe

    client.execute_command = guarded_execute  # type: ignore[method-assign]
    client.pipeline = guarded_pipeline  # type: ignore[method-assign]
    bound_commands(client)


def _patch_async(client: redis.asyncio.Redis, guard: _Guard) -> None:
    execute_command = client.execute_command
    make_pipeline = client.pipeline
    shell = guard.shell
    commands = guard.commands

    async def guarded_execute(*args: Any, **options: Any) -> Any:
        try:
            op, safe = commands[args[0]]
        except (KeyError, IndexError, TypeError):
            op, safe = guard.command(args)
        return await shell.run_async(
            op,
            lambda _: execute_command(*args, **options),  # type: ignore[no-untyped-call]
            replayable=safe or _idempotent_block.get(),
        )

    def guarded_pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = make_pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def guarded_pipeline_execute(raise_on_error: bool = True) -> Any:
            stack = list(pipe.command_stack)  # execute() empties it; each attempt needs it
            names = [guard.command(args)[0].name for args, _ in stack]

            async def attempt(step: Attempt) -> Any:
                pipe.command_stack = list(stack)
                return await execute(raise_on_error)

            operation = "MULTI" if pipe.is_transaction else "PIPELINE"
            extra = {sc.DB_OPERATION_BATCH_SIZE: len(stack)}
            return await shell.run_async(
                shell.operation(operation),
                attempt,
                replayable=guard.all_replayable(names),
                extra=extra,
            )

        pipe.execute = guarded_pipeline_execute  # type: ignore[method-assign]
        return pipe

    client.execute_command = guarded_execute  # type: ignore[method-assign]
    client.pipeline = guarded_pipeline  # type: ignore[method-assign]
