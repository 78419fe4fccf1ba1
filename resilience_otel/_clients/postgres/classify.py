"""PostgreSQL failures classified by SQLSTATE (the default classifier of the asyncpg shell)."""

from __future__ import annotations

from asyncpg import exceptions as pgx

from ..._core.classify import ErrorClass, Failure, FailureKind, classify_exception, failover

__all__ = ["ROLLED_BACK_MARK", "classify_postgres"]

_TRANSIENT_STATES = frozenset({"40001", "40P01", "57P02", "53300", "55P03", "57014"})
_NO_EFFECT_STATES = frozenset({"40001", "40P01", "53300"})  # rolled back or refused
# Read-only transaction (the node is a standby now), cannot connect now (in recovery, hot
# standby starting), admin shutdown (a switchover stops the old primary): nothing committed.
_FAILOVER_STATES = frozenset({"25006", "57P03", "57P01"})
_CRITICAL_STATES = frozenset({"53100", "53200", "XX001", "XX002", "58030"})
_PERMANENT_PREFIXES = ("22", "23", "42", "28", "3D", "0A", "2B", "2D", "25", "44")
ROLLED_BACK_MARK = "_resilience_rolled_back"


def _kind_of(state: str) -> FailureKind:
    if state in ("40001", "40P01", "55P03"):
        return FailureKind.OTHER
    if state == "57014":
        return FailureKind.TIMEOUT
    if state.startswith("08") or state in ("57P02", "53300"):
        return FailureKind.CONNECTION
    return FailureKind.SERVER_ERROR


def classify_postgres(value: object, error: Exception | None) -> Failure | None:
    """The default asyncpg classifier, by SQLSTATE.

    FAILOVER (the server is no longer the primary; nothing committed, so even a write is
    resent, on a fresh connection): read-only transaction (25006), cannot connect now (57P03:
    in recovery, a hot standby), admin shutdown (57P01, as on a switchover). TRANSIENT:
    connection exceptions (08xxx), crash shutdown (57P02), too many connections (53300),
    serialization failure (40001), deadlock (40P01), lock not available (55P03), statement
    timeout (57014), socket errors, timeouts, a closed connection and asyncpg's refusal to
    send on a connection whose backend died while idle (``InternalClientError``: "cannot
    switch to state"; not sent). PERMANENT: data (22xxx), integrity (23xxx),
    syntax/undefined (42xxx), authentication (28xxx) and the rest. CRITICAL: disk full
    (53100), out of memory (53200), data corruption (XX001, XX002), I/O error (58030).
    """
    if error is None:
        return None
    name = type(error).__name__
    critical = classify_exception(error)
    if critical is not None:
        return critical
    rolled_back = bool(getattr(error, ROLLED_BACK_MARK, False))
    state = getattr(error, "sqlstate", None)
    if isinstance(error, pgx.PostgresError) and isinstance(state, str):
        if state in _CRITICAL_STATES:
            return Failure(ErrorClass.CRITICAL, FailureKind.SERVER_ERROR, error_type=state)
        if state in _FAILOVER_STATES:
            return failover(state)
        if state in _TRANSIENT_STATES or state.startswith("08"):
            no_effect = rolled_back or state in _NO_EFFECT_STATES
            return Failure(
                ErrorClass.TRANSIENT, _kind_of(state), sent=not no_effect, error_type=state
            )
        return Failure(ErrorClass.PERMANENT, FailureKind.CLIENT_ERROR, error_type=state)
    if isinstance(error, TimeoutError):
        return Failure(
            ErrorClass.TRANSIENT, FailureKind.TIMEOUT, sent=not rolled_back, error_type=name
        )
    refused = isinstance(error, ConnectionRefusedError | pgx.TooManyConnectionsError)
    if isinstance(error, OSError | pgx.InterfaceError) and (
        isinstance(error, OSError) or "connection" in str(error).lower()
    ):
        no_effect = refused or rolled_back
        return Failure(
            ErrorClass.TRANSIENT, FailureKind.CONNECTION, sent=not no_effect, error_type=name
        )
    if isinstance(error, pgx.InternalClientError) and "another operation" in str(error):
        # A backend terminated while the connection sat idle leaves asyncpg's protocol busy
        # with the unsolicited error; it then refuses to send ("cannot switch to state"):
        # nothing reached the server.
        return Failure(ErrorClass.TRANSIENT, FailureKind.CONNECTION, sent=False, error_type=name)
    return Failure(ErrorClass.PERMANENT, FailureKind.OTHER, error_type=name)
