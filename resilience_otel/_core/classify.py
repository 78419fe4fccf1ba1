"""Error classification: what a failed attempt means for retries and for the breaker.

A classifier turns one attempt's outcome into ``None`` (success) or a :class:`Failure`. The
error class decides retry and breaker accounting; the kind picks per-kind retry overrides and
is the ``reason`` label of retry metrics.
"""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ErrorClass",
    "Failure",
    "FailureKind",
    "classify_exception",
    "failover",
    "is_failover",
]


class ErrorClass(StrEnum):
    """How a failure is treated.

    ``TRANSIENT``: the upstream may succeed if asked again; retried, counts toward the breaker.
    ``PERMANENT``: asking again gives the same answer and the upstream is not at fault (4xx,
    auth, invalid request, constraint violation); never retried, does not count as a breaker
    failure. ``CRITICAL``: something is badly wrong (certificate errors, disk full, out of
    memory, data corruption); never retried, counts toward the breaker and should alert at
    once. ``FAILOVER``: the node is no longer the primary (Redis ``READONLY``, ``MASTERDOWN``,
    ``LOADING``; PostgreSQL 25006, 57P03, 57P01) and refused the statement before running it:
    the connection is retired, the call retried (even a write), it counts toward the breaker
    and is counted as a failover.
    """

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CRITICAL = "critical"
    FAILOVER = "failover"


class FailureKind(StrEnum):
    """What kind of failure an attempt had; per-kind retry overrides key on it."""

    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    FAILOVER = "failover"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failed attempt.

    Attributes:
        error_class: how the failure is treated.
        kind: what kind of failure it was.
        retry_after: seconds the upstream asked us to wait (``Retry-After``), if it did.
        sent: False only when the request certainly had no effect: it never reached the
            upstream (connection refused, pool timeout), the upstream refused it before running
            it (a failover) or rolled it back (a serialization failure). That makes even
            non-idempotent requests safe to resend.
        error_type: a short, low-cardinality name of the failure (an exception class name,
            an HTTP status code, a Redis reply code or a SQLSTATE), used as ``error.type``.
        resendable: False when nothing is left to resend on (a bare database connection
            retired after a failover): the call ends with this failure whatever the policy.
    """

    error_class: ErrorClass
    kind: FailureKind
    retry_after: float | None = None
    sent: bool = True
    error_type: str = "_OTHER"
    resendable: bool = True

    @property
    def counts_as_failure(self) -> bool:
        """Whether the breaker counts it: TRANSIENT, CRITICAL and FAILOVER do, PERMANENT does
        not."""
        return self.error_class is not ErrorClass.PERMANENT


_CRITICAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EROFS})


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_exception(error: BaseException) -> Failure | None:
    """Classify the client-independent critical failures anywhere in ``error``'s chain.

    Certificate verification failures, out-of-memory and disk-full/read-only-filesystem OS
    errors are CRITICAL. Returns ``None`` when nothing client-independent applies, leaving the
    decision to the client's classifier.
    """
    for item in _chain(error):
        if isinstance(item, ssl.SSLCertVerificationError):
            return Failure(ErrorClass.CRITICAL, FailureKind.CONNECTION, error_type="certificate")
        if isinstance(item, MemoryError):
            return Failure(ErrorClass.CRITICAL, FailureKind.OTHER, error_type="MemoryError")
        if isinstance(item, OSError) and item.errno in _CRITICAL_ERRNOS:
            return Failure(ErrorClass.CRITICAL, FailureKind.OTHER, error_type=type(item).__name__)
    return None


def failover(kind_of: str) -> Failure:
    """The failure of a statement a node refused because it is no longer the primary
    (``kind_of``: the reply code or SQLSTATE): nothing ran, so it is safe to resend."""
    return Failure(ErrorClass.FAILOVER, FailureKind.FAILOVER, sent=False, error_type=kind_of)


def is_failover(failure: Failure | None) -> bool:
    """Whether ``failure`` says the node is no longer the primary (its connection retires)."""
    return failure is not None and failure.error_class is ErrorClass.FAILOVER
