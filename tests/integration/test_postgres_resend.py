"""What the asyncpg shell resends after a connection reset, against the machine's PostgreSQL
through the TCP fault proxy: a function call or a multi-statement text that already ran is
not run twice, and a COPY is never resent once rows reached the caller's output.

Resets are timed by the server's own state: the proxy resets the connection while the
backend sleeps in ``pg_sleep`` (after the statement's write), or from the COPY output itself
once it has received its first rows.
"""

# Statements are built with f-strings only to name the per-test tables and functions.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from asyncpg import exceptions as pgx

from resilience_otel import FailureKind, Observer
from resilience_otel.asyncpg import ResilientPool, wrap
from tests.support.faultproxy import FaultProxy

from .conftest import PolicyFactory

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROWS = 200_000
# What asyncpg raises on a statement whose connection was reset under it.
LOST_CONNECTION = (pgx.PostgresConnectionError, pgx.InterfaceError, ConnectionError)


# -- helpers ---------------------------------------------------------------------------------------
async def reset_while_sleeping(admin: asyncpg.Connection, proxy: FaultProxy, marker: str) -> int:
    """Reset every proxied connection once a backend running ``marker`` sleeps in
    ``pg_sleep``; returns that backend's pid."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            " AND pid <> pg_backend_pid() AND query LIKE $1",
            f"%{marker}%",
        )
        if pid is not None:
            proxy.reset_all()
            return int(pid)
        await asyncio.sleep(0.005)
    raise AssertionError(f"no backend slept in a statement containing {marker!r}")


async def wait_until_gone(admin: asyncpg.Connection, pid: int) -> None:
    """Wait until backend ``pid`` has finished (its statement committed or not)."""
    for _ in range(1000):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"backend {pid} still running")


def count_lines(chunks: list[bytes]) -> int:
    return b"".join(chunks).count(b"\n")


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the machine's PostgreSQL."""
    with FaultProxy(("127.0.0.1", 5432)) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for set-up and checks."""
    connection = await asyncpg.connect(DSN)
    yield connection
    await connection.close()


@pytest.fixture
async def raw_pool(proxy: FaultProxy) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool whose connections go through the proxy."""
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/test", min_size=1, max_size=2
    )
    yield pool
    pool.terminate()


@pytest.fixture
async def orders(admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A table ``orders_<id>`` and a function ``place_order_<id>(n)`` that inserts a row,
    then sleeps 0.3 s (so a reset can land after the insert); both dropped after."""
    name = f"orders_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE TABLE {name} (n int NOT NULL)")
    await admin.execute(
        f"CREATE FUNCTION place_{name}(n int) RETURNS int LANGUAGE plpgsql AS $$"
        f" BEGIN INSERT INTO {name} VALUES (n); PERFORM pg_sleep(0.3); RETURN n; END $$"
    )
    yield name
    await admin.execute(f"DROP FUNCTION IF EXISTS place_{name}(int)")
    await admin.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
async def big_table(admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A table of ``ROWS`` rows, dropped after."""
    name = f"copy_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE TABLE {name} (id int, v int)")
    await admin.execute(f"INSERT INTO {name} SELECT g, g FROM generate_series(1, {ROWS}) g")
    yield name
    await admin.execute(f"DROP TABLE IF EXISTS {name}")


async def run_reset_after_write(
    pool: ResilientPool,
    admin: asyncpg.Connection,
    proxy: FaultProxy,
    marker: str,
    query: str,
    **kwargs: Any,
) -> Any:
    """Run ``query`` with the connection reset after the server wrote; returns the value or
    the exception, once the first backend has finished."""
    call = asyncio.ensure_future(pool.fetchval(query, **kwargs))
    pid = await reset_while_sleeping(admin, proxy, marker)
    result = (await asyncio.gather(call, return_exceptions=True))[0]
    await wait_until_gone(admin, pid)
    return result


# -- statements that already ran -----------------------------------------------------------------
@pytest.mark.anyio
async def test_function_call_is_not_resent_after_it_ran(
    raw_pool: asyncpg.Pool,
    admin: asyncpg.Connection,
    proxy: FaultProxy,
    orders: str,
    make_policy: PolicyFactory,
) -> None:
    """``SELECT place_order(1)`` reset after its insert fails; the row is inserted once."""
    pool = wrap(raw_pool, policy=make_policy(call_timeout=5.0))
    result = await run_reset_after_write(pool, admin, proxy, orders, f"SELECT place_{orders}(1)")
    assert isinstance(result, LOST_CONNECTION)
    assert await admin.fetchval(f"SELECT count(*) FROM {orders}") == 1


@pytest.mark.parametrize("opt_in", ["wrap", "call"])
@pytest.mark.anyio
async def test_function_call_is_resent_with_the_opt_in(
    raw_pool: asyncpg.Pool,
    admin: asyncpg.Connection,
    proxy: FaultProxy,
    orders: str,
    make_policy: PolicyFactory,
    opt_in: str,
) -> None:
    """``read_only_functions=True`` or ``idempotent=True`` resends it (this one runs twice)."""
    pool = wrap(
        raw_pool, policy=make_policy(call_timeout=5.0), read_only_functions=opt_in == "wrap"
    )
    per_call = {"idempotent": True} if opt_in == "call" else {}
    result = await run_reset_after_write(
        pool, admin, proxy, orders, f"SELECT place_{orders}(7)", **per_call
    )
    assert result == 7
    assert await admin.fetchval(f"SELECT count(*) FROM {orders}") == 2


@pytest.mark.anyio
async def test_multi_statement_text_is_not_resent_after_it_ran(
    raw_pool: asyncpg.Pool,
    admin: asyncpg.Connection,
    proxy: FaultProxy,
    orders: str,
    make_policy: PolicyFactory,
) -> None:
    """``SHOW ...; INSERT ...`` (read-only first word) is not resent once it ran."""
    pool = wrap(raw_pool, policy=make_policy(call_timeout=5.0))
    query = f"SHOW search_path; INSERT INTO {orders} SELECT 1 FROM pg_sleep(0.3)"
    call = asyncio.ensure_future(pool.execute(query))
    pid = await reset_while_sleeping(admin, proxy, orders)
    result = (await asyncio.gather(call, return_exceptions=True))[0]
    await wait_until_gone(admin, pid)
    assert isinstance(result, LOST_CONNECTION)
    assert await admin.fetchval(f"SELECT count(*) FROM {orders}") == 1


# -- COPY ... TO ---------------------------------------------------------------------------------
class ResettingFile(io.BytesIO):
    """A file-like output that resets the proxy once it has received its first rows."""

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def write(self, data: Any) -> int:
        first = self.tell() == 0
        written = super().write(data)
        if first:
            self.proxy.reset_all()
        return written


@pytest.mark.parametrize("output", ["callable", "file"])
@pytest.mark.anyio
async def test_copy_is_never_resent_after_rows_reached_the_output(
    raw_pool: asyncpg.Pool,
    proxy: FaultProxy,
    big_table: str,
    make_policy: PolicyFactory,
    output: str,
) -> None:
    """Reset after the first rows were written: the call fails, no second copy is appended."""
    pool = wrap(raw_pool, policy=make_policy(call_timeout=5.0))
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)
        if len(chunks) == 1:
            proxy.reset_all()

    file = ResettingFile(proxy)
    target: Any = sink if output == "callable" else file
    try:
        await pool.copy_from_table(big_table, output=target)
    except LOST_CONNECTION:
        failed = True
    else:
        failed = False
    rows = count_lines(chunks) if output == "callable" else file.getvalue().count(b"\n")
    assert rows <= ROWS
    assert failed  # the reset landed mid-copy: 200,000 rows do not fit in socket buffers
    assert 0 < rows < ROWS


@pytest.mark.anyio
async def test_copy_query_calling_a_function_is_not_resent_after_it_ran(
    raw_pool: asyncpg.Pool,
    admin: asyncpg.Connection,
    proxy: FaultProxy,
    orders: str,
    make_policy: PolicyFactory,
) -> None:
    """A COPY of a query calling a writing function is not rerun, even before any rows."""
    pool = wrap(raw_pool, policy=make_policy(call_timeout=5.0))
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    call = asyncio.ensure_future(pool.copy_from_query(f"SELECT place_{orders}(3)", output=sink))
    pid = await reset_while_sleeping(admin, proxy, orders)
    result = (await asyncio.gather(call, return_exceptions=True))[0]
    await wait_until_gone(admin, pid)
    assert isinstance(result, LOST_CONNECTION)
    assert await admin.fetchval(f"SELECT count(*) FROM {orders}") == 1


@pytest.mark.anyio
async def test_copy_reset_before_any_output_is_retried(
    raw_pool: asyncpg.Pool,
    admin: asyncpg.Connection,
    proxy: FaultProxy,
    big_table: str,
    make_policy: PolicyFactory,
) -> None:
    """A read-only COPY reset before its first row is resent; every row arrives once."""
    pool = wrap(raw_pool, policy=make_policy(call_timeout=5.0))
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    query = f"SELECT id FROM pg_sleep(0.3), {big_table} WHERE id <= 1000"
    call = asyncio.ensure_future(pool.copy_from_query(query, output=sink))
    await reset_while_sleeping(admin, proxy, big_table)
    assert await call == "COPY 1000"
    assert count_lines(chunks) == 1000


class Retries(Observer):
    """Records the reason of every retry."""

    def __init__(self) -> None:
        self.reasons: list[FailureKind] = []

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self.reasons.append(reason)


@pytest.mark.anyio
async def test_copy_timed_out_before_any_output_is_retried(
    raw_pool: asyncpg.Pool, big_table: str, make_policy: PolicyFactory
) -> None:
    """A read-only COPY cut by call_timeout before its first row is retried."""
    retries = Retries()
    policy = make_policy(max_attempts=2, call_timeout=0.2)
    pool = wrap(raw_pool, policy=policy, observers=[retries])
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    query = f"SELECT id FROM pg_sleep(0.5), {big_table} WHERE id <= 10"
    with pytest.raises(TimeoutError):
        await pool.copy_from_query(query, output=sink)
    assert retries.reasons == [FailureKind.TIMEOUT]
    assert chunks == []
