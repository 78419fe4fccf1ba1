"""Which layer retries what on Redis Cluster, and how cluster errors are classified.

redis-py's cluster client has two loops of its own. The inner one (``_execute_command``)
follows ``MOVED`` and ``ASK`` redirects and waits out ``TRYAGAIN`` (up to 16 hops): those are
the cluster working as designed, so they stay redis-py's job and never reach our engine. The
outer one re-runs a whole command after a connection error, a timeout, ``CLUSTERDOWN`` or an
uncovered slot, ``retry.get_retries()`` times (10 by default in redis-py 8), with the topology
refreshed in between; it resends writes that may have been applied. By default that outer loop
is ours instead: :class:`ClusterRetry` (and :class:`AsyncClusterRetry`) replaces the client's
``retry`` and makes no retries while one of our attempts runs (:data:`single_try`), so a
write is resent only when it is safe (the policy's rules); redirects inside a cluster
transaction keep being followed. Outside our attempts it behaves as the retry it replaced.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as rex
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ..._core.classify import ErrorClass, Failure, FailureKind
from ..._core.engine import Classifier
from .retry import single_try

__all__ = [
    "AsyncClusterRetry",
    "ClusterRetry",
    "cluster_classifier",
    "cluster_retry_layer",
    "scope_cluster_retry",
]

T = TypeVar("T")
_log = logging.getLogger("resilience_otel")

REDIRECTS: tuple[type[Exception], ...] = (rex.AskError, rex.TryAgainError)  # MovedError: AskError
"""Replies that send a command elsewhere or ask to wait: followed by redis-py, never retried by
us."""

_HOPS = 16  # redis-py's RedisClusterRequestTTL: the redirects one command may follow


def cluster_classifier(base: Classifier) -> Classifier:
    """The classifier of a cluster client: ``base`` (the standalone one), plus what a cluster
    refuses before running a command (``CLUSTERDOWN``, ``TRYAGAIN``, an uncovered slot, a
    redirect loop that ran out of hops): transient (or failover, if ``base`` says so) and
    safe to resend, even a write; and a cluster none of whose nodes can be reached (redis-py's
    ``RedisClusterException`` "cannot be connected"): a transient connection failure."""

    def classify(value: object, error: Exception | None) -> Failure | None:
        if isinstance(error, rex.RedisClusterException) and _UNREACHABLE in str(error):
            return _unreachable(error)
        failure = base(value, error)
        if failure is None or error is None or not _refused(error):
            return failure
        error_class = failure.error_class
        if error_class is ErrorClass.PERMANENT or error_class is ErrorClass.CRITICAL:
            error_class = ErrorClass.TRANSIENT
        kind = FailureKind.SERVER_ERROR if failure.kind is FailureKind.OTHER else failure.kind
        return Failure(error_class, kind, sent=False, error_type=failure.error_type)

    return classify


_UNREACHABLE = "cannot be connected"  # redis-py: no node answered the topology refresh


def _unreachable(error: Exception) -> Failure:
    """No node of the cluster could be reached (its topology refresh failed): a connection
    failure, not sent unless the command's own connection broke after sending it."""
    cause = error.__cause__ or error.__context__
    sent = cause is not None and not _connect_failure(cause)
    return Failure(
        ErrorClass.TRANSIENT, FailureKind.CONNECTION, sent=sent, error_type=type(error).__name__
    )


def _connect_failure(error: BaseException) -> bool:
    # redis-py words connect failures "Error N connecting to host:port" / "Timeout connecting".
    text = str(error)
    refused = isinstance(error.__cause__ or error.__context__, ConnectionRefusedError)
    return refused or "connecting to" in text or "Timeout connecting" in text


def _refused(error: Exception) -> bool:
    refused = rex.ClusterDownError | rex.SlotNotCoveredError | rex.AskError | rex.TryAgainError
    # A bare ClusterError is redis-py's "TTL exhausted": the redirects ran out of hops.
    return isinstance(error, refused) or type(error) is rex.ClusterError


def _fields(inner: Any) -> tuple[Any, int, tuple[type[Exception], ...]]:
    return inner._backoff, inner.get_retries(), tuple(inner._supported_errors)


class ClusterRetry(Retry):
    """A cluster client's ``retry`` that makes no retries inside our attempts (redirects in a
    cluster transaction are still followed); a copy of the retry it replaces otherwise."""

    def __init__(self, inner: Retry) -> None:
        backoff, retries, errors = _fields(inner)
        super().__init__(backoff, retries, errors)

    def get_retries(self) -> int:
        """0 inside our attempts; the replaced retry's count otherwise."""
        return 0 if single_try.get() else self._retries

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Redis-py's loop, or inside our attempts: redirects only, then one try."""
        if not single_try.get():
            return super().call_with_retry(do, fail, is_retryable, with_failure_count)
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                if not isinstance(error, REDIRECTS) or failures >= _HOPS:
                    raise


class AsyncClusterRetry(AsyncRetry):
    """:class:`ClusterRetry` for ``redis.asyncio.cluster.RedisCluster``."""

    def __init__(self, inner: AsyncRetry) -> None:
        backoff, retries, errors = _fields(inner)
        super().__init__(backoff, retries, errors)  # type: ignore[arg-type]

    def get_retries(self) -> int:
        """0 inside our attempts; the replaced retry's count otherwise."""
        return 0 if single_try.get() else self._retries

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """Redis-py's loop, or inside our attempts: redirects only, then one try."""
        if not single_try.get():
            return await super().call_with_retry(do, fail, is_retryable, with_failure_count)
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                if not isinstance(error, REDIRECTS) or failures >= _HOPS:
                    raise


def scope_cluster_retry(client: Any) -> None:
    """Give ``client`` (a cluster client, sync or async) a scoped retry, now and whenever
    ``set_retry`` gives it another."""
    scoped = AsyncClusterRetry if isinstance(client.retry, AsyncRetry) else ClusterRetry
    client.retry = scoped(client.retry)
    set_retry = client.set_retry

    def scoped_set_retry(retry: Any) -> None:
        set_retry(scoped(retry))

    client.set_retry = scoped_set_retry


def _explicit(client: Any) -> bool:
    # The client's default: the ``cluster_error_retry_attempts`` default, jittered backoff.
    parameter = inspect.signature(type(client).__init__).parameters.get(
        "cluster_error_retry_attempts"
    )
    default = None if parameter is None else parameter.default
    retry = client.retry
    return retry.get_retries() != default or not isinstance(
        retry._backoff, ExponentialWithJitterBackoff
    )


def cluster_retry_layer(
    client: Any, max_attempts: int, keep_client_retry: bool | None
) -> tuple[bool, bool]:
    """``(keep redis-py's cluster retry, the policy may retry)`` for a cluster client, decided
    as for a standalone client: ``None`` keeps redis-py's when it was configured explicitly
    (``retry=`` or ``cluster_error_retry_attempts=``) or when the policy does not retry."""
    if not isinstance(getattr(client, "retry", None), Retry | AsyncRetry):
        raise TypeError(
            f"instrument(client=...) needs a cluster client whose retry is a redis-py Retry "
            f"(redis-py 6 or later), got {client!r}"
        )
    retries = client.retry.get_retries()
    keep = (
        (_explicit(client) or max_attempts == 1) if keep_client_retry is None else keep_client_retry
    )
    both = keep and retries != 0 and max_attempts > 1
    if both:
        _log.warning(
            "redis cluster client %r retries on its own (%s retries) and its policy retries "
            "too (max_attempts=%d): redis-py's retry is kept and the policy makes one attempt "
            "per command for this client; pass keep_client_retry=False to retry in the policy "
            "instead",
            client, "unlimited" if retries < 0 else retries, max_attempts,
        )  # fmt: skip
    return keep, not both
