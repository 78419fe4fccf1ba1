"""Transaction functions rerun as a whole (see ``run_in_transaction``): each attempt runs
``fn`` in a transaction of its own, on a connection of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asyncpg import exceptions as pgx

from ..._core.engine import Attempt
from .classify import ROLLED_BACK_MARK
from .failover import FailedOver, failed_over_by, retire
from .runner import Runner

__all__ = ["run_transaction"]

T = TypeVar("T")


async def run_transaction(
    runner: Runner,
    pool: Any,
    fn: Callable[[Any], Awaitable[T]],
    *,
    isolation: str | None,
    readonly: bool,
    deferrable: bool,
) -> T:
    """Run ``fn(connection)`` in a transaction on a connection of ``pool`` through
    ``runner``'s shell, rerun whole while nothing was committed (arguments checked)."""
    failed_over = failed_over_by(runner.shell.engine.classify)

    async def attempt(step: Attempt) -> T:
        async with pool.acquire() as connection:
            transaction = connection.transaction(
                isolation=isolation, readonly=readonly, deferrable=deferrable
            )
            await _guarded(transaction.start(), connection, pool, failed_over)
            try:
                result = await fn(connection)
            except Exception as exc:
                if failed_over(exc):  # the rerun goes to a fresh connection
                    await retire(connection, pool)
                else:
                    await _rollback_quietly(transaction)
                _mark_rolled_back(exc)  # nothing was committed: safe to rerun
                raise
            except BaseException:
                await _rollback_quietly(transaction)
                raise
            try:
                await _guarded(transaction.commit(), connection, pool, failed_over)
            except pgx.PostgresError as exc:
                if exc.sqlstate in ("40001", "40P01"):
                    _mark_rolled_back(exc)  # the server refused the commit and rolled back
                raise
            return result

    shell = runner.shell
    return await shell.run_async(shell.operation("TRANSACTION"), attempt, replayable=False)


async def _guarded(
    step: Awaitable[None], connection: Any, pool: Any, failed_over: FailedOver
) -> None:
    """Await ``step`` (``BEGIN`` or ``COMMIT``), retiring the connection after a failover."""
    try:
        await step
    except Exception as exc:
        if failed_over(exc):
            await retire(connection, pool)
        raise


async def _rollback_quietly(transaction: Any) -> None:
    with contextlib.suppress(Exception):
        await transaction.rollback()


def _mark_rolled_back(error: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, ROLLED_BACK_MARK, True)
