"""The full demo's failover phase: the cache's Redis and the orders database change primary
under load.

Redis: the replica is promoted and the old primary demoted (a planned switchover). PostgreSQL:
the demo's own server turns read-only, as a demoted primary does, and new connections go to
the PostgreSQL the demo found. Each service writes numbered items (Redis: ``RPUSH`` onto a
list, which a resend would duplicate; PostgreSQL: rows with unique ids) and records which were
acknowledged; at the end the servers must hold each acknowledged item exactly once: a refused
write (``READONLY``, 25006) was resent once on a new connection, never lost, never doubled.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .phases import FAILOVER

if TYPE_CHECKING:
    from .backends import PostgresSide, RedisSide
    from .phases import Timeline
    from .stats import EventLog

__all__ = ["Failover", "WriteTally", "drive_failover", "failover_facts"]

ORDER_PREFIX = "failover-"  # client_order_id of the orders written in the failover phase


@dataclass
class WriteTally:
    """Writes the failover phase made and the server acknowledged (thread-safe)."""

    key: str
    acknowledged: set[str] = field(default_factory=set)
    switched_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acked(self, item: str) -> None:
        """``item`` was written and the server said so."""
        with self._lock:
            self.acknowledged.add(item)


@dataclass
class Failover:
    """The sides that fail over in this run, and their tallies (``None``: not in this run)."""

    redis: RedisSide | None
    postgres: PostgresSide | None
    cache: WriteTally | None = None
    orders: WriteTally | None = None

    @classmethod
    def of(cls, redis: RedisSide | None, postgres: PostgresSide | None) -> Failover:
        """Tallies for the sides that have a server of the demo's own to fail over."""
        cache = orders = None
        if redis is not None and redis.pair is not None:
            cache = WriteTally(redis.prefix + "failover:writes")
        if postgres is not None and postgres.primary is not None:
            orders = WriteTally(ORDER_PREFIX)
        return cls(redis, postgres, cache, orders)


async def drive_failover(
    failover: Failover, timeline: Timeline, events: EventLog, stop: asyncio.Event
) -> None:
    """At the start of the failover phase, switch both primaries."""
    if failover.cache is None and failover.orders is None:
        return
    while timeline.phase() != FAILOVER:
        if stop.is_set():
            return
        await asyncio.sleep(0.02)
    await asyncio.gather(_switch_redis(failover, timeline, events),
                         _switch_postgres(failover, timeline, events))  # fmt: skip


async def _switch_redis(failover: Failover, timeline: Timeline, events: EventLog) -> None:
    side, tally = failover.redis, failover.cache
    if side is None or side.pair is None or tally is None:
        return
    old = side.pair.primary
    try:
        paused = await asyncio.to_thread(side.pair.switchover, side.proxy)
    except Exception as exc:  # a switchover that could not happen is part of the story
        events.add(f"cache: switchover failed ({type(exc).__name__}: {exc})")
        return
    tally.switched_at = timeline.elapsed()
    events.add(f"cache: Redis {old[1]} demoted, replica {side.pair.primary[1]} promoted; new "
               f"connections go to it (writes paused {paused * 1000:.0f}ms)")  # fmt: skip


async def _switch_postgres(failover: Failover, timeline: Timeline, events: EventLog) -> None:
    side, tally = failover.postgres, failover.orders
    if side is None or side.primary is None or tally is None:
        return
    try:
        await side.switchover()
    except Exception as exc:
        events.add(f"orders-db: switchover failed ({type(exc).__name__}: {exc})")
        return
    tally.switched_at = timeline.elapsed()
    events.add(f"orders-db: PostgreSQL {side.primary.port} demoted (read-only); new "
               f"connections go to {side.proxy.upstream[1]}")  # fmt: skip


async def failover_facts(failover: Failover, failovers: dict[str, int]) -> list[str]:
    """The summary lines about the failover phase (``failovers``: refusals per service)."""
    if failover.cache is None and failover.orders is None:
        return ["failover: skipped (needs redis-server or PostgreSQL binaries for servers of "
                "the demo's own)"]  # fmt: skip
    lines: list[str] = []
    if failover.redis is not None and failover.redis.pair is not None and failover.cache:
        pushed = failover.redis.pair.primary_client.lrange(failover.cache.key, 0, -1)
        items = [item.decode() if isinstance(item, bytes) else item for item in pushed]
        lines += _lines("cache", "RPUSHes", failover.cache, failovers.get("cache", 0),
                        set(items), doubled=len(items) - len(set(items)))  # fmt: skip
    if failover.postgres is not None and failover.orders is not None:
        stored, doubled = await _orders_stored(failover.postgres)
        lines += _lines("orders-db", "INSERTs", failover.orders, failovers.get("orders-db", 0),
                        stored, doubled=doubled)  # fmt: skip
    return lines


def _lines(
    service: str,
    what: str,
    tally: WriteTally,
    refused: int,
    stored: set[str],
    *,
    doubled: int,
) -> list[str]:
    if tally.switched_at is None:
        return [f"failover of {service}: the switchover did not happen in this run"]
    writes = "1 write" if refused == 1 else f"{refused} writes"
    acked = tally.acknowledged
    lost = len(acked - stored)
    # a write still on its way when the run stopped may land without its reply being seen
    in_flight = len(stored - acked)
    late = f" ({in_flight} in flight when the run stopped)" if in_flight else ""
    return [
        f"failover of {service} at {tally.switched_at:.1f}s: {writes} refused by the demoted "
        "primary: connections retired, resent on a new one",
        f"  {len(acked)} {what} acknowledged, {len(stored)} stored: {lost} lost, "
        f"{doubled} applied twice{late}",
    ]


async def _orders_stored(side: PostgresSide) -> tuple[set[str], int]:
    """Failover-phase orders stored on either server, and how many are on both."""
    import asyncpg

    ids: list[set[str]] = []
    for dsn in side.dsns():
        connection = await asyncpg.connect(dsn, timeout=2.0)
        try:
            rows = await connection.fetch(
                f"SELECT client_order_id FROM {side.table} "  # noqa: S608 (our own table)
                "WHERE client_order_id LIKE $1",
                ORDER_PREFIX + "%",
            )
        finally:
            await connection.close()
        ids.append({row[0] for row in rows})
    both = set.intersection(*ids) if len(ids) > 1 else set()
    return set.union(*ids), len(both)
