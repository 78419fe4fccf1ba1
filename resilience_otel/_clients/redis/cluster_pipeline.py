"""Pipelines of an instrumented Redis Cluster client, sync and async.

``pipe.execute()`` runs as one operation (``PIPELINE``, or ``MULTI`` for a transaction),
retried as a whole only when every queued command may be resent. redis-py empties the queue
(and a transaction's slot set) when ``execute()`` ends, so each attempt puts them back first.
A transaction that WATCHes keys makes one attempt: a resend would run unguarded by the WATCH.
Redirects and ``TRYAGAIN`` inside the pipeline are followed by redis-py, as for commands.
"""

from __future__ import annotations

from typing import Any

from ..._telemetry import semconv as sc
from .guard import Guard, in_single_try, in_single_try_async

__all__ = ["guard_cluster_pipeline"]


def _saved(strategy: Any) -> dict[str, Any]:
    """What ``execute()`` clears and a resend needs: the queue and a transaction's slots."""
    saved: dict[str, Any] = {"_command_queue": list(strategy._command_queue)}
    slots = getattr(strategy, "_pipeline_slots", None)
    if slots is not None:
        saved["_pipeline_slots"] = set(slots)
    return saved


def _restore(strategy: Any, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        setattr(strategy, name, value.copy())


def _describe(guard: Guard, pipe: Any, strategy: Any) -> tuple[Any, bool, bool, dict[str, Any]]:
    """The operation, whether it may be resent, whether it WATCHes, and span attributes."""
    stack = strategy._command_queue
    names = [guard.command(tuple(command.args))[0].name for command in stack]
    transaction = type(strategy).__name__ == "TransactionStrategy"
    watching = bool(getattr(strategy, "_watching", False))
    op = guard.shell.operation("MULTI" if transaction else "PIPELINE")
    return op, guard.all_replayable(names), watching, {sc.DB_OPERATION_BATCH_SIZE: len(stack)}


def guard_cluster_pipeline(pipe: Any, guard: Guard, *, asynchronous: bool) -> None:
    """Guard ``pipe`` (a pipeline of ``guard``'s cluster client), in place."""
    strategy = pipe._execution_strategy
    if asynchronous:
        _guard_async(pipe, strategy, guard)
    else:
        _guard_sync(pipe, strategy, guard)


def _guard_sync(pipe: Any, strategy: Any, guard: Guard) -> None:
    execute = pipe.execute
    if guard.single_try:
        execute = in_single_try(execute)

    def guarded_execute(raise_on_error: bool = True) -> Any:
        if not strategy._command_queue:
            return execute(raise_on_error)
        saved = _saved(strategy)
        op, replayable, watching, extra = _describe(guard, pipe, strategy)

        def run(raise_on_error: bool) -> Any:
            _restore(strategy, saved)
            return execute(raise_on_error)

        return guard.run_sync(
            op, run, (raise_on_error,), {}, replayable=replayable, once=watching, extra=extra
        )

    pipe.execute = guarded_execute


def _guard_async(pipe: Any, strategy: Any, guard: Guard) -> None:
    execute = pipe.execute
    if guard.single_try:
        execute = in_single_try_async(execute)

    async def guarded_execute(raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        if not strategy._command_queue:
            return await execute(raise_on_error, allow_redirections)
        saved = _saved(strategy)
        op, replayable, watching, extra = _describe(guard, pipe, strategy)

        async def run(raise_on_error: bool) -> Any:
            _restore(strategy, saved)
            return await execute(raise_on_error, allow_redirections)

        return await guard.run_async(
            op, run, (raise_on_error,), {}, replayable=replayable, once=watching, extra=extra
        )

    pipe.execute = guarded_execute
