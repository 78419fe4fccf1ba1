"""Attempt deadlines for sync redis-py clients, through the connection's socket timeout.

redis-py's sync client reads replies with blocking ``recv`` calls bounded only by the
connection's socket timeout, and its API takes no timeout per command. Its one seam where the
borrowed connection is known is ``Redis._send_command_parse_response`` (and, for pipelines,
``_execute_pipeline`` / ``_execute_transaction``): :func:`bound_commands` wraps those on the
instance so that, while an attempt runs (:func:`run_until`), the connection's socket timeout
is cut to the time left before the attempt's deadline and restored afterwards. A silent or
slow server is then cut at the deadline; a reply dripping in pieces is bounded per ``recv``
and an attempt that still returns late fails as a timeout in the engine.

The pool connects a connection before handing it out, outside that seam: the TCP connect is
bounded through the pool's ``socket_connect_timeout`` (:func:`cap_connect_timeout`), and the
handshake a connection makes when it is (re)opened during an attempt by the same socket
timeout cut (:func:`bound_handshakes`). Outside an attempt nothing changes, so a pool shared
with pub/sub or uninstrumented clients keeps its own timeouts.
"""

from __future__ import annotations

import contextvars
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis import exceptions as rex
from redis.connection import AbstractConnection

if TYPE_CHECKING:
    import redis

    from ..._config.policy import Policy
    from ..._core.steps import Attempt

__all__ = [
    "RedisCallTimeout",
    "blocking_timed_out",
    "bound_commands",
    "bound_handshakes",
    "cap_connect_timeout",
    "redis_timed_out",
    "run_until",
]

T = TypeVar("T")

TimedOut = Callable[["Attempt"], Exception]

# (deadline, attempt, the error of the attempt cut at its deadline) while an attempt runs
_attempt: contextvars.ContextVar[tuple[float, Attempt, TimedOut] | None] = contextvars.ContextVar(
    "resilience_otel_redis_attempt", default=None
)


class RedisCallTimeout(rex.TimeoutError, TimeoutError):
    """An attempt ran out of time: a ``redis.exceptions.TimeoutError`` and a builtin
    :class:`TimeoutError`, so handlers written for either catch it, sync or async."""


def redis_timed_out(step: Attempt) -> Exception:
    """The error of a Redis attempt that overran its timeout (sync or async)."""
    return RedisCallTimeout(f"attempt {step.number} exceeded call_timeout {step.timeout:.3f}s")


def blocking_timed_out(name: str, block: float, timeout: float) -> TimedOut:
    """The error of a blocking command's attempt that overran its block time plus the
    policy's attempt timeout."""

    def timed_out(step: Attempt) -> Exception:
        return RedisCallTimeout(
            f"{name} attempt {step.number} exceeded its block time {block:.3f}s plus the"
            f" attempt timeout {timeout:.3f}s"
        )

    return timed_out


def _handshake_timed_out(step: Attempt) -> Exception:
    # Worded like redis-py's connect errors: the command itself was never sent.
    return RedisCallTimeout(
        f"attempt {step.number} exceeded call_timeout {step.timeout:.3f}s while connecting to"
        " the server"
    )


def run_until(
    step: Attempt,
    call: Callable[..., T],
    args: tuple[Any, ...],
    options: dict[str, Any],
    limit: float | None = None,
    timed_out: TimedOut = redis_timed_out,
) -> T:
    """``call(*args, **options)`` with the connection sockets it uses bounded by ``step``'s
    timeout, or by ``limit`` seconds when given (a blocking command's longer bound); an
    attempt cut at that deadline fails with ``timed_out(step)``."""
    timeout = step.timeout if limit is None else limit
    if timeout is None:
        return call(*args, **options)
    token = _attempt.set((time.monotonic() + timeout, step, timed_out))
    try:
        return call(*args, **options)
    finally:
        _attempt.reset(token)


def _on_connection(
    call: Callable[..., T],
    conn: Any,
    *args: Any,
    _timed_out: TimedOut | None = None,
    **kwargs: Any,
) -> T:
    """Run ``call(conn, ...)`` with ``conn``'s socket timeout cut to the attempt's time left."""
    current = _attempt.get()
    if current is None:
        return call(conn, *args, **kwargs)
    deadline, step, attempt_timed_out = current
    _timed_out = _timed_out or attempt_timed_out
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(step)
    if not isinstance(conn, AbstractConnection):  # e.g. a client-side caching proxy
        return call(conn, *args, **kwargs)
    configured: object = conn.socket_timeout
    if configured is not None:
        if not isinstance(configured, int | float):  # a stand-in, not a socket connection
            return call(conn, *args, **kwargs)
        if configured <= left:
            return call(conn, *args, **kwargs)  # the connection's own timeout is tighter
    sock = _connected_socket(conn)
    if sock is None:
        return call(conn, *args, **kwargs)
    sock.settimeout(left)
    try:
        return call(conn, *args, **kwargs)
    except rex.TimeoutError as exc:
        if time.monotonic() >= deadline:
            raise _timed_out(step) from exc
        raise
    finally:
        if _socket(conn) is sock:  # a timed-out connection was closed: nothing to restore
            sock.settimeout(configured)


def _socket(conn: AbstractConnection) -> socket.socket | None:
    sock: socket.socket | None = getattr(conn, "_sock", None)
    return sock


def _connected_socket(conn: AbstractConnection) -> socket.socket | None:
    """``conn``'s socket, connecting first (bounded by the capped connect timeout) if needed."""
    sock = _socket(conn)
    if sock is None:
        conn.connect()  # type: ignore[no-untyped-call]
        sock = _socket(conn)
    return sock


Retire = Callable[[Any, Exception], None]
"""Called with the connection and the error of a command that failed at the seam."""


def bound_commands(target: redis.Redis, retire: Retire | None = None) -> None:
    """Bound the socket operations of ``target`` (a client or a pipeline) by the attempt's
    deadline, on this instance only; ``retire(conn, error)`` runs when one fails, while
    the connection is still in hand (before it goes back to the pool)."""
    names = ("_send_command_parse_response", "_execute_pipeline", "_execute_transaction")
    for name in names:
        original = getattr(target, name, None)
        if original is not None:
            setattr(target, name, _bound(original, retire))


def _bound(original: Callable[..., T], retire: Retire | None) -> Callable[..., T]:
    if retire is None:

        def bounded(conn: Any, *args: Any, **kwargs: Any) -> T:
            return _on_connection(original, conn, *args, **kwargs)

        return bounded

    def bounded_retiring(conn: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return _on_connection(original, conn, *args, **kwargs)
        except Exception as error:
            retire(conn, error)
            raise

    return bounded_retiring


def bound_handshakes(client: redis.Redis) -> None:
    """Bound the handshake (HELLO, AUTH, SELECT, CLIENT SETINFO) of connections that
    ``client``'s pool (re)connects during an attempt by the attempt's deadline.

    The pool connects a connection before handing it out, outside the command seam, and
    the handshake's replies would otherwise wait up to the connection's socket timeout.
    """
    pool = client.connection_pool
    make = getattr(pool, "make_connection", None)
    if make is None or getattr(make, "_resilience_bounded", False):
        return

    def make_connection() -> Any:
        conn = make()
        _bound_handshake(conn)
        return conn

    make_connection._resilience_bounded = True  # type: ignore[attr-defined]
    pool.make_connection = make_connection  # type: ignore[method-assign]
    known = (
        *getattr(pool, "_available_connections", ()),
        *getattr(pool, "_in_use_connections", ()),
    )
    for conn in known:
        _bound_handshake(conn)


def _bound_handshake(conn: Any) -> None:
    if not isinstance(conn, AbstractConnection):
        return
    original = conn.on_connect_check_health
    if getattr(original, "_resilience_bounded", False):
        return  # another client sharing the pool bounded it already

    def handshake(*args: Any, **kwargs: Any) -> Any:
        def run(_conn: Any) -> Any:
            return original(*args, **kwargs)

        return _on_connection(run, conn, _timed_out=_handshake_timed_out)

    handshake._resilience_bounded = True  # type: ignore[attr-defined]
    conn.on_connect_check_health = handshake  # type: ignore[method-assign]


def cap_connect_timeout(client: redis.Redis, policy: Policy) -> None:
    """New connections of ``client``'s pool give up connecting within the policy's attempt
    timeout (``call_timeout``, or ``total_timeout`` when shorter)."""
    limits = [t for t in (policy.breaker.call_timeout, policy.retry.total_timeout) if t]
    if not limits:
        return
    limit = min(limits)
    kwargs: object = client.connection_pool.connection_kwargs
    if not isinstance(kwargs, dict):  # a stand-in pool: no connections of its own to make
        return
    current = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
    if current is None or (isinstance(current, int | float) and current > limit):
        kwargs["socket_connect_timeout"] = limit
