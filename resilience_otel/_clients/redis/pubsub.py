"""Pub/sub of an instrumented Redis client, sync and async.

What is guarded:

- Commands a ``PubSub`` sends (``SUBSCRIBE``, ``PSUBSCRIBE``, ``SSUBSCRIBE``, their
  ``UN...`` forms, ``PING``) run as operations: breaker, timeout, span, metrics. The first
  one also takes the connection from the pool and connects it. They may be resent: a
  subscription made twice is one subscription.
- Every later (re)connect of the pub/sub connection (after a read failed in ``get_message``
  or ``listen``, or the server closed it) runs as one ``RECONNECT`` operation through the
  breaker, with its span and metrics, including the resubscription redis-py makes on
  connect. An open breaker refuses it with ``CircuitOpenError`` (a redis ``ConnectionError``).
  redis-py's own retry around the read decides whether to reconnect again, as without us.

What is not: reading messages (``get_message``, ``listen``) is waiting, not a call; it gets
no span, no timeout and no breaker accounting of its own.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any

from .guard import Guard, in_single_try, in_single_try_async, retiring_async, retiring_sync

__all__ = ["guard_pubsub_async", "guard_pubsub_sync"]

# Inside a guarded pub/sub operation: the commands and connects it makes are part of it.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "resilience_otel_redis_pubsub", default=False
)
_OWNER = "_resilience_pubsub_owner"  # on a connection: (weakref to its PubSub, Guard)


def _owner_guard(conn: Any) -> Guard | None:
    """The guard of the PubSub that holds ``conn`` now, if any (connections go back to the
    pool and may be lent to a plain client, or to another PubSub, afterwards)."""
    owner = getattr(conn, _OWNER, None)
    if owner is None:
        return None
    pubsub = owner[0]()
    if pubsub is None or pubsub.connection is not conn:
        return None
    guard: Guard = owner[1]
    return guard


def guard_pubsub_sync(pubsub: Any, guard: Guard) -> None:
    """Guard ``pubsub`` (made by ``guard``'s sync client), in place."""
    execute = retiring_sync(pubsub.execute_command, guard, pubsub)
    if guard.single_try:
        execute = in_single_try(execute)

    def guarded_execute(*args: Any) -> Any:
        if _inside.get():
            return execute(*args)
        token = _inside.set(True)
        try:
            return guard.run_sync(guard.command(args)[0], execute, args, {}, replayable=True)
        finally:
            _inside.reset(token)
            _adopt_sync(pubsub, guard)

    pubsub.execute_command = guarded_execute


def _adopt_sync(pubsub: Any, guard: Guard) -> None:
    conn = pubsub.connection
    if conn is None:
        return
    connect = getattr(conn, "connect_check_health", None)
    if connect is None:  # not a redis-py connection: it reconnects its own way
        return
    first = getattr(conn, _OWNER, None) is None
    setattr(conn, _OWNER, (weakref.ref(pubsub), guard))
    if not first:
        return

    def connect_check_health(*args: Any, **kwargs: Any) -> Any:
        connected = getattr(conn, "_sock", None) is not None
        owner = None if connected or _inside.get() else _owner_guard(conn)
        if owner is None:
            return connect(*args, **kwargs)
        call = in_single_try(connect) if owner.single_try else connect
        token = _inside.set(True)
        try:
            op = owner.shell.operation("RECONNECT")
            return owner.run_sync(op, call, args, kwargs, replayable=True, once=True)
        finally:
            _inside.reset(token)

    conn.connect_check_health = connect_check_health


def guard_pubsub_async(pubsub: Any, guard: Guard) -> None:
    """Guard ``pubsub`` (made by ``guard``'s ``redis.asyncio`` client), in place."""
    execute = retiring_async(pubsub.execute_command, guard, pubsub, single=guard.single_try)

    async def guarded_execute(*args: Any) -> Any:
        if _inside.get():
            return await execute(*args)
        token = _inside.set(True)
        try:
            op = guard.command(args)[0]
            return await guard.run_async(op, execute, args, {}, replayable=True)
        finally:
            _inside.reset(token)
            _adopt_async(pubsub, guard)

    pubsub.execute_command = guarded_execute


def _adopt_async(pubsub: Any, guard: Guard) -> None:
    conn = pubsub.connection
    if conn is None:
        return
    connect = getattr(conn, "connect_check_health", None)
    if connect is None:  # not a redis-py connection: it reconnects its own way
        return
    first = getattr(conn, _OWNER, None) is None
    setattr(conn, _OWNER, (weakref.ref(pubsub), guard))
    if not first:
        return

    async def connect_check_health(*args: Any, **kwargs: Any) -> Any:
        connected = getattr(conn, "is_connected", True)
        owner = None if connected or _inside.get() else _owner_guard(conn)
        if owner is None:
            return await connect(*args, **kwargs)
        call = in_single_try_async(connect) if owner.single_try else connect
        token = _inside.set(True)
        try:
            op = owner.shell.operation("RECONNECT")
            return await owner.run_async(op, call, args, kwargs, replayable=True, once=True)
        finally:
            _inside.reset(token)

    conn.connect_check_health = connect_check_health
