"""The implementation behind :mod:`resilience_otel.dlq` (documented there)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._core.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterReason",
    "InMemoryDeadLetterQueue",
    "ReplayResult",
    "check_queue",
]


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
        error_class: ``"transient"``, ``"permanent"``, ``"critical"`` or ``"failover"``.
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
    """Where failed calls go. Implementations must be thread-safe and bounded, and replays
    running at once must never hand one entry to two handlers."""

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Store ``letter``; when full, drop an entry rather than block or grow.

        Returns:
            The entry dropped to make room (it is counted in metrics), or ``None``.
        """

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Run ``handler`` on each entry; remove those it handled without raising."""


class InMemoryDeadLetterQueue:
    """A bounded in-process queue. When full the oldest entry is dropped and counted.

    Replays may run at once (threads or tasks): each takes a letter under the queue's lock
    before its handler runs, so no letter is handled by two replays, and one whose handler
    succeeded is removed and never offered again. Nothing survives the process.

    Args:
        maxlen: the most entries kept.
        on_drop: called with each dropped entry (telemetry hooks in here).
    """

    def __init__(
        self, maxlen: int = 1000, *, on_drop: Callable[[DeadLetter], None] | None = None
    ) -> None:
        from .._core.validate import check_int

        self.maxlen = check_int("InMemoryDeadLetterQueue.maxlen", maxlen, 1)
        # keyed by an internal sequence number: unique even if callers reuse letter ids
        self._entries: OrderedDict[int, DeadLetter] = OrderedDict()
        self._claimed: set[int] = set()  # taken by a running replay
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
                key, dropped = self._entries.popitem(last=False)
                self._claimed.discard(key)
                self.dropped += 1
            self._entries[self._next_id] = stored
        if dropped is not None and self._on_drop is not None:
            self._on_drop(dropped)
        return dropped

    def entries(self) -> list[DeadLetter]:
        """A snapshot of the entries, oldest first (those being replayed included)."""
        with self._lock:
            return list(self._entries.values())

    def _keys(self) -> list[int]:
        with self._lock:
            return list(self._entries)

    def _claim(self, key: int) -> DeadLetter | None:
        """The letter under ``key`` if it is still queued and no other replay holds it."""
        with self._lock:
            letter = self._entries.get(key)
            if letter is None or key in self._claimed:
                return None
            self._claimed.add(key)
            return letter

    def _settle(self, key: int, *, handled: bool) -> None:
        with self._lock:
            self._claimed.discard(key)
            if handled:
                self._entries.pop(key, None)

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Run ``handler`` on each entry queued when the replay starts (no lock held while it
        runs); remove the entries it handled. Entries another replay holds are skipped."""
        succeeded = failed = 0
        for key in self._keys():
            if (letter := self._claim(key)) is None:
                continue
            handled = False
            try:
                handler(letter)
                handled = True
            except Exception:
                failed += 1
            finally:  # also on cancellation: the letter goes back to the queue
                self._settle(key, handled=handled)
            succeeded += handled
        return ReplayResult(succeeded=succeeded, failed=failed)

    async def areplay(self, handler: Callable[[DeadLetter], Awaitable[object]]) -> ReplayResult:
        """Async :meth:`replay`: awaits ``handler`` on each entry."""
        succeeded = failed = 0
        for key in self._keys():
            if (letter := self._claim(key)) is None:
                continue
            handled = False
            try:
                await handler(letter)
                handled = True
            except Exception:
                failed += 1
            finally:  # also on cancellation: the letter goes back to the queue
                self._settle(key, handled=handled)
            succeeded += handled
        return ReplayResult(succeeded=succeeded, failed=failed)


def check_queue(value: object, name: str = "dead_letters") -> DeadLetterQueue | None:
    """Return ``value`` if it is a dead-letter queue (or ``None``, meaning no queue).

    Clients call this on their ``dead_letters=`` argument, so a wrong value fails at
    construction rather than on the first failed call.

    Raises:
        ConfigError: ``value`` is not an object with ``put()`` and ``replay()`` (a class
            instead of an instance is refused too); the message names ``name`` and the value.
    """
    if value is None or (isinstance(value, DeadLetterQueue) and not isinstance(value, type)):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
    raise ConfigError(
        f"{name} must be a dead-letter queue or None, got {shown} ({type(value).__name__}); "
        "a queue is an instance with put() and replay(), such as InMemoryDeadLetterQueue()",
        field=name,
    )


def _with_id(letter: DeadLetter, new_id: str) -> DeadLetter:
    from dataclasses import replace

    return replace(letter, id=new_id)
