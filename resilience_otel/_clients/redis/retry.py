"""Which layer retries a Redis command: ours or redis-py's, decided per client.

redis-py keeps its ``Retry`` on each pooled connection (a copy of the pool's
``connection_kwargs["retry"]``); ``Redis.set_retry`` changes the pool and every connection in
it, so it would change every other client sharing that pool. Instead, a connection's retry is
wrapped in a :class:`ScopedRetry` that behaves exactly like the one it wraps, except while an
attempt of a client whose redis-py retries are off runs (:data:`single_try`, a context
variable): then it makes one try, as ``Retry(NoBackoff(), 0)`` would (the failure handler
still runs, so the connection is closed or reconnected as redis-py would). Other clients on
the pool, and pub/sub or monitor connections used outside our attempts, keep their retry.
One more difference, on every client: an attempt we cut at its deadline
(:class:`RedisCallTimeout`) is never resent by redis-py's retry; only our attempts raise it.

:func:`retry_layer` decides, for one client, which layer retries (see ``instrument``).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.retry import Retry

from .deadline import RedisCallTimeout

__all__ = ["AsyncScopedRetry", "ScopedRetry", "retry_layer", "scope_pool_retry", "single_try"]

T = TypeVar("T")
_log = logging.getLogger("resilience_otel")

single_try: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "resilience_otel_redis_single_try", default=False
)
"""True while an attempt of a client whose redis-py retries are off runs."""


def _inner_attribute(name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self.inner, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self.inner, name, value)

    return property(get, set_)


def _not_cut(error: Exception) -> bool:
    # An attempt cut at its deadline is over: a resend by redis-py would only fail again.
    return not isinstance(error, RedisCallTimeout)


def _and_not_cut(is_retryable: Callable[[Exception], bool]) -> Callable[[Exception], bool]:
    return lambda error: _not_cut(error) and is_retryable(error)


class ScopedRetry(Retry):
    """A connection's own ``Retry``, made a single try inside our attempts of clients whose
    redis-py retries are off. Everything else (settings, equality) is the wrapped retry's."""

    _backoff = _inner_attribute("_backoff")
    _retries = _inner_attribute("_retries")
    _supported_errors = _inner_attribute("_supported_errors")

    def __init__(self, inner: Retry) -> None:  # no super().__init__: the state is inner's
        self.inner = inner

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """``inner.call_with_retry``, or one try of ``do`` inside a single-try attempt."""
        if not single_try.get():
            retryable = _not_cut if is_retryable is None else _and_not_cut(is_retryable)
            return self.inner.call_with_retry(do, fail, retryable, with_failure_count)
        try:
            return do()
        except self.inner._supported_errors as error:
            if is_retryable is None or is_retryable(error):
                fail(error, 1) if with_failure_count else fail(error)
            raise


class AsyncScopedRetry(AsyncRetry):
    """:class:`ScopedRetry` for ``redis.asyncio`` connections."""

    _backoff = _inner_attribute("_backoff")
    _retries = _inner_attribute("_retries")
    _supported_errors = _inner_attribute("_supported_errors")

    def __init__(self, inner: AsyncRetry) -> None:  # no super().__init__: the state is inner's
        self.inner = inner

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """``inner.call_with_retry``, or one try of ``do`` inside a single-try attempt."""
        if not single_try.get():
            retryable = _not_cut if is_retryable is None else _and_not_cut(is_retryable)
            return await self.inner.call_with_retry(do, fail, retryable, with_failure_count)
        try:
            return await do()
        except self.inner._supported_errors as error:
            if is_retryable is None or is_retryable(error):
                await (fail(error, 1) if with_failure_count else fail(error))
            raise


def _scope(conn: Any) -> None:
    retry = getattr(conn, "retry", None)
    if isinstance(retry, ScopedRetry | AsyncScopedRetry):
        return
    if isinstance(retry, AsyncRetry):
        conn.retry = AsyncScopedRetry(retry)
    elif isinstance(retry, Retry):
        conn.retry = ScopedRetry(retry)


def scope_pool_retry(pool: Any) -> None:
    """Wrap the retry of every connection ``pool`` holds or makes (and of those it is given
    by ``set_retry``) in a scoped retry; once per pool, however many clients share it."""
    if getattr(pool, "_resilience_scoped_retry", False):
        return
    make = getattr(pool, "make_connection", None)
    set_retry = getattr(pool, "set_retry", None)
    if make is None or set_retry is None:  # not a redis-py pool: its connections are its own
        return

    def make_connection() -> Any:
        conn = make()
        _scope(conn)
        return conn

    def scoped_set_retry(retry: Any) -> None:
        set_retry(retry)
        for conn in _connections(pool):
            _scope(conn)

    pool.make_connection = make_connection
    pool.set_retry = scoped_set_retry
    pool._resilience_scoped_retry = True
    for conn in _connections(pool):
        _scope(conn)


def _connections(pool: Any) -> tuple[Any, ...]:
    return (
        *getattr(pool, "_available_connections", ()),
        *getattr(pool, "_in_use_connections", ()),
    )


def _default_retry(client: redis.Redis | redis.asyncio.Redis) -> Any:
    # The default of the client class's own ``retry`` parameter (it moved between releases).
    parameter = inspect.signature(type(client).__init__).parameters.get("retry")
    return None if parameter is None else parameter.default


def _client_retry(client: redis.Redis | redis.asyncio.Redis) -> tuple[int, bool]:
    """How many retries redis-py makes for ``client`` and whether they were set explicitly
    (``retry=``, ``retry_on_error=``, ``retry_on_timeout=``, or a pool built with them)."""
    kwargs = client.connection_pool.connection_kwargs
    retry = kwargs.get("retry")
    extra_errors = bool(kwargs.get("retry_on_error")) or bool(kwargs.get("retry_on_timeout"))
    if retry is None:
        return (1 if extra_errors else 0), extra_errors  # redis-py's Retry(NoBackoff(), 1)
    return retry.get_retries(), extra_errors or retry != _default_retry(client)


def retry_layer(
    client: redis.Redis | redis.asyncio.Redis, max_attempts: int, keep_client_retry: bool | None
) -> tuple[bool, bool]:
    """``(keep redis-py's retry, the policy may retry)`` for ``client``.

    ``keep_client_retry=None`` keeps redis-py's retry when it was set explicitly or when the
    policy does not retry (``max_attempts=1``). When redis-py's is not kept, ours retries and
    redis-py's makes one try inside our attempts. When it is kept and retries, the policy makes
    one attempt per command for this client, so retries never multiply; that choice is logged
    when the policy was set to retry too.
    """
    retries, explicit = _client_retry(client)
    keep = (explicit or max_attempts == 1) if keep_client_retry is None else keep_client_retry
    both = keep and retries != 0 and max_attempts > 1
    if both:
        _log.warning(
            "redis client %r retries on its own (%s retries) and its policy retries too "
            "(max_attempts=%d): redis-py's retry is kept and the policy makes one attempt "
            "per command for this client; pass keep_client_retry=False to retry in the "
            "policy instead",
            client, "unlimited" if retries < 0 else retries, max_attempts,
        )  # fmt: skip
    return keep, not both
