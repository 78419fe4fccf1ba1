"""Resilient Redis Cluster clients: ``redis.cluster.RedisCluster`` and its asyncio twin.

A logical command (``client.get(k)``, a fan-out such as ``DBSIZE``) runs as one operation
with one CLIENT span, covering our retries. redis-py routes it: it picks the node from the
slot, follows ``MOVED``/``ASK`` redirects and waits out ``TRYAGAIN`` (those never reach our
engine, so they are never counted as failures nor retried by us); its outer retry after
connection errors, timeouts and ``CLUSTERDOWN`` is ours by default (:mod:`.cluster_retry`).

Attempt deadlines: the asyncio client's attempts are cancelled at ``call_timeout``; on the sync
client the sockets of the node being read are cut to the attempt's time left, as on a single
server (:mod:`.cluster_deadline`).

The span names the node that answered: each attempt notes the node redis-py sent the command
to (``_execute_command(target_node, ...)``) and, on redis-py versions that report it
(``_record_command_metric``, redis-py 8), the node that finally replied after redirects; when
exactly one node answered, the span's ``server.address``/``server.port`` are that node's
(a fan-out over several nodes keeps the address the client was configured with). A failed
command's span names the node it failed on, when redis-py tells (``error.connection``).

Pipelines (``client.pipeline()``, with or without ``transaction=True``) run as one operation,
retried as a whole only when every command may be resent; a pipeline that WATCHes makes one
attempt. Pub/sub is not guarded on a cluster client.
"""

from __future__ import annotations

import contextvars
import dataclasses
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from opentelemetry import trace
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from ..._config.policy import Policy
from ..._core.breaker import CircuitBreaker
from ..._core.clock import Clock
from ..._core.engine import Attempt, Classifier
from ..._core.exceptions import CircuitOpenError
from ..._core.validate import check_names
from ..._deadletters.base import DeadLetterQueue
from ..._telemetry import semconv as sc
from ..._telemetry.events import Observer
from ..arguments import check_shell_args
from ..dbshell import DbShell
from .cluster_deadline import bound_cluster
from .cluster_pipeline import guard_cluster_pipeline
from .cluster_retry import cluster_classifier, cluster_retry_layer, scope_cluster_retry
from .deadline import redis_timed_out, run_until
from .guard import Guard, idempotent_block, in_single_try, in_single_try_async

__all__ = ["ClusterClient", "instrument_cluster"]

T = TypeVar("T")
ClusterClient = RedisCluster | AsyncRedisCluster
ClusterT = TypeVar("ClusterT", RedisCluster, AsyncRedisCluster)

_DEFAULT_PORT = 6379

# The nodes that answered in the running attempt (None outside our attempts).
_answered: contextvars.ContextVar[list[tuple[str, int]] | None] = contextvars.ContextVar(
    "resilience_otel_redis_cluster_answered", default=None
)


def instrument_cluster(
    client: ClusterT,
    *,
    policy: Policy,
    idempotent_commands: Iterable[str],
    classifier: Classifier | None,
    breaker: CircuitBreaker | None,
    dead_letters: DeadLetterQueue | None,
    observers: Iterable[Observer],
    tracer_provider: Any,
    meter_provider: Any,
    keep_client_retry: bool | None,
    clock: Clock,
    rng: random.Random | None,
    base_classifier: Classifier,
    reject_as: Callable[[CircuitOpenError], BaseException],
) -> ClusterT:
    """``instrument()`` for a cluster client (arguments as there); ``base_classifier`` is the
    standalone client's default classifier, ``reject_as`` its rejection error."""
    flags: dict[str, object] = {}
    if keep_client_retry is not None:
        flags["keep_client_retry"] = keep_client_retry
    check_shell_args(
        "instrument", policy=policy, classifier=classifier, breaker=breaker, observers=observers,
        clock=clock, rng=rng, flags=flags,
    )  # fmt: skip
    names = check_names("instrument(idempotent_commands=...)", idempotent_commands)
    if getattr(client, "_resilience_guard", None) is not None:
        raise ValueError(f"client {client!r} is already instrumented")
    observers = tuple(observers)
    classify = classifier or cluster_classifier(base_classifier)
    server = _configured_server(client)

    def make_shell(policy: Policy, given: CircuitBreaker | None) -> DbShell:
        return DbShell(
            policy, system="redis", classify=classify, reject_as=reject_as, server=server,
            namespace="0", breaker=given or breaker, dead_letters=dead_letters,
            observers=observers, tracer_provider=tracer_provider,
            meter_provider=meter_provider, clock=clock, rng=rng, timed_out=redis_timed_out,
            owner="instrument",
        )  # fmt: skip

    _attach(client, policy, make_shell, frozenset(n.upper() for n in names), keep_client_retry)
    return client


def _configured_server(client: ClusterClient) -> tuple[str, int | None]:
    """The address the client was configured with (its first startup node)."""
    nodes: list[Any] = list(client.nodes_manager.startup_nodes.values())
    if not nodes:
        return "localhost", None
    return str(nodes[0].host), int(nodes[0].port)


def _attach(
    client: ClusterClient,
    policy: Policy,
    make_shell: Callable[[Policy, CircuitBreaker | None], DbShell],
    idempotent_commands: frozenset[str],
    keep_client_retry: bool | None,
) -> None:
    keep, policy_retries = cluster_retry_layer(client, policy.retry.max_attempts, keep_client_retry)
    if not policy_retries:
        retry = dataclasses.replace(policy.retry, max_attempts=1)
        policy = dataclasses.replace(policy, retry=retry)
    if not keep:
        scope_cluster_retry(client)
    guard = Guard(policy, make_shell, idempotent_commands, single_try=not keep)
    _note_nodes(client)
    if isinstance(client, AsyncRedisCluster):
        _patch_async(client, guard)
    else:
        bound_cluster(client, policy)
        _patch_sync(client, guard)
    setattr(client, "_resilience_guard", guard)  # noqa: B010 (marks the client as guarded)


# -- the node that answered -------------------------------------------------------------------
def _note(node: tuple[str, int]) -> None:
    answered = _answered.get()
    if answered is not None:
        answered.append(node)


def _note_nodes(client: ClusterClient) -> None:
    """Note, per attempt, the node a command was sent to and the node that replied."""
    target: Any = client  # patched on this instance only
    execute = target._execute_command
    record = getattr(target, "_record_command_metric", None)
    if isinstance(client, AsyncRedisCluster):

        async def execute_async(target_node: Any, *args: Any, **kwargs: Any) -> Any:
            mark = _mark(target_node)
            result = await execute(target_node, *args, **kwargs)
            _replied(mark)
            return result

        target._execute_command = execute_async
        if record is not None:

            async def record_async(*args: Any, **kwargs: Any) -> Any:
                _metric_seen(args, kwargs)
                return await record(*args, **kwargs)

            target._record_command_metric = record_async
        return

    def execute_sync(target_node: Any, *args: Any, **kwargs: Any) -> Any:
        mark = _mark(target_node)
        result = execute(target_node, *args, **kwargs)
        _replied(mark)
        return result

    target._execute_command = execute_sync
    if record is not None:

        def record_sync(*args: Any, **kwargs: Any) -> Any:
            _metric_seen(args, kwargs)
            return record(*args, **kwargs)

        target._record_command_metric = record_sync


# A command's reply, by the node redis-py reported it from (redis-py 8), else the target.
_reply_node: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "resilience_otel_redis_cluster_reply", default=None
)


def _address(node: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a redis-py node or connection; ``None`` if it has none."""
    host, port = getattr(node, "host", None), getattr(node, "port", None)
    if host is None or not isinstance(port, int | str) or not str(port).isdigit():
        return None
    return str(host), int(port)


def _mark(target_node: Any) -> contextvars.Token[tuple[str, int] | None]:
    return _reply_node.set(_address(target_node))


def _replied(mark: contextvars.Token[tuple[str, int] | None]) -> None:
    node = _reply_node.get()
    _reply_node.reset(mark)
    if node is not None:
        _note(node)


def _metric_seen(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # _record_command_metric(command_name, duration_seconds, connection, error=None)
    connection = kwargs.get("connection", args[2] if len(args) > 2 else None)
    error = kwargs.get("error", args[3] if len(args) > 3 else None)
    if error is None and _reply_node.get() is not None:
        replied = _address(connection)
        if replied is not None:  # a reply from the node the redirects led to
            _reply_node.set(replied)


def _failed_on(answered: list[tuple[str, int]], error: Exception) -> None:
    """Note the node a failed command was sent to (redis-py 8 hangs it on the error)."""
    node = _address(getattr(error, "connection", None))
    if node is not None:
        answered.append(node)


def _label(outer: trace.Span, answered: list[tuple[str, int]]) -> None:
    """Name the one node that answered on the operation's span (ours, not the caller's)."""
    span = trace.get_current_span()
    if span is outer or not span.is_recording() or len(set(answered)) != 1:
        return
    host, port = answered[-1]
    attributes: dict[str, Any] = {sc.SERVER_ADDRESS: host}
    if port != _DEFAULT_PORT:
        attributes[sc.SERVER_PORT] = port
    span.set_attributes(attributes)


def _noting(call: Callable[..., T], outer: trace.Span) -> Callable[..., T]:
    def run(*args: Any, **options: Any) -> T:
        answered: list[tuple[str, int]] = []
        token = _answered.set(answered)
        try:
            return call(*args, **options)
        except Exception as error:
            _failed_on(answered, error)
            raise
        finally:
            _answered.reset(token)
            _label(outer, answered)

    return run


def _noting_async(
    call: Callable[..., Awaitable[T]], outer: trace.Span
) -> Callable[..., Awaitable[T]]:
    async def run(*args: Any, **options: Any) -> T:
        answered: list[tuple[str, int]] = []
        token = _answered.set(answered)
        try:
            return await call(*args, **options)
        except Exception as error:
            _failed_on(answered, error)
            raise
        finally:
            _answered.reset(token)
            _label(outer, answered)

    return run


# -- commands and pipelines -------------------------------------------------------------------
def _patch_sync(client: RedisCluster, guard: Guard) -> None:
    execute_command: Callable[..., Any] = client.execute_command
    if guard.single_try:
        execute_command = in_single_try(execute_command)
    make_pipeline: Callable[..., Any] = client.pipeline

    def guarded_execute(*args: Any, **options: Any) -> Any:
        op, safe, block = guard.command(args)
        call = _noting(execute_command, trace.get_current_span())
        seconds = None if block is None else block(args)
        if seconds is not None:
            return guard.run_sync(
                op, call, args, options, replayable=safe or idempotent_block.get(), block=seconds
            )

        def attempt(step: Attempt) -> Any:
            return run_until(step, call, args, options)

        return guard.shell.run_sync(op, attempt, replayable=safe or idempotent_block.get())

    def guarded_pipeline(transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = make_pipeline(transaction, shard_hint)
        bound_cluster(pipe, guard.policy)
        guard_cluster_pipeline(pipe, guard, asynchronous=False)
        return pipe

    client.execute_command = guarded_execute  # type: ignore[method-assign]
    client.pipeline = guarded_pipeline  # type: ignore[method-assign]


def _patch_async(client: AsyncRedisCluster, guard: Guard) -> None:
    execute_command: Callable[..., Awaitable[Any]] = client.execute_command
    if guard.single_try:
        execute_command = in_single_try_async(execute_command)
    make_pipeline: Callable[..., Any] = client.pipeline

    async def guarded_execute(*args: Any, **options: Any) -> Any:
        op, safe, block = guard.command(args)
        call = _noting_async(execute_command, trace.get_current_span())
        seconds = None if block is None else block(args)
        if seconds is not None:
            return await guard.run_async(op, call, args, options,
                                         replayable=safe or idempotent_block.get(),
                                         block=seconds)  # fmt: skip

        def attempt(_: Attempt) -> Awaitable[Any]:
            return call(*args, **options)

        return await guard.shell.run_async(op, attempt, replayable=safe or idempotent_block.get())

    def guarded_pipeline(transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = make_pipeline(transaction, shard_hint)
        guard_cluster_pipeline(pipe, guard, asynchronous=True)
        return pipe

    client.execute_command = guarded_execute  # type: ignore[method-assign]
    client.pipeline = guarded_pipeline  # type: ignore[method-assign]
