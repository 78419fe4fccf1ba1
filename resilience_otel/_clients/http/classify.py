"""How HTTP outcomes are classified, and which requests may be sent again.

Re-exported by :mod:`resilience_otel.httpx` (``classify_http``, ``HttpClassifier``,
``IDEMPOTENT_METHODS``); this module holds them so the transports' module stays about the
transports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from ..._core.classify import ErrorClass, Failure, FailureKind, classify_exception
from ..._core.retry import parse_retry_after

__all__ = ["IDEMPOTENT_METHODS", "HttpClassifier", "classify_http", "replayable"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods resent after a failure that may have reached the server (RFC 9110 idempotent)."""

HttpClassifier = Callable[[httpx.Response | None, Exception | None], Failure | None]
"""``(response, error) -> Failure | None``: exactly one of response and error is set."""

_T, _P, _C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CRITICAL
_STATUS_FAILURES: dict[int, Failure] = {
    408: Failure(_T, FailureKind.TIMEOUT, error_type="408"),
    500: Failure(_T, FailureKind.SERVER_ERROR, error_type="500"),
    502: Failure(_T, FailureKind.SERVER_ERROR, error_type="502"),
    504: Failure(_T, FailureKind.TIMEOUT, error_type="504"),
    501: Failure(_P, FailureKind.SERVER_ERROR, error_type="501"),
    505: Failure(_P, FailureKind.SERVER_ERROR, error_type="505"),
    506: Failure(_P, FailureKind.SERVER_ERROR, error_type="506"),
    507: Failure(_C, FailureKind.SERVER_ERROR, error_type="507"),
    508: Failure(_P, FailureKind.SERVER_ERROR, error_type="508"),
    510: Failure(_P, FailureKind.SERVER_ERROR, error_type="510"),
    511: Failure(_P, FailureKind.CLIENT_ERROR, error_type="511"),
}

# Exceptions raised before any byte of the request left this process.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)


def _status_failure(response: httpx.Response, wall_clock: Callable[[], float]) -> Failure | None:
    status = response.status_code
    if status < 400:
        return None
    known = _STATUS_FAILURES.get(status)
    if known is not None:
        return known
    error_type = str(status)
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"), wall_clock())
        kind = FailureKind.RATE_LIMITED if status == 429 else FailureKind.SERVER_ERROR
        return Failure(_T, kind, retry_after=retry_after, error_type=error_type)
    if status < 500:
        return Failure(_P, FailureKind.CLIENT_ERROR, error_type=error_type)
    return Failure(_T, FailureKind.SERVER_ERROR, error_type=error_type)


def classify_http(
    response: httpx.Response | None,
    error: Exception | None,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> Failure | None:
    """The default httpx classifier.

    Responses: below 400 succeed; 408, 429, 500, 502, 503, 504 (and unknown 5xx) are
    TRANSIENT, with ``Retry-After`` read on 429 and 503; 507 is CRITICAL; other 4xx, 501,
    505, 506, 508, 510 and 511 are PERMANENT. Exceptions: certificate failures, out of
    memory and disk full are CRITICAL; connect errors and timeouts, read/write errors and
    protocol errors from the server are TRANSIENT; everything else is PERMANENT.
    """
    if error is None:
        assert response is not None
        return _status_failure(response, wall_clock)
    critical = classify_exception(error)
    if critical is not None:
        return critical
    name = type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        return Failure(
            _T, FailureKind.TIMEOUT, sent=not isinstance(error, _NOT_SENT), error_type=name
        )
    if isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.UnsupportedProtocol | httpx.LocalProtocolError
    ):
        return Failure(
            _T, FailureKind.CONNECTION, sent=not isinstance(error, _NOT_SENT), error_type=name
        )
    return Failure(_P, FailureKind.OTHER, error_type=name)


def replayable(request: httpx.Request) -> bool:
    """Whether ``request`` may be sent again after it may have reached the server: an
    idempotent method or an ``Idempotency-Key``, and a body held in memory."""
    if request.method not in IDEMPOTENT_METHODS and "idempotency-key" not in request.headers:
        return False
    return isinstance(request.stream, httpx.ByteStream)
