"""classify_redis: what each redis-py exception means for retries and the breaker (no sockets)."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from redis import exceptions as rex

from resilience_otel import ErrorClass, Failure, FailureKind
from resilience_otel._clients.redis.guard import command_name as _command_name
from resilience_otel.redis import READ_ONLY_COMMANDS, classify_redis

T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CRITICAL
K = FailureKind

_REFUSED = "Error 111 connecting to 127.0.0.1:1. Connection refused."
_READ_RESET = "Error while reading from 127.0.0.1:6379 : (104, 'Connection reset by peer')"


def caused_by(error: Exception, cause: BaseException) -> Exception:
    """``error`` raised ``from cause``, as redis-py wraps socket errors."""
    error.__cause__ = cause
    return error


# -- the exception table -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "error_class", "kind"),
    [
        (rex.ConnectionError(_READ_RESET), T, K.CONNECTION),
        (rex.TimeoutError("Timeout reading from socket"), T, K.TIMEOUT),
        (rex.TryAgainError("TRYAGAIN Multiple keys request during rehashing"), T, K.SERVER_ERROR),
        (rex.ClusterDownError("CLUSTERDOWN The cluster is down"), T, K.SERVER_ERROR),
        (rex.ResponseError("WRONGTYPE Operation against a key"), P, K.OTHER),
        (rex.ResponseError("ERR syntax error"), P, K.OTHER),
        (rex.NoScriptError("NOSCRIPT No matching script"), P, K.OTHER),
        (rex.AuthenticationError("invalid username-password pair"), P, K.CLIENT_ERROR),
        (rex.AuthorizationError("NOAUTH Authentication required."), P, K.CLIENT_ERROR),
        (rex.NoPermissionError("NOPERM this user has no permissions"), P, K.CLIENT_ERROR),
        (rex.DataError("Invalid input of type: 'dict'"), P, K.OTHER),
        (rex.WatchError("Watched variable changed."), P, K.OTHER),
        (rex.OutOfMemoryError("OOM command not allowed"), C, K.SERVER_ERROR),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_exception_table(error: Exception, error_class: ErrorClass, kind: FailureKind) -> None:
    """Each redis-py exception named in the docstring maps to its class and kind (the
    failover replies: tests/unit/test_failover_classify.py)."""
    expected = Failure(error_class, kind, error_type=type(error).__name__)
    assert classify_redis(None, error) == expected


def test_success_is_not_a_failure() -> None:
    """No error means success, whatever the value."""
    assert classify_redis(b"value", None) is None


@pytest.mark.parametrize(
    "reply",
    [
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist",
        "OOM command not allowed when used memory > 'maxmemory'.",
    ],
)
def test_critical_replies_in_a_plain_response_error(reply: str) -> None:
    """MISCONF and OOM replies are CRITICAL even as a plain ResponseError."""
    failure = classify_redis(None, rex.ResponseError(reply))
    assert failure == Failure(C, K.SERVER_ERROR, error_type="ResponseError")


def test_critical_word_later_in_a_reply_is_not_critical() -> None:
    """Only the reply's leading error code counts: "ERR ... OOM ..." stays PERMANENT."""
    failure = classify_redis(None, rex.ResponseError("ERR unknown command 'OOM'"))
    assert failure is not None
    assert failure.error_class is P


def test_builtin_timeout_error_is_transient_timeout() -> None:
    """The builtin TimeoutError (asyncio.timeout's) is TRANSIENT TIMEOUT."""
    failure = classify_redis(None, TimeoutError())
    assert failure == Failure(T, K.TIMEOUT, error_type="TimeoutError")


def test_builtin_connection_reset_is_transient_connection() -> None:
    """A bare OS ConnectionResetError is TRANSIENT CONNECTION and may have been sent."""
    failure = classify_redis(None, ConnectionResetError(errno.ECONNRESET, "reset"))
    assert failure == Failure(T, K.CONNECTION, error_type="ConnectionResetError")


def test_disk_full_in_the_chain_is_critical() -> None:
    """A package-wide critical cause (ENOSPC) wins over the redis class."""
    error = caused_by(rex.ConnectionError("write failed"), OSError(errno.ENOSPC, "disk full"))
    failure = classify_redis(None, error)
    assert failure is not None
    assert failure.error_class is C


def test_unknown_exception_is_permanent_other() -> None:
    """An exception the classifier does not know is PERMANENT OTHER, not retried."""
    failure = classify_redis(None, KeyError("x"))
    assert failure == Failure(P, K.OTHER, error_type="KeyError")


# -- was the command sent? ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (rex.ConnectionError(_REFUSED), False),
        (rex.ConnectionError(_READ_RESET), True),
        (rex.ConnectionError("Error 32 while writing to socket. Broken pipe."), True),
        (caused_by(rex.ConnectionError("boom"), ConnectionRefusedError(111, "refused")), False),
        (rex.TimeoutError("Timeout connecting to server"), False),
        (rex.TimeoutError("Timeout reading from 127.0.0.1:6379"), True),
        (TimeoutError(), True),
    ],
    ids=["refused", "read-reset", "write-broken-pipe", "cause-refused", "connect-timeout",
         "read-timeout", "builtin-timeout"],
)  # fmt: skip
def test_sent_flag(error: Exception, sent: bool) -> None:
    """Only failures that certainly happened before sending are marked not sent."""
    failure = classify_redis(None, error)
    assert failure is not None
    assert failure.sent is sent


def test_connection_error_with_refused_context_is_not_sent() -> None:
    """An implicit ``__context__`` of ConnectionRefusedError also means not sent."""
    error = rex.ConnectionError("boom")
    error.__context__ = ConnectionRefusedError(111, "refused")
    failure = classify_redis(None, error)
    assert failure is not None
    assert failure.sent is False


# -- read-only commands and command names ------------------------------------------------------
@pytest.mark.parametrize("command", ["GET", "MGET", "HGETALL", "LRANGE", "EXISTS", "TTL", "PING"])
def test_read_only_commands_include_reads(command: str) -> None:
    """Reads are in READ_ONLY_COMMANDS."""
    assert command in READ_ONLY_COMMANDS


@pytest.mark.parametrize("command", ["SET", "INCR", "DEL", "LPUSH", "HSET", "EXPIRE", "EVAL"])
def test_read_only_commands_exclude_writes(command: str) -> None:
    """Writes (and scripts that may write) are not in READ_ONLY_COMMANDS."""
    assert command not in READ_ONLY_COMMANDS


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("GET", "k"), "GET"),
        ((b"GET", b"k"), "GET"),
        (("get", "k"), "GET"),
        ((b"hgetall", "k"), "HGETALL"),
        (("CLIENT SETNAME", "x"), "CLIENT"),
        (("X" * 100,), "X" * 32),
        ((), "UNKNOWN"),
    ],
    ids=["str", "bytes", "lower", "bytes-lower", "multiword", "long", "empty"],
)
def test_command_name(args: tuple[Any, ...], name: str) -> None:
    """The command name is upper-cased, the first word only, bounded, never an argument."""
    assert _command_name(args) == name
