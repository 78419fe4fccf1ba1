"""A dead-letter queue in a PostgreSQL table: written in the background, replayed row by row
under ``FOR UPDATE SKIP LOCKED`` so concurrent replayers never take the same letter, deleted
only after the handler succeeded."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .._core.exceptions import ConfigError
from .._core.validate import check_int
from .._telemetry.otel import MetricsObserver, Telemetry
from .base import DeadLetter, ReplayResult
from .outbox import Outbox, letter_from_json, letter_to_json

__all__ = ["PostgresDeadLetterQueue"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresDeadLetterQueue:
    """Dead letters in a table that this queue creates; they survive process restarts.

    Replay guarantee. Any number of replayers (tasks, threads, processes) may replay one
    table at once. Each letter is taken in its own transaction with ``SELECT ... FOR UPDATE
    SKIP LOCKED`` and the row lock is held while the handler runs; the row is deleted and the
    transaction committed only after the handler returned. A locked row is invisible to the
    other replayers however long its handler takes (no lease to renew: the lock lives as
    long as the replayer's connection), and a deleted row is never offered again. Hence,
    while replayers live, **each letter is handled exactly once**. A handler that raised
    rolls its transaction back: the letter stays, to be offered again.

    Across crashes the guarantee is **at least once**: if a replayer dies, or loses its
    connection, mid-handler (or after the handler, before the commit), PostgreSQL releases
    the lock and the letter is handled again by the next replay. The same happens if the
    server ends the session, e.g. through ``idle_in_transaction_session_timeout``: set it
    above your longest handler (or leave it off, the default) for replay connections.

    The letter column is ``json`` rather than ``jsonb``: ``jsonb`` refuses the NUL characters
    an error message may carry, and one refused letter would hold up every letter behind it.

    Args:
        dsn: the database to use (``postgresql://user@host:5432/db``).
        table: the table name (created if missing), a plain identifier.
        maxlen: rows kept (>= 1); older rows are deleted, counted in ``trimmed`` and in the
            ``resilience.dead_letters.dropped`` metric. Rows being replayed are not trimmed.
        buffer: letters held in memory while the database is slow or down (>= 1). Letters
            still unstored when :meth:`close` gives up are counted as dropped.
        meter_provider: where the dropped-letters metric goes (default: global).

    Raises:
        ConfigError: an argument is out of range; the message names it.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "resilience_dead_letters",
        maxlen: int = 100_000,
        buffer: int = 10_000,
        meter_provider: Any = None,
    ) -> None:
        cls = "PostgresDeadLetterQueue"
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError(
                f"{cls}.dsn must be a non-empty string, got {dsn!r}", field=f"{cls}.dsn"
            )
        if not isinstance(table, str) or not _IDENTIFIER.match(table):
            raise ConfigError(
                f"{cls}.table must be a plain identifier (a letter or _, then letters, digits "
                f"or _; at most 63), got {table!r}",
                field=f"{cls}.table",
            )
        self.dsn = dsn
        self.table = table
        self.maxlen = check_int(f"{cls}.maxlen", maxlen, 1)
        check_int(f"{cls}.buffer", buffer, 1)
        self.trimmed = 0
        """Rows deleted because the table reached ``maxlen``."""
        self._metrics = MetricsObserver(Telemetry.get(None, meter_provider))
        self._loop = asyncio.new_event_loop()  # the writer thread's own, closed by it at the end
        self._connection: Any = None
        self._outbox = Outbox(
            self._write,
            name=f"dead letters {table}",
            maxlen=buffer,
            on_lost=lambda letter: self._metrics.dead_letter_dropped(letter.service),
            on_stop=self._stop_writer,
        )

    @property
    def dropped(self) -> int:
        """Letters lost: dropped from the in-memory buffer (full, or unstored at close) plus
        trimmed from the table."""
        return self._outbox.dropped + self.trimmed

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Queue ``letter`` for the table without waiting on the database."""
        return self._outbox.put(letter)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until buffered letters are in the table."""
        return self._outbox.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to ``timeout`` seconds and stop the writer (which then closes its
        connection); never raises.

        Returns ``False`` if letters could not be stored: those are counted in ``dropped``,
        the ``resilience.dead_letters.dropped`` metric and an error log line.
        """
        return self._outbox.close(timeout)

    # -- writing (on the writer thread) ----------------------------------------------------------
    def _write(self, batch: list[DeadLetter]) -> None:
        self._loop.run_until_complete(self._insert(batch))

    def _stop_writer(self) -> None:
        # On the writer thread, the only one that runs its loop: closing it elsewhere could
        # find it running a write that outlived close().
        try:
            if self._connection is not None:
                self._loop.run_until_complete(self._connection.close(timeout=1.0))
        except Exception:  # the connection is being dropped anyway
            self._connection.terminate()
        finally:
            self._loop.close()

    async def _insert(self, batch: list[DeadLetter]) -> None:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self.dsn, timeout=5)
            await self._create(self._connection)
        connection = self._connection
        async with connection.transaction():
            await connection.executemany(
                f"INSERT INTO {self.table} (service, reason, letter) VALUES ($1, $2, $3)",  # noqa: S608
                [(x.service, x.reason.value, letter_to_json(x)) for x in batch],
            )
            # rows a replayer holds are being handled: skip them rather than wait on them
            trimmed = await connection.fetch(
                f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table} "  # noqa: S608
                f"ORDER BY id DESC OFFSET $1 FOR UPDATE SKIP LOCKED) RETURNING service",
                self.maxlen,
            )
        for row in trimmed:
            self.trimmed += 1
            self._metrics.dead_letter_dropped(row["service"])

    async def _create(self, connection: Any) -> None:
        # CREATE TABLE IF NOT EXISTS is not safe when run concurrently (a unique violation
        # on pg_type): replayers and writers starting together take turns.
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "id bigserial PRIMARY KEY, service text NOT NULL, reason text NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT now(), letter json NOT NULL)"
            )

    # -- replay ------------------------------------------------------------------------------------
    async def areplay(self, handler: Callable[[DeadLetter], Awaitable[object]]) -> ReplayResult:
        """Run ``handler`` on each letter, oldest first; delete the rows it handled.

        Each letter is locked (``FOR UPDATE SKIP LOCKED``) while its handler runs, so several
        replayers can work at once; a letter whose handler raised stays in the table. See the
        class docstring for the guarantee.
        """
        await asyncio.to_thread(self.flush)
        connection = await asyncpg.connect(self.dsn, timeout=5)
        succeeded = failed = 0
        last = 0
        try:
            await self._create(connection)
            while True:
                transaction = connection.transaction()
                await transaction.start()
                row = await connection.fetchrow(
                    f"SELECT id, letter::text AS letter FROM {self.table} WHERE id > $1 "  # noqa: S608
                    "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    last,
                )
                if row is None:
                    await transaction.rollback()
                    break
                last = row["id"]
                try:
                    await handler(letter_from_json(row["letter"]))
                except Exception:
                    await transaction.rollback()
                    failed += 1
                    continue
                await connection.execute(f"DELETE FROM {self.table} WHERE id = $1", last)  # noqa: S608
                await transaction.commit()
                succeeded += 1
        finally:
            await connection.close()
        return ReplayResult(succeeded=succeeded, failed=failed)

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Sync :meth:`areplay` (runs it on a private event loop in a worker thread)."""

        async def call(letter: DeadLetter) -> object:
            return await asyncio.to_thread(handler, letter)

        outcome: list[ReplayResult | BaseException] = []

        def work() -> None:
            try:
                outcome.append(asyncio.run(self.areplay(call)))
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]
