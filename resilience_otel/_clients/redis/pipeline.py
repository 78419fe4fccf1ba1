"""Pipelines and transactions of an instrumented Redis client, sync and async.

``pipe.execute()`` runs as one operation (``PIPELINE``, or ``MULTI`` for a transaction),
retried as a whole only when every queued command may be resent. While a pipeline WATCHes
keys (``pipe.watch(k)``), redis-py runs commands at once on the pipeline's own connection
(``pipe.get(k)`` before ``pipe.multi()``): each runs as its own operation with one attempt,
as does the ``execute()`` that ends the WATCH, because a reconnect loses the WATCH (a resend
would run unguarded by it). A pipeline that is not a transaction and holds blocking commands
may take their block times on top of the attempt timeout (inside ``MULTI`` nothing blocks).

A failover (``READONLY``) refuses a whole transaction (``EXECABORT``: nothing ran), so it is
resent like a single command. A plain pipeline's commands run one by one: those a replica
accepts (reads, ``PUBLISH``) or those that ran before a demotion took effect did run, so its
failure counts as sent (resent only when every command may be).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from ..._core.classify import Failure
from ..._core.engine import Classifier
from ..._telemetry import semconv as sc
from .blocking import pipeline_block
from .deadline import bound_commands
from .guard import Guard, in_single_try, retiring_async

__all__ = ["guard_pipeline_async", "guard_pipeline_sync", "honour_pipeline_marks"]

# Set on the error of a plain (non-transaction) pipeline: some of its commands may have run.
_RAN_MARK = "_resilience_pipeline_ran"


def _mark_ran(error: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _RAN_MARK, True)


def honour_pipeline_marks(classify: Classifier) -> Classifier:
    """``classify``, with the failure of a plain pipeline counted as sent (see the module
    docstring): a refusal of one of its commands says nothing about the others."""

    def classify_pipeline(value: Any, error: Exception | None) -> Failure | None:
        failure = classify(value, error)
        if failure is None or failure.sent or not getattr(error, _RAN_MARK, False):
            return failure
        return dataclasses.replace(failure, sent=True)

    return classify_pipeline


def _explicit(pipe: Any) -> bool:
    """Whether ``pipe.multi()`` made a plain pipeline a transaction."""
    return getattr(pipe, "explicit_transaction", False) is True


def _block_of(guard: Guard, args: tuple[Any, ...]) -> float | None:
    block = guard.command(args)[2]
    return None if block is None else block(args)


def guard_pipeline_sync(pipe: Any, guard: Guard) -> None:
    """Guard ``pipe`` (a sync pipeline of ``guard``'s client), in place."""
    execute = pipe.execute
    immediate = pipe.immediate_execute_command
    if guard.single_try:
        execute, immediate = in_single_try(execute), in_single_try(immediate)
    bound_commands(pipe, lambda conn, error: guard.retire_sync(pipe, error, conn))

    def guarded_immediate(*args: Any, **options: Any) -> Any:
        op = guard.command(args)[0]
        return guard.run_sync(
            op, immediate, args, options, replayable=False, block=_block_of(guard, args),
            once=True,
        )  # fmt: skip

    def guarded_execute(raise_on_error: bool = True) -> Any:
        stack = list(pipe.command_stack)  # execute() empties it; each attempt needs it

        # Read before execute(): its reset() clears explicit_transaction (set by multi()).
        transaction = getattr(pipe, "transaction", False) is True or _explicit(pipe)

        def run(raise_on_error: bool) -> Any:
            pipe.command_stack = list(stack)
            try:
                return execute(raise_on_error)
            except Exception as error:
                if not transaction:
                    _mark_ran(error)
                raise

        op, replayable, block, extra = _describe(guard, stack, transaction)
        return guard.run_sync(
            op, run, (raise_on_error,), {}, replayable=replayable, block=block,
            once=bool(pipe.watching), extra=extra,
        )  # fmt: skip

    pipe.immediate_execute_command = guarded_immediate
    pipe.execute = guarded_execute


def guard_pipeline_async(pipe: Any, guard: Guard) -> None:
    """Guard ``pipe`` (a ``redis.asyncio`` pipeline of ``guard``'s client), in place."""
    single = guard.single_try
    execute = retiring_async(pipe.execute, guard, pipe, single=single)
    immediate = retiring_async(pipe.immediate_execute_command, guard, pipe, single=single)

    async def guarded_immediate(*args: Any, **options: Any) -> Any:
        op = guard.command(args)[0]
        return await guard.run_async(
            op, immediate, args, options, replayable=False, block=_block_of(guard, args),
            once=True,
        )  # fmt: skip

    async def guarded_execute(raise_on_error: bool = True) -> Any:
        stack = list(pipe.command_stack)  # execute() empties it; each attempt needs it

        transaction = pipe.is_transaction is True or _explicit(pipe)  # before execute()

        async def run(raise_on_error: bool) -> Any:
            pipe.command_stack = list(stack)
            try:
                return await execute(raise_on_error)
            except Exception as error:
                if not transaction:
                    _mark_ran(error)
                raise

        op, replayable, block, extra = _describe(guard, stack, transaction)
        return await guard.run_async(
            op, run, (raise_on_error,), {}, replayable=replayable, block=block,
            once=bool(pipe.watching), extra=extra,
        )  # fmt: skip

    pipe.immediate_execute_command = guarded_immediate
    pipe.execute = guarded_execute


def _describe(
    guard: Guard, stack: list[Any], transaction: bool
) -> tuple[Any, bool, float | None, dict[str, Any]]:
    """A pipeline's operation, whether it may be resent, how long it may block, and its
    span attributes."""
    commands = [(guard.command(args), args) for args, _ in stack]
    names = [command[0].name for command, _ in commands]
    block = None
    if not transaction:
        block = pipeline_block(
            [(name, args) for name, (_, args) in zip(names, commands, strict=True)]
        )
    op = guard.shell.operation("MULTI" if transaction else "PIPELINE")
    return op, guard.all_replayable(names), block, {sc.DB_OPERATION_BATCH_SIZE: len(stack)}
