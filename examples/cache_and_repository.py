"""A Redis cache in front of a PostgreSQL repository, as several worker processes would run it.

- The repository's breaker keeps its state in Redis (``RedisBreakerStore``): when one worker
  sees PostgreSQL fail, every worker stops calling it within ``sync_interval``.
- Writes that fail for good go to a Redis stream (``RedisStreamDeadLetterQueue``), so they
  survive the process; the next run reports what an earlier one could not save.
- Reads go through the cache first (cache-aside); the cache client retries reads, and its
  ``SET`` is marked idempotent so it may be resent too.

Environment (defaults shown; the policies also read ``CB_*`` / ``RETRY_*`` and their
``ORDERS_DB_`` / ``QUOTE_CACHE_`` overrides)::

    REDIS_URL=redis://127.0.0.1:6379/0
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test
    EXAMPLE_PREFIX=example               # Redis keys: cache, breaker state, dead letters
    ORDERS_TABLE=example_orders

Run: ``python examples/cache_and_repository.py`` (twice, with PostgreSQL stopped the first
time, to see a dead letter outlive its process).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

import asyncpg
import redis
import redis.asyncio

from resilience_otel import Policy
from resilience_otel.asyncpg import wrap
from resilience_otel.dlq import RedisStreamDeadLetterQueue
from resilience_otel.redis import RedisBreakerStore, instrument

ORDER = {"client_order_id": "ex-0001", "symbol": "AAPL", "qty": 10}
PREFIX = os.environ.get("EXAMPLE_PREFIX", "example")


class OrderRepository:
    """Orders in PostgreSQL; saving is idempotent (``ON CONFLICT DO NOTHING``)."""

    def __init__(self, pool: Any, table: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
            raise ValueError(f"ORDERS_TABLE must be a plain identifier, got {table!r}")
        self.pool = pool
        self.table = table

    async def create_table(self) -> None:
        """Create the table if it is missing (a migration's job; on the raw pool, outside
        the policy, so that it never becomes a dead letter)."""
        await self.pool.raw.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (client_order_id text PRIMARY KEY, "
            "symbol text NOT NULL, qty integer NOT NULL)"
        )

    async def save(self, order: dict[str, Any]) -> None:
        """Insert ``order``; resending it is harmless, so the write may be retried."""
        await self.pool.execute(
            f"INSERT INTO {self.table} (client_order_id, symbol, qty) "  # noqa: S608
            "VALUES ($1, $2, $3) ON CONFLICT (client_order_id) DO NOTHING",
            order["client_order_id"], order["symbol"], order["qty"], idempotent=True,
        )  # fmt: skip

    async def get(self, client_order_id: str) -> dict[str, Any] | None:
        """The order, or ``None``."""
        row = await self.pool.fetchrow(
            f"SELECT client_order_id, symbol, qty FROM {self.table} "  # noqa: S608
            "WHERE client_order_id = $1",
            client_order_id,
        )
        return dict(row) if row is not None else None


async def read_through(cache: Any, repository: OrderRepository, key: str) -> str:
    """Cache-aside read: the cache, else the database (then fill the cache)."""
    cached = await cache.get(f"{PREFIX}:order:{key}")
    if cached is not None:
        return f"order {key} from the cache: {cached.decode()}"
    order = await repository.get(key)
    if order is None:
        return f"order {key}: not found"
    await cache.set(f"{PREFIX}:order:{key}", json.dumps(order), ex=60)
    return f"order {key} from PostgreSQL: {json.dumps(order)}"


def report_earlier_failures(dead: RedisStreamDeadLetterQueue) -> None:
    """Print (and acknowledge) the writes an earlier run could not make."""
    waiting = len(dead)
    print(f"dead letters from earlier runs in {dead.stream}: {waiting}")
    if waiting:
        dead.replay(
            lambda letter: print(
                f"  {letter.operation}: {letter.reason} after {letter.attempts} attempts "
                f"({letter.error_type}), trace {letter.trace_id or '-'}"
            )
        )


async def run() -> None:
    """Wire the cache, the repository, the shared breaker and the dead letters; use them."""
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    dsn = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    plain = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisBreakerStore(
        redis.Redis.from_url(redis_url, socket_timeout=0.05, socket_connect_timeout=0.05),
        prefix=f"{PREFIX}:breaker",
    )
    dead = RedisStreamDeadLetterQueue(plain, stream=f"{PREFIX}:dead-letters", maxlen=10_000)
    report_earlier_failures(dead)

    db_policy = Policy.from_env("orders-db")
    breaker = store.breaker(db_policy.breaker, name="orders-db")
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=4, command_timeout=10)
    repository = OrderRepository(
        wrap(pool, policy=db_policy, breaker=breaker, dead_letters=dead),
        os.environ.get("ORDERS_TABLE", "example_orders"),
    )
    cache = instrument(
        redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.5),
        policy=Policy.from_env("quote-cache"),
        idempotent_commands={"SET"},
    )
    try:
        await save_and_read(cache, repository)
    finally:
        print(f"breaker orders-db (shared through Redis): {breaker.state}")
        await pool.close()
        await cache.aclose()
        dead.close()
        plain.close()


async def save_and_read(cache: Any, repository: OrderRepository) -> None:
    """Save the order, then read it twice: from PostgreSQL, then from the cache."""
    try:
        await repository.create_table()
    except OSError as exc:
        print(f"PostgreSQL unreachable ({type(exc).__name__}); saving anyway, to show the rest")
    try:
        await repository.save(ORDER)
    except (OSError, asyncpg.PostgresError) as exc:  # RetriesExhaustedError / CircuitOpenError
        print(f"order {ORDER['client_order_id']} not saved ({type(exc).__name__}): "
              "kept as a dead letter")  # fmt: skip
        return
    print(f"order {ORDER['client_order_id']} saved to {repository.table}")
    for _ in range(2):
        print(await read_through(cache, repository, ORDER["client_order_id"]))


def main() -> None:
    """Entry point."""
    asyncio.run(run())


if __name__ == "__main__":
    main()
