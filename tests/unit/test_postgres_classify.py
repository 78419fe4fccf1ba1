"""classify_postgres, is_read_only, strip_literals and operation_name (no sockets)."""

from __future__ import annotations

import errno

import pytest
from asyncpg import exceptions as pgx

from resilience_otel import ErrorClass, FailureKind
from resilience_otel.asyncpg import (
    classify_postgres,
    is_read_only,
    operation_name,
    strip_literals,
)

T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CRITICAL
F = ErrorClass.FAILOVER
K = FailureKind
ROLLED_BACK_MARK = "_resilience_rolled_back"  # what run_in_transaction sets on its errors

# (exception class, SQLSTATE, class, kind, sent)
SQLSTATE_TABLE = [
    # TRANSIENT
    (pgx.SerializationError, "40001", T, K.OTHER, False),
    (pgx.DeadlockDetectedError, "40P01", T, K.OTHER, False),
    (pgx.CrashShutdownError, "57P02", T, K.CONNECTION, True),
    (pgx.TooManyConnectionsError, "53300", T, K.CONNECTION, False),
    (pgx.LockNotAvailableError, "55P03", T, K.OTHER, True),
    (pgx.QueryCanceledError, "57014", T, K.TIMEOUT, True),
    (pgx.ConnectionFailureError, "08006", T, K.CONNECTION, True),
    (pgx.ClientCannotConnectError, "08001", T, K.CONNECTION, True),
    (pgx.ConnectionDoesNotExistError, "08003", T, K.CONNECTION, True),
    (pgx.ConnectionRejectionError, "08004", T, K.CONNECTION, True),
    # PERMANENT
    (pgx.DivisionByZeroError, "22012", P, K.CLIENT_ERROR, True),
    (pgx.InvalidTextRepresentationError, "22P02", P, K.CLIENT_ERROR, True),
    (pgx.UniqueViolationError, "23505", P, K.CLIENT_ERROR, True),
    (pgx.ForeignKeyViolationError, "23503", P, K.CLIENT_ERROR, True),
    (pgx.PostgresSyntaxError, "42601", P, K.CLIENT_ERROR, True),
    (pgx.UndefinedTableError, "42P01", P, K.CLIENT_ERROR, True),
    (pgx.InvalidPasswordError, "28P01", P, K.CLIENT_ERROR, True),
    (pgx.InvalidCatalogNameError, "3D000", P, K.CLIENT_ERROR, True),
    (pgx.FeatureNotSupportedError, "0A000", P, K.CLIENT_ERROR, True),
    (pgx.InFailedSQLTransactionError, "25P02", P, K.CLIENT_ERROR, True),
    (pgx.RaiseError, "P0001", P, K.CLIENT_ERROR, True),
    # CRITICAL
    (pgx.DiskFullError, "53100", C, K.SERVER_ERROR, True),
    (pgx.OutOfMemoryError, "53200", C, K.SERVER_ERROR, True),
    (pgx.DataCorruptedError, "XX001", C, K.SERVER_ERROR, True),
    (pgx.IndexCorruptedError, "XX002", C, K.SERVER_ERROR, True),
    (pgx.PostgresIOError, "58030", C, K.SERVER_ERROR, True),
    # FAILOVER (the server is no longer the primary; refused, so not sent)
    (pgx.ReadOnlySQLTransactionError, "25006", F, K.FAILOVER, False),
    (pgx.CannotConnectNowError, "57P03", F, K.FAILOVER, False),
    (pgx.AdminShutdownError, "57P01", F, K.FAILOVER, False),
]


@pytest.mark.parametrize(
    ("error_type", "sqlstate", "error_class", "kind", "sent"),
    SQLSTATE_TABLE,
    ids=[row[1] for row in SQLSTATE_TABLE],
)
def test_sqlstate_table(
    error_type: type[pgx.PostgresError],
    sqlstate: str,
    error_class: ErrorClass,
    kind: FailureKind,
    sent: bool,
) -> None:
    """Each SQLSTATE named in the docstring gets its class, kind and sent flag."""
    error = error_type("x")
    assert error.sqlstate == sqlstate  # the table names the right asyncpg class
    failure = classify_postgres(None, error)
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (error_class, kind, sent)


def test_error_type_is_the_sqlstate() -> None:
    """A PostgreSQL error's ``error.type`` is its SQLSTATE, a low-cardinality value."""
    failure = classify_postgres(None, pgx.UniqueViolationError("duplicate key"))
    assert failure is not None
    assert failure.error_type == "23505"


def test_success_is_not_a_failure() -> None:
    """No error means success, whatever the value."""
    assert classify_postgres([1, 2], None) is None


def test_connection_refused_was_not_sent() -> None:
    """A refused connection never reached the server: transient and safe to resend."""
    failure = classify_postgres(None, ConnectionRefusedError(111, "refused"))
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (T, K.CONNECTION, False)
    assert failure.error_type == "ConnectionRefusedError"


def test_connection_reset_may_have_been_sent() -> None:
    """A reset connection may have carried the statement: transient but sent."""
    failure = classify_postgres(None, ConnectionResetError(104, "reset"))
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (T, K.CONNECTION, True)


def test_plain_oserror_is_transient_connection() -> None:
    """Any other socket error is a transient connection failure."""
    failure = classify_postgres(None, OSError(errno.EHOSTUNREACH, "no route"))
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (T, K.CONNECTION, True)


def test_disk_full_oserror_is_critical() -> None:
    """A client-side ENOSPC is critical, not a connection problem."""
    failure = classify_postgres(None, OSError(errno.ENOSPC, "No space left on device"))
    assert failure is not None
    assert failure.error_class is C


def test_timeout_is_transient_and_sent() -> None:
    """A timed-out statement may have run: transient TIMEOUT, sent."""
    failure = classify_postgres(None, TimeoutError())
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (T, K.TIMEOUT, True)
    assert failure.error_type == "TimeoutError"


def test_closed_connection_interface_error_is_transient() -> None:
    """asyncpg's InterfaceError("connection is closed") is a transient connection failure."""
    failure = classify_postgres(None, pgx.InterfaceError("connection is closed"))
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (T, K.CONNECTION, True)
    assert failure.error_type == "InterfaceError"


def test_other_interface_error_is_permanent() -> None:
    """An InterfaceError about misuse (not the connection) is permanent."""
    error = pgx.InterfaceError("cannot perform operation: another operation is in progress")
    failure = classify_postgres(None, error)
    assert failure is not None
    assert failure.error_class is P


def test_refusal_to_send_on_dead_idle_connection_is_not_sent() -> None:
    """asyncpg's "cannot switch to state" after its idle backend died is transient, unsent."""
    error = pgx.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    failure = classify_postgres(None, error)
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.sent) == (T, K.CONNECTION, False)


def test_other_internal_client_error_is_permanent() -> None:
    """Any other asyncpg internal error is permanent."""
    failure = classify_postgres(None, pgx.InternalClientError("unexpected codec state"))
    assert failure is not None
    assert failure.error_class is P


def test_unknown_exception_is_permanent() -> None:
    """An exception the classifier does not know is permanent (never blindly retried)."""
    failure = classify_postgres(None, ValueError("bad argument"))
    assert failure is not None
    assert (failure.error_class, failure.kind, failure.error_type) == (P, K.OTHER, "ValueError")


@pytest.mark.parametrize(
    "error",
    [
        pgx.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pgx.CrashShutdownError("terminating connection because of crash of another process"),
        pgx.InterfaceError("connection is closed"),
        TimeoutError(),
        ConnectionResetError(104, "reset"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_rolled_back_mark_means_not_sent(error: Exception) -> None:
    """An error run_in_transaction marked as rolled back had no effect: not sent."""
    before = classify_postgres(None, error)
    assert before is not None
    assert before.sent
    setattr(error, ROLLED_BACK_MARK, True)
    after = classify_postgres(None, error)
    assert after is not None
    assert (after.error_class, after.sent) == (T, False)


def test_rolled_back_mark_keeps_permanent_errors_permanent() -> None:
    """The rolled-back mark does not make a constraint violation retryable."""
    error = pgx.UniqueViolationError("duplicate key")
    setattr(error, ROLLED_BACK_MARK, True)
    failure = classify_postgres(None, error)
    assert failure is not None
    assert failure.error_class is P


@pytest.mark.parametrize(
    ("query", "read_only"),
    [
        ("SELECT 1", True),
        ("select * from t where id = $1", True),
        ("-- note\nSELECT 1", True),
        ("/* DELETE everything? no */ SELECT 1", True),
        ("  \n\tSELECT 1", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", True),
        ("with x as (select 1) select * from x", True),
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM x", False),
        ("WITH x AS (SELECT 1) UPDATE t SET a = 1", False),
        ("EXPLAIN SELECT * FROM t", True),
        ("EXPLAIN DELETE FROM t", True),
        ("EXPLAIN ANALYZE SELECT * FROM t", True),
        ("EXPLAIN ANALYZE DELETE FROM t", False),
        ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", False),
        ("SHOW search_path", True),
        ("VALUES (1), (2)", True),
        ("TABLE t", True),
        ("INSERT INTO t VALUES (1) RETURNING id", False),
        ("insert into t values (1)", False),
        ("UPDATE t SET a = 1", False),
        ("DELETE FROM t", False),
        ("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", False),
        ("CREATE TABLE t (a int)", False),
        ("COPY t TO STDOUT", False),
        ("CALL p()", False),
        ("", False),
        ("-- only a comment", False),
        # issue 11: multi-statement text and the VALUES/TABLE/SHOW prefixes
        ("SHOW search_path; DELETE FROM t", False),
        ("VALUES (1); DELETE FROM t", False),
        ("TABLE t; DELETE FROM t", False),
        ("SELECT 1; DELETE FROM t", False),
        ("SELECT 1;", True),
        ("SELECT 1 ;; ", True),
        ("VALUES (nextval('s'))", False),
        ("TABLE t FOR UPDATE", False),
        # issue 11: a function call may write (a row inserted twice when resent)
        ("SELECT place_order(1)", False),
        ("SELECT pg_notify('orders', 'new')", False),
        ("SELECT nextval('orders_id_seq')", False),
        ("SELECT setval('orders_id_seq', 1)", False),
        ("SELECT * FROM shop.place_order(1)", False),
        ('SELECT "place_order"(1)', False),
        ("SELECT count(*), max(id), now(), coalesce(a, 0), lower(b) FROM t", True),
        ("SELECT pg_catalog.count(*) FROM t", True),
        ("SELECT pg_backend_pid() FROM pg_sleep(0.2)", True),
        ("SELECT evil.count(*) FROM t", False),
        ("SELECT a FROM t WHERE b IN (1, 2) AND EXISTS (SELECT 1)", True),
        ("SELECT CAST(a AS numeric(10, 2)) AS x FROM t", True),
        ("SELECT a FROM generate_series(1, 3) AS g(a)", True),
        ("WITH RECURSIVE r(n) AS (SELECT 1) SELECT n FROM r", True),
        ("EXPLAIN SELECT place_order(1)", True),
        ("EXPLAIN ANALYZE SELECT place_order(1)", False),
        # every write form, wherever it appears
        ("SELECT * INTO t2 FROM t", False),
        ("SELECT * FROM t FOR UPDATE", False),
        ("SELECT * FROM t FOR SHARE", False),
        ("SELECT * FROM t FOR KEY SHARE", False),
        ("SELECT * FROM t FOR NO KEY UPDATE", False),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", False),
        ("WITH m AS MATERIALIZED (UPDATE t SET a = 1 RETURNING a) SELECT 1", False),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("EXPLAIN ANALYZE EXECUTE prepared_insert", False),
        ("EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", False),
        ("LOCK TABLE t", False),
        ("DO $$BEGIN DELETE FROM t; END$$", False),
        ("NOTIFY orders", False),
        ("COPY t FROM STDIN", False),
        ("TRUNCATE t", False),
        ("GRANT SELECT ON t TO u", False),
        ("ALTER TABLE t ADD c int", False),
        ("DROP TABLE t", False),
        # write words inside literals, comments and quoted identifiers do not count
        ("SELECT 'DELETE FROM t; INSERT'", True),
        ("SELECT $$DELETE$$, E'UPDATE \\' ; DROP', $x$INSERT$x$", True),
        ('SELECT "update", "delete" FROM "insert"', True),
        ("SELECT 1 -- ; DELETE FROM t", True),
        ("SELECT 1 /* ; DELETE /* nested */ FROM t */", True),
        # read as the server would with standard_conforming_strings off, this is a DELETE
        ("SELECT 'a\\', ' ; DELETE FROM t; --'", False),
    ],
)
def test_is_read_only(query: str, read_only: bool) -> None:
    """Read-only statements are recognised from their text, comments ignored."""
    assert is_read_only(query) is read_only


@pytest.mark.parametrize(
    ("query", "stripped"),
    [
        ("SELECT 'a''b'", "SELECT ?"),
        ("SELECT $$x$$", "SELECT ?"),
        ("SELECT $tag$x$tag$", "SELECT ?"),
        ("SELECT * FROM t WHERE a = 42 AND b = 3.14", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT * FROM t1 WHERE id = $1 AND n = $12",) * 2,
        ("INSERT INTO t2 (c3) VALUES ('x', 7)", "INSERT INTO t2 (c3) VALUES (?, ?)"),
        ("SELECT\n'multi\nline'", "SELECT\n?"),
        # issue 11: the scrubber lost its place after E'it\'s' and leaked what followed
        ("SELECT E'it\\'s', 'hunter2'", "SELECT ?, ?"),
        (
            "SELECT 1.5e10, 12e3, 0x1F, 1_000_000, .5, 1.5, 0o17, 0b101",
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?",
        ),
        ("SELECT 1 -- the note\n", "SELECT ?"),
        ("SELECT /* a /* nested */ note */ 1", "SELECT ?"),
        ("SELECT a/*x*/FROM t", "SELECT a FROM t"),
        ("SELECT B'101', X'1F', U&'d\\0061t', N'x', e'y'", "SELECT ?, ?, ?, ?, ?"),
        ('SELECT "Quoted ""Col""" FROM t', 'SELECT "Quoted ""Col""" FROM t'),
        ("SELECT * FROM t WHERE s = 'unterminated hunter2", "SELECT * FROM t WHERE s = ?"),
        ("SELECT 1 /* unterminated hunter2", "SELECT ?"),
    ],
)
def test_strip_literals(query: str, stripped: str) -> None:
    """Literals become ``?``; placeholders and identifiers with digits stay."""
    assert strip_literals(query) == stripped


@pytest.mark.parametrize(
    "query",
    [
        "UPDATE users SET password = 'hunter2-secret' WHERE id = $1",
        "SELECT $$hunter2-secret$$",
        "SELECT $pw$hunter2-secret$pw$",
        "SELECT 'it''s hunter2-secret'",
        "SELECT E'it\\'s', 'hunter2-secret'",
        "SELECT E'it\\'s' -- hunter2-secret",
        "SELECT 1 /* hunter2-secret */",
        "SELECT 1 -- hunter2-secret",
        'SELECT "unterminated hunter2-secret',
        "SELECT 'a\\', 'hunter2-secret'",
        # with standard_conforming_strings off the server reads hunter2 inside a literal
        "SELECT 'a\\', 'x' hunter2-secret '",
    ],
)
def test_strip_literals_hides_secrets(query: str) -> None:
    """A secret in a string literal never survives."""
    assert "hunter2" not in strip_literals(query)


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("SELECT 1", "SELECT"),
        ("select 1", "SELECT"),
        ("  -- leading\n/* block */ insert into t values (1)", "INSERT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
        ("", "UNKNOWN"),
        ("   ", "UNKNOWN"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "ABCDEFGHIJKLMNOP"),
    ],
)
def test_operation_name(query: str, name: str) -> None:
    """The first keyword, upper-cased and bounded to 16 characters."""
    assert operation_name(query) == name
