"""How the asyncpg shell runs statements: each statement analysed once (operation, whether it
is safe to resend, its scrubbed text), and ``COPY ... TO`` outputs watched, so a COPY is never
resent once rows reached the caller."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import stat
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from ..._core.classify import Failure
from ..._core.engine import Attempt, Classifier
from ..._core.exceptions import ConfigError
from ..._telemetry import semconv as sc
from ..dbshell import DbShell, Operation
from .sql import analyze, analyze_and_scrub

__all__ = ["CopyOutput", "Runner", "honour_copy_marks", "trusted_functions"]

T = TypeVar("T")

# Set on an error of a COPY attempt: True when rows may have reached the caller (never resend),
# False when none did and the statement is read-only (resending repeats nothing).
_SENT_MARK = "_resilience_copy_sent"


def trusted_functions(value: bool | Collection[str]) -> bool | frozenset[str]:
    """``wrap(read_only_functions=...)`` checked: ``True``, ``False`` or function names
    (lower-cased: names compare case-insensitively)."""
    if isinstance(value, bool):
        return value
    # One string would be split into letters: refused like anything else that is not names.
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Collection)
        or not all(isinstance(name, str) and name.strip() for name in value)
    ):
        raise ConfigError(
            "wrap(read_only_functions=...) must be True, False or a collection of function "
            f"names such as {{'get_price', 'shop.find_order'}}, got {value!r}",
            field="read_only_functions",
        )
    return frozenset(name.strip().lower() for name in value)


class Runner:
    """A shell plus the query-text policy; shared by a pool and the connections it lends.

    Args:
        record_query: put each statement's scrubbed text on its span.
        read_only_functions: what :meth:`resilience_otel._sql.Analysis.read_only` trusts.
    """

    _MAX_STATEMENTS = 1024

    def __init__(
        self,
        shell: DbShell,
        record_query: bool,
        read_only_functions: bool | frozenset[str] = False,
    ) -> None:
        self.shell = shell
        self.record_query = record_query
        self.read_only_functions = read_only_functions
        # query -> (operation, safe to resend, span attributes for the query text): statements
        # are mostly constants, so each is analysed once. Bounded: cleared when full (queries
        # built with literals in them).
        self._statements: dict[str, tuple[Operation, bool, dict[str, Any] | None]] = {}

    def statement(self, query: str) -> tuple[Operation, bool, dict[str, Any] | None]:
        """The operation of ``query``, whether it is safe to resend after reaching the
        server, and its ``db.query.text`` attribute (only with ``record_query``)."""
        known = self._statements.get(query)
        if known is None:
            if self.record_query:
                analysis, scrubbed = analyze_and_scrub(query)
                text: dict[str, Any] | None = {sc.DB_QUERY_TEXT: scrubbed}
            else:
                analysis, text = analyze(query), None
            read_only = analysis.read_only(self.read_only_functions)
            known = (self.shell.operation(analysis.operation), read_only, text)
            if len(self._statements) >= self._MAX_STATEMENTS:
                self._statements.clear()
            self._statements[query] = known
        return known

    def run(
        self,
        query: str,
        attempt: Callable[[Attempt], Awaitable[T]],
        *,
        idempotent: bool,
        in_transaction: bool = False,
        operation: str | None = None,
    ) -> Awaitable[T]:
        """Run ``query``'s attempts through the shell (to await)."""
        op, read_only, extra = self.statement(query)
        if operation is not None:
            op = self.shell.operation(operation)
        return self.shell.run_async(
            op,
            attempt,
            replayable=idempotent or read_only,
            extra=extra,
            retry=not in_transaction,
        )

    def copy_out(
        self,
        query: str | None,
        copy: Callable[[Any], Awaitable[T]],
        output: Any,
        *,
        in_transaction: bool,
    ) -> Awaitable[T]:
        """Run ``copy(target)``, a ``COPY ... TO`` writing to ``output`` (``query`` is its
        statement, ``None`` for a whole table): resent after a failure only while no output
        reached the caller and the statement is read-only."""
        if query is None:
            read_only, extra = True, None
        else:
            _, read_only, extra = self.statement(query)
        watch = CopyOutput(output)

        async def attempt(_: Attempt) -> T:
            try:
                return await copy(watch.target)
            except BaseException as exc:  # marked and raised again; a timeout comes as a cancel
                watch.mark(exc, read_only)
                raise

        shell = self.shell
        return shell.run_async(
            shell.operation("COPY"), attempt, replayable=False, extra=extra,
            retry=not in_transaction,
        )  # fmt: skip


class CopyOutput:
    """A ``COPY ... TO`` output (path, file-like or coroutine function, as asyncpg takes it)
    that notices the first rows handed to it; one per call, shared by its attempts."""

    __slots__ = ("_output", "_path", "delivered", "target")

    def __init__(self, output: Any) -> None:
        self._output = output
        self.delivered = False
        """Whether any rows were handed to the output (by any attempt)."""
        self._path: str | bytes | None
        try:
            self._path = os.fspath(output)
        except TypeError:
            self._path = None
        self.target: Any
        """What to give asyncpg as ``output``."""
        if self._path is not None:
            self.target = output  # asyncpg opens it itself, truncating it, on every attempt
        elif hasattr(output, "write"):
            self.target = self._write_file
        elif callable(output):
            self.target = self._write_call
        else:
            self.target = output  # asyncpg raises its own TypeError

    async def _write_call(self, data: bytes) -> None:
        self.delivered = True
        await self._output(data)

    async def _write_file(self, data: bytes) -> None:
        self.delivered = True
        # What asyncpg does with a file-like output: the blocking write in the default executor.
        await asyncio.get_running_loop().run_in_executor(None, self._output.write, data)

    def mark(self, error: BaseException, read_only: bool) -> None:
        """Tell the classifier whether resending could repeat rows (see
        :func:`honour_copy_marks`); nothing when the statement is not read-only and no rows
        left, so the classifier alone decides."""
        if self._reached_caller():
            sent = True
        elif read_only:
            sent = False
        else:
            return
        with contextlib.suppress(AttributeError, TypeError):
            setattr(error, _SENT_MARK, sent)

    def _reached_caller(self) -> bool:
        if self._path is None:
            return self.delivered
        # A path is reopened with truncation on each attempt: a resend rewrites a regular file
        # from its start. Anything else (a FIFO, a device) may have passed rows on already.
        try:
            return not stat.S_ISREG(os.stat(self._path).st_mode)
        except FileNotFoundError:
            return False  # never opened: nothing was written
        except OSError:
            return True


def honour_copy_marks(classify: Classifier) -> Classifier:
    """``classify``, overruled on whether a failed ``COPY ... TO`` had an effect by what its
    :class:`CopyOutput` saw: rows reached the caller (sent: never resent), or none did and
    the statement is read-only (no effect: resent like a failure before sending)."""

    def classify_copy(value: Any, error: Exception | None) -> Failure | None:
        failure = classify(value, error)
        if failure is None or error is None:
            return failure
        sent = _mark_of(error)
        if sent is None or sent is failure.sent:
            return failure
        return dataclasses.replace(failure, sent=sent)

    return classify_copy


def _mark_of(error: BaseException) -> bool | None:
    """The mark on ``error`` or on what it was raised from: a timed-out attempt surfaces as a
    ``TimeoutError`` raised from the attempt's cancellation (through a few layers)."""
    current: BaseException | None = error
    for _ in range(4):
        if current is None:
            return None
        sent = getattr(current, _SENT_MARK, None)
        if sent is not None:
            return bool(sent)
        current = current.__cause__
    return None
