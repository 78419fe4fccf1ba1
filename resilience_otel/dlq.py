"""Dead-letter queue: failed calls kept for inspection and replay.

A call lands here when it exhausted its retries, was rejected by an open breaker, or failed
as PERMANENT or CRITICAL, as the policy's ``dead_letter_on`` says. Entries never carry
credentials: URLs are redacted and headers are not kept.

Durable queues, same protocol: ``RedisStreamDeadLetterQueue`` (a Redis stream, consumer-group
replay) and ``PostgresDeadLetterQueue`` (a table, ``FOR UPDATE SKIP LOCKED`` replay), imported
from this module on first use (they need the ``redis`` / ``asyncpg`` extras).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterReason",
    "InMemoryDeadLetterQueue",
    "ReplayResult",
]


def __getattr__(name: str) -> object:
    # The durable queues need the redis / asyncpg extras: import them only when asked for.
    if name == "RedisStreamDeadLetterQueue":
        from ._dlq_redis import RedisStreamDeadLetterQueue

        return RedisStreamDeadLetterQueue
    if name == "PostgresDeadLetterQueue":
        from ._dlq_postgres import PostgresDeadLetterQueue

        return PostgresDeadLetterQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DeadLetterReason(StrEnum):
    """Why a call was dead-lettered (the ``reason`` label of ``resilience_dead_letters_total``)."""

    RETRIES_EXHAUSTED = "retries_exhausted"
    CIRCUIT_OPEN = "circuit_open"
    PERMANENT = "permanent"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """One failed call.

    Attributes:
        service: the policy's service.
        operation: what was called, e.g. ``"POST https://api.example.com/v2/orders"``
            (credentials and sensitive query values redacted).
        reason: why it was dead-lettered.
        error_class: ``"transient"``, ``"permanent"`` or ``"critical"``.
        error_type: the exception class name or HTTP status code of the last attempt.
        message: a short description of the last failure.
        attempts: attempts made (0 when rejected by an open breaker).
        first_attempt_at / failed_at: wall-clock Unix timestamps, for display.
        trace_id: the active trace's id (32 hex digits) when there was one.
        payload: the request body, only when the client was asked to keep it.
        metadata: small string facts the client adds (method, status code, ...).
        id: a unique identifier (assigned when recorded, or by the queue if empty).
    """

    service: str
    operation: str
    reason: DeadLetterReason
    error_class: str
    error_type: str
    message: str
    attempts: int
    first_attempt_at: float
    failed_at: float
    trace_id: str | None = None
    payload: bytes | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    id: str = ""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What :meth:`DeadLetterQueue.replay` did: how many entries succeeded and were removed,
    and how many failed again and were kept."""

    succeeded: int
    failed: int


@runtime_checkable
class DeadLetterQueue(Protocol):
    """Where failed calls go. Implementations must be thread-safe and bounded."""

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Store ``letter``; when full, drop an entry rather than block or grow.

        Returns:
            The entry dropped to make room (it is counted in metrics), or ``None``.
        """

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Run ``handler`` on each entry; remove those it handled without raising."""


class InMemoryDeadLetterQueue:
    """A bounded in-process queue. When full the oldest entry is dropped and counted.

    Args:
        maxlen: the most entries kept.
        on_drop: called with each dropped entry (telemetry hooks in here).
    """

    def __init__(
        self, maxlen: int = 1000, *, on_drop: Callable[[DeadLetter], None] | None = None
    ) -> None:
        from ._validate import check_int

        self.maxlen = check_int("InMemoryDeadLetterQueue.maxlen", maxlen, 1)
        self._entries: deque[DeadLetter] = deque()
        self._lock = threading.Lock()
        self._next_id = 0
        self._on_drop = on_drop
        self.dropped = 0
        """Entries dropped because the queue was full."""

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Append ``letter`` (numbered if it has no id); drop and return the oldest when full."""
        dropped: DeadLetter | None = None
        with self._lock:
            self._next_id += 1
            stored = letter if letter.id else _with_id(letter, str(self._next_id))
            if len(self._entries) >= self.maxlen:
                dropped = self._entries.popleft()
                self.dropped += 1
            self._entries.append(stored)
        if dropped is not None and self._on_drop is not None:
            self._on_drop(dropped)
        return dropped

    def entries(self) -> list[DeadLetter]:
        """A snapshot of the entries, oldest first."""
        with self._lock:
            return list(self._entries)

    def _take_batch(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._entries)

    def _remove(self, done: set[str]) -> None:
        with self._lock:
            self._entries = deque(e for e in self._entries if e.id not in done)

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Run ``handler`` on each entry (no lock held); remove the entries it handled."""
        done: set[str] = set()
        failed = 0
        for letter in self._take_batch():
            try:
                handler(letter)
            except Exception:
                failed += 1
            else:
                done.add(letter.id)
        self._remove(done)
        return ReplayResult(succeeded=len(done), failed=failed)

    async def areplay(self, handler: Callable[[DeadLetter], Awaitable[object]]) -> ReplayResult:
        """Async :meth:`replay`: awaits ``handler`` on each entry."""
        done: set[str] = set()
        failed = 0
        for letter in self._take_batch():
            try:
                await handler(letter)
            except Exception:
                failed += 1
            else:
                done.add(letter.id)
        self._remove(done)
        return ReplayResult(succeeded=len(done), failed=failed)


def _with_id(letter: DeadLetter, new_id: str) -> DeadLetter:
    from dataclasses import replace

    return replace(letter, id=new_id)
