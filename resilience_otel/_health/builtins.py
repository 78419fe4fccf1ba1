"""The built-in active checks: HTTP GET, Redis PING, PostgreSQL ``SELECT 1``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from .checks import HealthCheck, client_check_arg, http_check_args

__all__ = ["http_check", "postgres_check", "redis_check"]


def http_check(url: str, *, expect: Iterable[int] = range(200, 400)) -> HealthCheck:
    """GET ``url`` (plain httpx, no retries); healthy when the status is in ``expect``."""
    import httpx

    allowed = http_check_args(url, expect)
    # Loading the CA bundle takes tens of ms of CPU: do it once here, not on the loop per run.
    ssl_context = httpx.create_ssl_context()

    async def check() -> bool:
        async with httpx.AsyncClient(verify=ssl_context) as client:
            response = await client.get(url)
        return response.status_code in allowed

    return check


def redis_check(client: Any) -> HealthCheck:
    """PING a ``redis.Redis`` or ``redis.asyncio.Redis`` client."""
    client_check_arg("redis_check(client=...)", client, "ping", "a redis.Redis client")
    # redis.asyncio's ping() is a plain def returning a coroutine; its execute_command is async.
    if inspect.iscoroutinefunction(client.ping) or inspect.iscoroutinefunction(
        getattr(client, "execute_command", None)
    ):

        async def check_async() -> bool:
            return bool(await client.ping())

        return check_async

    def check_sync() -> bool:
        return bool(client.ping())

    return check_sync


def postgres_check(target: Any) -> HealthCheck:
    """``SELECT 1`` on an asyncpg pool or connection (wrapped or raw), or a DSN string."""
    if not isinstance(target, str):
        client_check_arg(
            "postgres_check(target=...)", target, "fetchval", "an asyncpg pool or connection"
        )

    async def check() -> bool:
        if isinstance(target, str):
            import asyncpg

            connection = await asyncpg.connect(target)
            try:
                return bool(await connection.fetchval("SELECT 1") == 1)
            finally:
                await connection.close()
        raw = getattr(target, "raw", target)
        return bool(await raw.fetchval("SELECT 1") == 1)

    return check
