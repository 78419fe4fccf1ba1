"""classify_http: what each HTTP status and httpx exception means for retries and the breaker."""

from __future__ import annotations

import email.utils
import errno
import ssl
import time

import httpx
import pytest

from resilience_otel import ErrorClass, Failure, FailureKind
from resilience_otel.httpx import classify_http

T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CRITICAL
K = FailureKind


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "http://a.test/"))


def caused_by(error: Exception, cause: BaseException) -> Exception:
    """``error`` raised ``from cause``, as httpx's transports map low-level errors."""
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("status", "error_class", "kind"),
    [
        (408, T, K.TIMEOUT),
        (429, T, K.RATE_LIMITED),
        (500, T, K.SERVER_ERROR),
        (502, T, K.SERVER_ERROR),
        (503, T, K.SERVER_ERROR),
        (504, T, K.TIMEOUT),
        (507, C, K.SERVER_ERROR),
        (400, P, K.CLIENT_ERROR),
        (401, P, K.CLIENT_ERROR),
        (403, P, K.CLIENT_ERROR),
        (404, P, K.CLIENT_ERROR),
        (409, P, K.CLIENT_ERROR),
        (422, P, K.CLIENT_ERROR),
        (501, P, K.SERVER_ERROR),
        (505, P, K.SERVER_ERROR),
        (506, P, K.SERVER_ERROR),
        (508, P, K.SERVER_ERROR),
        (510, P, K.SERVER_ERROR),
        (511, P, K.CLIENT_ERROR),
    ],
)
def test_status_table(status: int, error_class: ErrorClass, kind: FailureKind) -> None:
    """Each status named in the docstring gets its class and kind; error_type is the code."""
    failure = classify_http(response(status), None)
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.error_type) == (
        error_class,
        kind,
        str(status),
    )
    assert failure.sent is True


@pytest.mark.parametrize("status", [509, 520, 599])
def test_unknown_5xx_is_transient(status: int) -> None:
    """A 5xx the table does not name is a TRANSIENT server error."""
    assert classify_http(response(status), None) == Failure(
        T, K.SERVER_ERROR, error_type=str(status)
    )


@pytest.mark.parametrize("status", [418, 451, 499])
def test_unknown_4xx_is_permanent(status: int) -> None:
    """A 4xx the table does not name is a PERMANENT client error."""
    assert classify_http(response(status), None) == Failure(
        P, K.CLIENT_ERROR, error_type=str(status)
    )


@pytest.mark.parametrize("status", [100, 200, 201, 204, 301, 304, 399])
def test_below_400_is_success(status: int) -> None:
    """1xx, 2xx and 3xx responses are not failures."""
    assert classify_http(response(status), None) is None


@pytest.mark.parametrize(("status", "kind"), [(429, K.RATE_LIMITED), (503, K.SERVER_ERROR)])
def test_retry_after_seconds_read_on_429_and_503(status: int, kind: FailureKind) -> None:
    """Retry-After delta-seconds become ``retry_after`` on 429 and 503."""
    failure = classify_http(response(status, {"Retry-After": "120"}), None)
    assert failure == Failure(T, kind, retry_after=120.0, error_type=str(status))


def test_retry_after_http_date_read() -> None:
    """A Retry-After HTTP date becomes the seconds left until it."""
    when = email.utils.formatdate(time.time() + 60, usegmt=True)
    failure = classify_http(response(429, {"Retry-After": when}), None)
    assert failure is not None
    assert failure.retry_after is not None
    assert 57.0 < failure.retry_after <= 60.0


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("headers", [None, {"Retry-After": "soon"}, {"Retry-After": "-5"}])
def test_missing_or_garbage_retry_after_is_none(
    status: int, headers: dict[str, str] | None
) -> None:
    """Without a usable Retry-After, ``retry_after`` is None (backoff applies)."""
    failure = classify_http(response(status, headers), None)
    assert failure is not None
    assert failure.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 504])
def test_retry_after_ignored_on_other_statuses(status: int) -> None:
    """Retry-After is only read on 429 and 503."""
    failure = classify_http(response(status, {"Retry-After": "5"}), None)
    assert failure is not None
    assert failure.retry_after is None


@pytest.mark.parametrize(
    ("error", "kind", "sent"),
    [
        (httpx.ConnectError("refused"), K.CONNECTION, False),
        (httpx.ConnectTimeout("slow connect"), K.TIMEOUT, False),
        (httpx.PoolTimeout("pool full"), K.TIMEOUT, False),
        (httpx.ProxyError("proxy down"), K.CONNECTION, False),
        (httpx.ReadTimeout("slow read"), K.TIMEOUT, True),
        (httpx.WriteTimeout("slow write"), K.TIMEOUT, True),
        (httpx.ReadError("reset"), K.CONNECTION, True),
        (httpx.WriteError("broken pipe"), K.CONNECTION, True),
        (httpx.RemoteProtocolError("truncated"), K.CONNECTION, True),
        (httpx.CloseError("close failed"), K.CONNECTION, True),
    ],
)
def test_transient_exceptions(error: Exception, kind: FailureKind, sent: bool) -> None:
    """Connection errors and timeouts are TRANSIENT; ``sent`` is False only before sending."""
    failure = classify_http(None, error)
    assert failure == Failure(T, kind, sent=sent, error_type=type(error).__name__)


@pytest.mark.parametrize(
    "error",
    [
        httpx.UnsupportedProtocol("ftp"),
        httpx.LocalProtocolError("bad header"),
        ValueError("bad value"),
        RuntimeError("bug"),
        OSError(errno.ECONNRESET, "reset"),
    ],
)
def test_other_exceptions_are_permanent(error: Exception) -> None:
    """Our own protocol errors and arbitrary exceptions are PERMANENT (never retried)."""
    assert classify_http(None, error) == Failure(P, K.OTHER, error_type=type(error).__name__)


def test_certificate_error_wrapped_in_connect_error_is_critical() -> None:
    """An SSLCertVerificationError under an httpx.ConnectError is CRITICAL."""
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure = classify_http(None, caused_by(httpx.ConnectError("tls failed"), cause))
    assert failure == Failure(C, K.CONNECTION, error_type="certificate")


def test_certificate_error_found_through_context() -> None:
    """An implicitly chained (``__context__``) certificate error is found too."""
    error = httpx.ConnectError("tls failed")
    error.__context__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure = classify_http(None, error)
    assert failure is not None
    assert failure.error_class is C


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EROFS])
def test_resource_os_errors_are_critical(code: int) -> None:
    """Disk full, quota, out of memory and read-only filesystem OS errors are CRITICAL."""
    failure = classify_http(None, OSError(code, "no"))
    assert failure == Failure(C, K.OTHER, error_type="OSError")


def test_disk_full_under_httpx_error_is_critical() -> None:
    """ENOSPC wrapped in an httpx.WriteError is CRITICAL, not a retryable write error."""
    error = caused_by(httpx.WriteError("write failed"), OSError(errno.ENOSPC, "disk full"))
    failure = classify_http(None, error)
    assert failure is not None
    assert failure.error_class is C


def test_memory_error_is_critical() -> None:
    """MemoryError is CRITICAL."""
    assert classify_http(None, MemoryError()) == Failure(C, K.OTHER, error_type="MemoryError")


@pytest.mark.parametrize(("error_class", "counts"), [(T, True), (C, True), (P, False)])
def test_counts_as_failure_by_class(error_class: ErrorClass, counts: bool) -> None:
    """TRANSIENT and CRITICAL count toward the breaker; PERMANENT does not."""
    assert Failure(error_class, K.OTHER).counts_as_failure is counts
