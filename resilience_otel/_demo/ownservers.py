"""Servers the full demo starts for its failover phase: a Redis primary and replica for the
cache, and a PostgreSQL primary for the orders database. Each is optional: without its
binaries, or when it fails to start, that side simply does not fail over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .pgprimary import PostgresPrimary, postgres_binaries
from .replicas import RedisPair, redis_server_binary

if TYPE_CHECKING:
    from .backends import Backends

__all__ = ["start_own_servers"]


async def start_own_servers(
    backends: Backends, say: Callable[[str], None]
) -> tuple[RedisPair | None, PostgresPrimary | None]:
    """Start what the found backends allow, at once; says what each side got."""
    pair, primary = await asyncio.gather(
        _redis_pair(say) if backends.redis is not None else _none_pair(),
        _pg_primary(say) if backends.postgres is not None else _none_primary(),
    )
    return pair, primary


async def _none_pair() -> RedisPair | None:
    return None


async def _none_primary() -> PostgresPrimary | None:
    return None


async def _redis_pair(say: Callable[[str], None]) -> RedisPair | None:
    binary = redis_server_binary()
    if binary is None:
        say("failover of cache: skipped (no redis-server binary for a replica pair)")
        return None
    try:
        pair = await asyncio.to_thread(RedisPair, binary)
    except Exception as exc:  # the rest of the demo does not need it
        say(f"failover of cache: skipped ({type(exc).__name__}: {exc})")
        return None
    say(f"cache: a Redis primary ({pair.ports[0]}) and replica ({pair.ports[1]}) of its own, "
        "for the failover phase")  # fmt: skip
    return pair


async def _pg_primary(say: Callable[[str], None]) -> PostgresPrimary | None:
    bindir = postgres_binaries()
    if bindir is None:
        say("failover of orders-db: skipped (no PostgreSQL server binaries)")
        return None
    primary = PostgresPrimary(bindir)
    try:
        await asyncio.to_thread(primary.start)
    except Exception as exc:
        await asyncio.to_thread(primary.stop)
        say(f"failover of orders-db: skipped ({type(exc).__name__}: {exc})")
        return None
    say(f"orders-db: a PostgreSQL primary ({primary.port}) of its own until the failover phase")
    return primary
