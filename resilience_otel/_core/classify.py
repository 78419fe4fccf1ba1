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

__all__ = ["ErrorClass", "Failure", "FailureKind", "classify_exception"]


class ErrorClass(StrEnum):
    """How a failure is treated.

    ``TRANSIENT``: the upstream may succeed if asked again; retried, counts toward the breaker.
    ``PERMANENT``: asking again gives the same answer and the upstream is not at fault (4xx,
    auth, invalid request, constraint violation); never retried, does not count as a breaker
    failure. ``CRITICAL``: something is badly wrong (certificate errors, disk full, out of
    memory, data corruption, read-only replica); never retried, counts toward the breaker and
    should alert at once.
    """

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CRITICAL = "critical"


class FailureKind(StrEnum):
    """What kind of failure an attempt had; per-kind retry overrides key on it."""

    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failed attempt.

    Attributes:
        error_class: how the failure is treated.
        kind: what kind of failure it was.
        retry_after: seconds the upstream asked us to wait (``Retry-After``), if it did.
        sent: False only when the request certainly had no effect: it never reached the
            upstream (connection refused, pool timeout) or the upstream rolled it back
            (a serialization failure). That makes even non-idempotent requests safe to resend.
        error_type: a short, low-cardinality name of the failure (an exception class name or
            an HTTP status code), used as ``error.type`` in telemetry.
    """

    error_class: ErrorClass
    kind: FailureKind
    retry_after: float | None = None
    sent: bool = True
    error_type: str = "_OTHER"

    @property
    def counts_as_failure(self) -> bool:
        """Whether the breaker counts it: TRANSIENT and CRITICAL do, PERMANENT does not."""
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
