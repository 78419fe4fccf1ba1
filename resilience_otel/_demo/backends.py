"""Redis and PostgreSQL for the full demo: found by a quick probe, reached through TCP fault
proxies that the phases switch, and cleaned up at the end.

``RESILIENCE_DEMO_REDIS`` (``host:port``, default ``127.0.0.1:6379``) and
``RESILIENCE_DEMO_POSTGRES`` (a DSN, default ``postgresql://postgres@127.0.0.1:5432/test``)
choose the servers; ``off`` leaves one out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .phases import FULL_OUTAGE, PARTIAL_OUTAGE, Timeline
from .tcpproxy import PASS, RESET, FaultProxy

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from .pgprimary import PostgresPrimary
    from .replicas import RedisPair

__all__ = ["Backends", "OutageDriver", "PostgresSide", "RedisSide", "probe_backends"]

REDIS_ENV, POSTGRES_ENV = "RESILIENCE_DEMO_REDIS", "RESILIENCE_DEMO_POSTGRES"
DEFAULT_REDIS = "127.0.0.1:6379"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PROBE_TIMEOUT = 0.5
FLAP_SHARE = 0.25  # share of each flap cycle the proxy resets connections in a partial outage


@dataclass(frozen=True, slots=True)
class Backends:
    """What the probe found: an address for each reachable server, and a line about each."""

    redis: tuple[str, int] | None
    postgres: str | None
    notes: tuple[str, ...]


def _redis_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1"), int(port or 6379)


async def _probe_redis(address: tuple[str, int]) -> str | None:
    """``None`` when Redis answers PING within the probe timeout, else why not."""
    try:
        import redis.asyncio
    except ImportError:
        return "the redis extra is not installed"
    client = redis.asyncio.Redis(
        host=address[0], port=address[1],
        socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT,
    )  # fmt: skip
    try:
        await asyncio.wait_for(client.ping(), PROBE_TIMEOUT)
    except Exception as exc:  # any failure means "not usable": say which and carry on
        return f"not reachable ({type(exc).__name__})"
    finally:
        await client.aclose()
    return None


async def _probe_postgres(dsn: str) -> str | None:
    """``None`` when PostgreSQL answers ``SELECT 1`` within the probe timeout, else why not."""
    try:
        import asyncpg
    except ImportError:
        return "the asyncpg extra is not installed"
    try:
        connection = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT)
    except Exception as exc:  # any failure means "not usable": say which and carry on
        return f"not reachable ({type(exc).__name__})"
    try:
        await connection.fetchval("SELECT 1", timeout=PROBE_TIMEOUT)
    except Exception as exc:
        return f"not usable ({type(exc).__name__})"
    finally:
        await connection.close(timeout=PROBE_TIMEOUT)
    return None


async def probe_backends() -> Backends:
    """Probe Redis and PostgreSQL (0.5 s each, concurrently) as the environment says."""
    redis_text = os.environ.get(REDIS_ENV, DEFAULT_REDIS).strip()
    dsn = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES).strip()
    address = None if redis_text == "off" else _redis_address(redis_text)
    redis_why, pg_why = await asyncio.gather(
        _probe_redis(address) if address else _off(),
        _probe_postgres(dsn) if dsn != "off" else _off(),
    )
    shown_dsn = dsn.split("@")[-1]  # never print a password
    notes = (
        _note("Redis", redis_text, redis_why, REDIS_ENV),
        _note("PostgreSQL", shown_dsn, pg_why, POSTGRES_ENV),
    )
    return Backends(
        redis=address if redis_why is None else None,
        postgres=dsn if pg_why is None else None,
        notes=notes,
    )


async def _off() -> str:
    return "off"


def _note(name: str, where: str, why: str | None, variable: str) -> str:
    if why == "off":
        return f"{name}: off ({variable}=off)"
    return f"{name} {where}: {'found' if why is None else why}"


class RedisSide:
    """A ``redis.asyncio`` client reaching Redis through a fault proxy, plus a direct client
    for durable dead letters and clean-up. Every key starts with :attr:`prefix`.

    With a :class:`RedisPair` the proxied client reaches the pair's primary (the failover
    phase hands it over to the replica); the direct client stays on ``address``.
    """

    def __init__(self, address: tuple[str, int], pair: RedisPair | None = None) -> None:
        import redis
        import redis.asyncio

        self.pair = pair
        self.proxy = FaultProxy(address if pair is None else pair.primary).__enter__()
        self.prefix = f"resilience-demo:{os.getpid()}:"
        self.client: redis.asyncio.Redis = redis.asyncio.Redis(
            host="127.0.0.1", port=self.proxy.port, socket_timeout=0.25,
            socket_connect_timeout=0.25,
        )  # fmt: skip
        self.direct: redis.Redis = redis.Redis(
            host=address[0], port=address[1], socket_timeout=1.0, socket_connect_timeout=1.0
        )

    async def close(self) -> int:
        """Delete the demo's keys, close the clients and the proxy; returns keys deleted."""
        self.proxy.stop()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        deleted = await asyncio.to_thread(self._delete_keys)
        self.direct.close()
        if self.pair is not None:
            await asyncio.to_thread(self.pair.stop)
        return deleted

    def _delete_keys(self) -> int:
        keys = list(self.direct.scan_iter(match=self.prefix + "*", count=500))
        return int(self.direct.delete(*keys)) if keys else 0


class PostgresSide:
    """An asyncpg pool reaching PostgreSQL through a fault proxy, and a demo table.

    With a :class:`PostgresPrimary` the pool starts on that server (the table is made on both)
    and the failover phase demotes it and moves the proxy to ``dsn``'s server.
    """

    def __init__(
        self, dsn: str, pool: Any, proxy: FaultProxy, table: str, primary: PostgresPrimary | None
    ) -> None:
        self.dsn = dsn
        self.pool = pool
        self.proxy = proxy
        self.table = table
        self.primary = primary

    @classmethod
    async def open(cls, dsn: str, primary: PostgresPrimary | None = None) -> PostgresSide:
        """Create the demo table (directly) and a pool through a new fault proxy."""
        import asyncpg

        parts = urlsplit(dsn)
        table = f"resilience_demo_orders_{os.getpid()}"
        target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        if primary is not None:
            await primary.ready(parts.path.lstrip("/") or "postgres")
            target = ("127.0.0.1", primary.port)
        side_dsns = [dsn] if primary is None else [dsn, _on(dsn, primary.port)]
        for each in side_dsns:
            await _create_table(each, table)
        proxy = FaultProxy(target).__enter__()
        pool = await asyncpg.create_pool(
            dsn, host="127.0.0.1", port=proxy.port, min_size=0, max_size=4,
            timeout=1.0, command_timeout=1.0,
        )  # fmt: skip
        return cls(dsn, pool, proxy, table, primary)

    def dsns(self) -> list[str]:
        """Every server holding the demo table: the found one, and the demo's own if any."""
        return [self.dsn] + ([] if self.primary is None else [_on(self.dsn, self.primary.port)])

    async def switchover(self) -> None:
        """Demote the demo's own primary and send new connections to ``dsn``'s server."""
        if self.primary is None:
            return
        await self.primary.demote()
        parts = urlsplit(self.dsn)
        self.proxy.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)

    async def close(self) -> None:
        """Close the pool and the proxy, then drop the demo table (directly)."""
        import asyncpg

        self.proxy.set_mode(PASS)
        try:
            await asyncio.wait_for(self.pool.close(), 2.0)
        except (TimeoutError, OSError):
            self.pool.terminate()
        self.proxy.stop()
        connection = await asyncpg.connect(self.dsn, timeout=2.0)
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {self.table}")
        finally:
            await connection.close()
        if self.primary is not None:
            await asyncio.to_thread(self.primary.stop)


def _on(dsn: str, port: int) -> str:
    """``dsn`` pointed at 127.0.0.1:``port`` (same user and database)."""
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"postgres@127.0.0.1:{port}").geturl()


async def _create_table(dsn: str, table: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=2.0)
    try:
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (client_order_id text PRIMARY KEY, "
            "symbol text NOT NULL, qty integer NOT NULL, created_at timestamptz "
            "NOT NULL DEFAULT now())"
        )
    finally:
        await connection.close()


class OutageDriver:
    """Switches the fault proxies with the phases: they pass traffic while healthy and in
    recovery, reset connections for part of every cycle in the partial outage (flapping), and
    reset every connection in the full outage."""

    def __init__(self, timeline: Timeline, proxies: list[FaultProxy]) -> None:
        self.timeline = timeline
        self.proxies = proxies
        self.cycle = min(1.0, timeline.phase_length / 4)

    def mode_now(self) -> str:
        """The mode the proxies should be in now."""
        phase = self.timeline.phase()
        if phase == FULL_OUTAGE:
            return RESET
        if phase == PARTIAL_OUTAGE:
            into_cycle = (self.timeline.into_phase() % self.cycle) / self.cycle
            return RESET if into_cycle < FLAP_SHARE else PASS
        return PASS

    async def run(self, stop: asyncio.Event) -> None:
        """Apply the mode every 20 ms until ``stop`` is set."""
        mode = PASS
        while not stop.is_set():
            wanted = self.mode_now()
            if wanted != mode:
                mode = wanted
                for proxy in self.proxies:
                    proxy.set_mode(mode)
            await asyncio.sleep(0.02)
