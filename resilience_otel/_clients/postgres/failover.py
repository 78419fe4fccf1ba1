"""Retiring PostgreSQL connections after a failover.

When the shell's classifier calls an error FAILOVER (the server is no longer the primary:
25006, 57P03, 57P01), the connection that got it is terminated and its pool, if any, told
``expire_connections()``: every other connection is replaced at its next acquire, so the
next attempt connects afresh (a multi-host DSN with ``target_session_attrs=read-write`` or a
DNS name then finds the new primary). The pool itself is never closed.

A pool's statement acquires a connection per attempt, so its retry runs on a new one. A
connection the caller holds (a bare one, or one borrowed with ``acquire()``) cannot be
replaced in its hands: the error it got is marked so the call ends there, not resent on a dead
connection; the caller reconnects (or acquires again).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from ..._core.classify import Failure, is_failover
from ..._core.engine import Classifier

__all__ = [
    "ConnectionCalls",
    "PoolCalls",
    "failed_over_by",
    "honour_retired_mark",
    "pool_of",
    "retire",
]

# Set on the error of a held connection retired after a failover: nothing is left to resend on.
_RETIRED_MARK = "_resilience_retired"

FailedOver = Callable[[Exception], bool]


def failed_over_by(classify: Classifier) -> FailedOver:
    """Whether ``classify`` calls an error a FAILOVER."""
    return lambda error: is_failover(classify(None, error))


async def retire(connection: Any, pool: Any) -> None:
    """Terminate ``connection`` and expire the other connections of ``pool`` (if given)."""
    connection.terminate()
    if pool is not None:
        await pool.expire_connections()


def pool_of(connection: Any) -> Any:
    """The pool a connection was borrowed from (through its pool proxy), else ``None``."""
    holder = getattr(connection, "_holder", None)
    return getattr(holder, "_pool", None)


class PoolCalls:
    """Runs a query method of a pool on a connection acquired for this attempt, retiring it
    after a failover (as ``Pool.execute`` and friends do, plus the retirement)."""

    __slots__ = ("_failed_over", "_pool")

    def __init__(self, pool: Any, failed_over: FailedOver) -> None:
        self._pool = pool
        self._failed_over = failed_over

    async def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``await connection.<method>(*args, **kwargs)`` on a connection of the pool."""
        async with self._pool.acquire() as connection:
            try:
                return await getattr(connection, method)(*args, **kwargs)
            except Exception as error:
                if self._failed_over(error):
                    await retire(connection, self._pool)
                raise


class ConnectionCalls:
    """Runs a query method of one connection; after a failover the connection is terminated,
    its pool (if borrowed from one) expired, and the error marked as not to be resent."""

    __slots__ = ("_connection", "_failed_over", "_pool")

    def __init__(self, connection: Any, failed_over: FailedOver) -> None:
        self._connection = connection
        self._pool = pool_of(connection)
        self._failed_over = failed_over

    async def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``await connection.<method>(*args, **kwargs)``."""
        try:
            return await getattr(self._connection, method)(*args, **kwargs)
        except Exception as error:
            if self._failed_over(error):
                await retire(self._connection, self._pool)
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(error, _RETIRED_MARK, True)
            raise


def honour_retired_mark(classify: Classifier) -> Classifier:
    """``classify``, with the failure of a retired held connection made final (not resent:
    the connection is gone)."""

    def classify_retired(value: Any, error: Exception | None) -> Failure | None:
        failure = classify(value, error)
        if failure is None or not getattr(error, _RETIRED_MARK, False):
            return failure
        return dataclasses.replace(failure, resendable=False)

    return classify_retired
