"""The implementation behind :mod:`resilience_otel.redis` (documented there)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from ..._config.policy import Policy
from ..._core.breaker import CircuitBreaker
from ..._core.classify import ErrorClass, Failure, FailureKind, classify_exception, failover
from ..._core.clock import SYSTEM_CLOCK, Clock
from ..._core.engine import Classifier
from ..._core.exceptions import CircuitOpenError, mix_with
from ..._core.validate import check_names, check_type
from ..._deadletters.base import DeadLetterQueue
from ..._shared.breaker_store import RedisBreakerStore, SharedCircuitBreaker
from ..._telemetry.events import Observer
from ..arguments import check_shell_args
from ..dbshell import DbShell
from .cluster import instrument_cluster
from .deadline import (
    bound_commands,
    bound_handshakes,
    cap_connect_timeout,
    redis_timed_out,
    run_until,
)
from .guard import (
    READ_ONLY_COMMANDS,
    Guard,
    idempotent,
    idempotent_block,
    in_single_try,
    retiring_async,
)
from .pipeline import guard_pipeline_async, guard_pipeline_sync, honour_pipeline_marks
from .pubsub import guard_pubsub_async, guard_pubsub_sync
from .retry import retry_layer, scope_pool_retry

__all__ = [
    "READ_ONLY_COMMANDS",
    "RedisBreakerStore",
    "SharedCircuitBreaker",
    "breaker_of",
    "classify_redis",
    "idempotent",
    "instrument",
]

ClientT = TypeVar("ClientT", redis.Redis, redis.asyncio.Redis, RedisCluster, AsyncRedisCluster)

_CRITICAL_REPLIES = ("MISCONF", "OOM")
_FAILOVER_REPLIES = ("READONLY", "MASTERDOWN", "LOADING")
# What redis-py's Sentinel-managed connection raises for a READONLY reply from the node it
# still takes for the master.
_SENTINEL_DEMOTED = "The previous master is now a slave"


def _not_sent(error: BaseException) -> bool:
    # redis-py words connect failures "Error N connecting to host:port" / "Timeout connecting".
    if isinstance(error.__cause__ or error.__context__, ConnectionRefusedError):
        return True
    return "connecting to" in str(error) or "Timeout connecting" in str(error)


def _failover_reply(error: Exception) -> str | None:
    """The reply code of a node that is no longer the primary, if ``error`` is one."""
    if isinstance(error, rex.ReadOnlyError):
        return "READONLY"
    if isinstance(error, rex.MasterDownError):
        return "MASTERDOWN"
    if isinstance(error, rex.BusyLoadingError):
        return "LOADING"
    if isinstance(error, rex.ResponseError):
        code = str(error).split(" ", 1)[0]
        return code if code in _FAILOVER_REPLIES else None
    if isinstance(error, rex.ConnectionError) and str(error) == _SENTINEL_DEMOTED:
        return "READONLY"
    return None


def classify_redis(value: object, error: Exception | None) -> Failure | None:
    """The default redis classifier.

    FAILOVER (the node is no longer the primary; the command was refused, so even a write is
    resent, on a fresh connection): ``READONLY``, ``MASTERDOWN`` and ``LOADING``
    (``BusyLoadingError``) replies, and the Sentinel client's "The previous master is now a
    slave". TRANSIENT: connection errors, timeouts, ``TryAgainError``, ``ClusterDownError``.
    PERMANENT: ``ResponseError`` (WRONGTYPE, syntax, NOSCRIPT, ...), authentication and
    permission errors, ``DataError``, ``WatchError``. CRITICAL: OOM and MISCONF replies, and
    the package-wide critical errors (disk full, ...).
    """
    if error is None:
        return None
    name = type(error).__name__
    critical = classify_exception(error)
    if critical is not None:
        return critical
    reply = _failover_reply(error)
    if reply is not None:
        return failover(reply)
    if isinstance(error, rex.OutOfMemoryError) or (
        isinstance(error, rex.ResponseError) and str(error).startswith(_CRITICAL_REPLIES)
    ):
        return Failure(ErrorClass.CRITICAL, FailureKind.SERVER_ERROR, error_type=name)
    permanent_auth = rex.AuthenticationError | rex.AuthorizationError | rex.NoPermissionError
    if isinstance(error, permanent_auth):
        return Failure(ErrorClass.PERMANENT, FailureKind.CLIENT_ERROR, error_type=name)
    if isinstance(error, rex.TryAgainError | rex.ClusterDownError):
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


def _server_of(client: redis.Redis | redis.asyncio.Redis) -> tuple[str, int | None, str | None]:
    kwargs = client.connection_pool.connection_kwargs
    host = str(kwargs.get("host") or kwargs.get("path") or "localhost")
    port = kwargs.get("port")
    return host, int(port) if port is not None else None, str(kwargs.get("db", 0))


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
    keep_client_retry: bool | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
) -> ClientT:
    """Make ``client`` (``redis.Redis``, ``redis.asyncio.Redis`` or a cluster client,
    ``redis.cluster.RedisCluster`` or ``redis.asyncio.cluster.RedisCluster``) resilient, in
    place (for a cluster client see ``resilience_otel._clients.redis.cluster``).

    Args:
        client: the client to guard; it is returned for chaining.
        policy: the service's policy.
        idempotent_commands: write commands that are safe to resend (``{"SET", "DEL"}``).
        classifier: overrides :func:`classify_redis` (signature ``(None, error)``).
        breaker: share a breaker (e.g. with a ``RedisBreakerStore``-backed one).
        dead_letters: where failed commands are recorded (command name only, no arguments).
        observers: receive call events (telemetry, health).
        tracer_provider: the OTel tracer provider (default: the global one).
        meter_provider: the OTel meter provider (default: the global one).
        clock: time source; ``resilience_otel.testing.FakeClock`` makes retries instant.
        rng: random source for jitter.
        keep_client_retry: ``True`` keeps redis-py's own ``Retry`` (the policy then makes one
            attempt per command); ``False`` retries in the policy, redis-py's making one try in
            each attempt; ``None`` (default) keeps redis-py's when it was set explicitly or the
            policy does not retry. Clients sharing the connection pool are never changed.
    """
    if isinstance(client, RedisCluster | AsyncRedisCluster):  # the cluster shell: .cluster
        return instrument_cluster(
            client, policy=policy, idempotent_commands=idempotent_commands,
            classifier=classifier, breaker=breaker, dead_letters=dead_letters,
            observers=observers, tracer_provider=tracer_provider, meter_provider=meter_provider,
            keep_client_retry=keep_client_retry, clock=clock, rng=rng,
            base_classifier=classify_redis, reject_as=_reject_as_redis_error,
        )  # fmt: skip
    check_type(
        "instrument(client=...)", client, (redis.Redis, redis.asyncio.Redis),
        "a redis.Redis or redis.asyncio.Redis",
    )  # fmt: skip
    check_shell_args(
        "instrument", policy=policy, classifier=classifier, breaker=breaker, observers=observers,
        clock=clock, rng=rng, flags=_flags(keep_client_retry),
    )  # fmt: skip
    idempotent = check_names("instrument(idempotent_commands=...)", idempotent_commands)
    if getattr(client, "_resilience_guard", None) is not None:
        raise ValueError(f"client {client!r} is already instrumented")
    host, port, db = _server_of(client)
    observers = tuple(observers)  # every shell of the client reports to the same observers
    keep, policy_retries = retry_layer(client, policy.retry.max_attempts, keep_client_retry)
    if not policy_retries:
        policy = _one_attempt(policy)

    def make_shell(policy: Policy, given: CircuitBreaker | None) -> DbShell:
        return DbShell(
            policy, system="redis", classify=honour_pipeline_marks(classifier or classify_redis),
            reject_as=_reject_as_redis_error, server=(host, port), namespace=db,
            breaker=given or breaker, dead_letters=dead_letters, observers=observers,
            tracer_provider=tracer_provider, meter_provider=meter_provider, clock=clock,
            rng=rng, timed_out=redis_timed_out, owner="instrument",  # one timeout type
        )  # fmt: skip

    guard = Guard(policy, make_shell, frozenset(c.upper() for c in idempotent), single_try=not keep)
    _attach(client, guard, policy)
    return client


def _attach(client: redis.Redis | redis.asyncio.Redis, guard: Guard, policy: Policy) -> None:
    scope_pool_retry(client.connection_pool)
    if isinstance(client, redis.asyncio.Redis):
        _patch_async(client, guard)
    else:
        cap_connect_timeout(client, policy)
        bound_handshakes(client)
        _patch_sync(client, guard)
    setattr(client, "_resilience_guard", guard)  # noqa: B010 (marks the client as guarded)


def _flags(keep_client_retry: bool | None) -> dict[str, object]:
    return {} if keep_client_retry is None else {"keep_client_retry": keep_client_retry}


def _one_attempt(policy: Policy) -> Policy:
    return dataclasses.replace(policy, retry=dataclasses.replace(policy.retry, max_attempts=1))


def breaker_of(
    client: redis.Redis | redis.asyncio.Redis | RedisCluster | AsyncRedisCluster,
) -> CircuitBreaker:
    """The breaker guarding an instrumented client (a cluster client too)."""
    guard = getattr(client, "_resilience_guard", None)
    if not isinstance(guard, Guard):
        raise ValueError(f"client {client!r} is not instrumented")
    return guard.shell.breaker


def _patch_sync(client: redis.Redis, guard: Guard) -> None:
    execute_command: Callable[..., Any] = client.execute_command
    if guard.single_try:
        execute_command = in_single_try(execute_command)
    make_pipeline = client.pipeline
    make_pubsub = client.pubsub
    shell = guard.shell
    commands = guard.commands

    def guarded_execute(*args: Any, **options: Any) -> Any:
        try:
            op, safe, block = commands[args[0]]
        except (KeyError, IndexError, TypeError):
            op, safe, block = guard.command(args)
        if block is not None and (seconds := block(args)) is not None:
            return guard.run_sync(
                op, execute_command, args, options, replayable=safe or idempotent_block.get(),
                block=seconds,
            )  # fmt: skip
        return shell.run_sync(
            op,
            lambda step: run_until(step, execute_command, args, options),
            replayable=safe or idempotent_block.get(),
        )

    def guarded_pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = make_pipeline(transaction, shard_hint)
        guard_pipeline_sync(pipe, guard)
        return pipe

    def guarded_pubsub(**kwargs: Any) -> Any:
        pubsub = make_pubsub(**kwargs)  # type: ignore[no-untyped-call]
        guard_pubsub_sync(pubsub, guard)
        return pubsub

    client.execute_command = guarded_execute  # type: ignore[method-assign]
    client.pipeline = guarded_pipeline  # type: ignore[method-assign]
    client.pubsub = guarded_pubsub  # type: ignore[method-assign]
    bound_commands(client, lambda conn, error: guard.retire_sync(client, error, conn))


def _patch_async(client: redis.asyncio.Redis, guard: Guard) -> None:
    execute_command: Callable[..., Awaitable[Any]] = retiring_async(
        client.execute_command, guard, client, single=guard.single_try
    )
    make_pipeline = client.pipeline
    make_pubsub = client.pubsub
    shell = guard.shell
    commands = guard.commands

    async def guarded_execute(*args: Any, **options: Any) -> Any:
        try:
            op, safe, block = commands[args[0]]
        except (KeyError, IndexError, TypeError):
            op, safe, block = guard.command(args)
        if block is not None and (seconds := block(args)) is not None:
            return await guard.run_async(
                op, execute_command, args, options, replayable=safe or idempotent_block.get(),
                block=seconds,
            )  # fmt: skip
        return await shell.run_async(
            op,
            lambda _: execute_command(*args, **options),
            replayable=safe or idempotent_block.get(),
        )

    def guarded_pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = make_pipeline(transaction, shard_hint)
        guard_pipeline_async(pipe, guard)
        return pipe

    def guarded_pubsub(**kwargs: Any) -> Any:
        pubsub = make_pubsub(**kwargs)
        guard_pubsub_async(pubsub, guard)
        return pubsub

    client.execute_command = guarded_execute  # type: ignore[method-assign]
    client.pipeline = guarded_pipeline  # type: ignore[method-assign]
    client.pubsub = guarded_pubsub  # type: ignore[method-assign]
