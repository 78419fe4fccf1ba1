"""Resilient asyncpg connections and pools.

    pool = resilience_otel.asyncpg.wrap(await asyncpg.create_pool(dsn), policy=policy)
    rows = await pool.fetch("SELECT * FROM orders WHERE id = $1", order_id)

Retry safety: a statement is never resent inside an open transaction. Outside one, a failure
that certainly had no effect (connection refused, pool exhausted, serialization failure or
deadlock) is retried for every statement. After a statement may have reached the server it is
resent only when the call says ``idempotent=True`` or :func:`is_read_only` holds: one
statement, ``SELECT``/``SHOW``/``VALUES``/``TABLE``/``WITH``/``EXPLAIN`` without write
keywords, row locks or calls to functions that are not known side-effect-free built-ins
(``wrap(read_only_functions=...)`` vouches for the caller's functions). ``COPY ... TO`` is never
resent once rows reached the caller's output. :func:`run_in_transaction` reruns a whole
transaction function on serialization failure (40001), deadlock (40P01) and connection loss
before ``COMMIT``; a connection lost *during* ``COMMIT`` leaves the outcome unknown and is
raised, never rerun.

Failover: a server that is no longer the primary (25006 read-only transaction, 57P03 in
recovery, 57P01 admin shutdown) refused the statement before running it. The connection is
terminated and the pool told ``expire_connections()`` (never closed), and a pool statement or a
:func:`run_in_transaction` function is resent, writes included, on a new connection. A
connection the caller holds (a bare one, or one from ``acquire()``) is terminated and the error
raised: reconnecting is the caller's.
"""

from __future__ import annotations

from ._clients.postgres.client import (
    ResilientConnection,
    ResilientPool,
    classify_postgres,
    is_read_only,
    operation_name,
    probe,
    run_in_transaction,
    strip_literals,
    wrap,
)

__all__ = [
    "ResilientConnection",
    "ResilientPool",
    "classify_postgres",
    "is_read_only",
    "operation_name",
    "probe",
    "run_in_transaction",
    "strip_literals",
    "wrap",
]
