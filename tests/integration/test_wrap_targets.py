"""asyncpg.wrap takes every kind of target a user holds (a pool, a connection, a connection
borrowed from a pool) against the machine's PostgreSQL, and nothing else."""

from __future__ import annotations

import asyncpg
import pytest

from resilience_otel import Policy
from resilience_otel.asyncpg import wrap

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
POLICY = Policy(service="orders-db")


async def test_wrap_takes_a_pool_a_connection_and_a_borrowed_connection() -> None:
    """All three answer SELECT 1 through the wrapper."""
    async with asyncpg.create_pool(DSN, min_size=0, max_size=1) as pool:
        assert await wrap(pool, policy=POLICY).fetchval("SELECT 1") == 1
        async with pool.acquire() as borrowed:
            assert await wrap(borrowed, policy=POLICY).fetchval("SELECT 1") == 1
    connection = await asyncpg.connect(DSN)
    try:
        assert await wrap(connection, policy=POLICY).fetchval("SELECT 1") == 1
    finally:
        await connection.close()


async def test_wrap_refuses_a_dsn_string() -> None:
    """A DSN is not a connection: TypeError naming the argument, before any I/O."""
    with pytest.raises(TypeError, match=r"wrap\(target=...\) must be an asyncpg.Connection"):
        wrap(DSN, policy=POLICY)  # type: ignore[arg-type]
