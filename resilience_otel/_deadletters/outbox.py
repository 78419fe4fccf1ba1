"""The bounded hand-off between the call path and a durable dead-letter store.

``put`` never blocks on I/O: it appends to a bounded buffer (dropping, counting and returning
the oldest entry when full) and a background thread writes batches to the store, keeping
them buffered and retrying while the store is unreachable.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .._core.validate import check_int
from .._telemetry.errortext import error_text
from .base import DeadLetter, DeadLetterReason

__all__ = ["Outbox", "letter_from_json", "letter_to_json"]

_log = logging.getLogger("resilience_otel")


def letter_to_json(letter: DeadLetter) -> str:
    """Serialise a dead letter (the payload as base64)."""
    data: dict[str, Any] = {
        "service": letter.service,
        "operation": letter.operation,
        "reason": letter.reason.value,
        "error_class": letter.error_class,
        "error_type": letter.error_type,
        "message": letter.message,
        "attempts": letter.attempts,
        "first_attempt_at": letter.first_attempt_at,
        "failed_at": letter.failed_at,
        "trace_id": letter.trace_id,
        "payload": None if letter.payload is None else base64.b64encode(letter.payload).decode(),
        "metadata": dict(letter.metadata),
        "id": letter.id,
    }
    return json.dumps(data, separators=(",", ":"))


def letter_from_json(text: str | bytes, *, id: str | None = None) -> DeadLetter:
    """The inverse of :func:`letter_to_json`; ``id`` is used when none was stored."""
    data = json.loads(text)
    payload = data.get("payload")
    metadata: Mapping[str, str] = MappingProxyType(dict(data.get("metadata") or {}))
    return DeadLetter(
        service=data["service"],
        operation=data["operation"],
        reason=DeadLetterReason(data["reason"]),
        error_class=data["error_class"],
        error_type=data["error_type"],
        message=data["message"],
        attempts=int(data["attempts"]),
        first_attempt_at=float(data["first_attempt_at"]),
        failed_at=float(data["failed_at"]),
        trace_id=data.get("trace_id"),
        payload=None if payload is None else base64.b64decode(payload),
        metadata=metadata,
        id=str(data.get("id") or id or ""),
    )


class Outbox:
    """A bounded buffer drained by a daemon thread into ``write``.

    Every letter put is either stored, handed back by :meth:`put` (dropped to make room, or
    put after :meth:`close`), or counted in ``dropped`` and passed to ``on_lost`` when
    :meth:`close` gives up on it: none disappears uncounted while the process lives.

    Args:
        write: stores a batch; raising keeps what is left of the batch buffered for another
            try (a writer that stores letters one by one deletes each stored one from the
            front of the list first, so none is written twice).
        name: for log messages.
        maxlen: the most letters buffered while the store is slow or down.
        retry_interval: seconds between tries while the store fails.
        on_lost: called with each letter :meth:`close` could not store (e.g. to count it in
            a metric); letters handed back by :meth:`put` are the caller's to count.
        on_stop: called on the writer thread when it ends (to release its connection).
    """

    def __init__(
        self,
        write: Callable[[list[DeadLetter]], None],
        *,
        name: str,
        maxlen: int = 10_000,
        retry_interval: float = 0.5,
        on_lost: Callable[[DeadLetter], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._write = write
        self._name = name
        self._maxlen = check_int("Outbox.maxlen", maxlen, 1)
        self._retry_interval = retry_interval
        self._on_lost = on_lost
        self._on_stop = on_stop
        self._buffer: deque[DeadLetter] = deque()
        self._cond = threading.Condition()
        self._batch: list[DeadLetter] = []  # being written; a writer may shrink it as it stores
        self._abandoned = False  # the batch in flight was already counted as lost
        self._closed = False
        self._failing = False
        self.dropped = 0
        """Letters dropped: the buffer was full, or :meth:`close` could not store them."""
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._thread.start()

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Buffer ``letter``; returns the oldest letter if it had to be dropped (or ``letter``
        itself after :meth:`close`: nothing would write it)."""
        dropped = None
        with self._cond:
            if self._closed:
                self.dropped += 1
                return letter
            if len(self._buffer) >= self._maxlen:
                dropped = self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(letter)
            self._cond.notify()
        return dropped

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything buffered is stored; ``False`` if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._buffer or self._batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to ``timeout`` seconds, then stop the writer. Never raises.

        Letters still unstored then (buffered, or in a write that has not returned) are
        counted in ``dropped``, passed to ``on_lost`` and logged. A write still hanging is
        counted at once, even though it might land later.

        Returns:
            ``True`` if every letter was stored.
        """
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            lost = list(self._buffer)
            self._buffer.clear()
            self._cond.notify_all()
        # a writer between tries stops at once; one inside write() gets a moment to finish
        self._thread.join(max(deadline - time.monotonic(), 0.2))
        with self._cond:
            if self._batch and not self._abandoned:
                self._abandoned = True
                lost += self._batch
        self._count_lost(lost)
        return flushed and not lost

    def _count_lost(self, lost: list[DeadLetter]) -> None:
        if not lost:
            return
        with self._cond:
            self.dropped += len(lost)
        _log.error(
            "%s: closed with %d dead letters not stored (store unreachable); counted as dropped",
            self._name,
            len(lost),
        )
        if self._on_lost is None:
            return
        try:
            for letter in lost:
                self._on_lost(letter)
        except Exception:
            _log.exception("%s: on_lost hook failed", self._name)

    def _take(self) -> list[DeadLetter] | None:
        with self._cond:
            while not self._buffer and not self._closed:
                self._cond.wait()
            if self._closed:  # close() took over what was buffered
                return None
            size = min(len(self._buffer), 100)
            self._batch = [self._buffer.popleft() for _ in range(size)]
            return self._batch

    def _run(self) -> None:
        try:
            while (batch := self._take()) is not None:
                try:
                    self._write(batch)
                except Exception as exc:
                    if not self._failed(batch, exc):
                        return
                    continue
                self._failing = False
                with self._cond:
                    self._batch = []
                    self._cond.notify_all()
        finally:
            if self._on_stop is not None:
                self._on_stop()

    def _failed(self, batch: list[DeadLetter], exc: Exception) -> bool:
        """Put what is left of ``batch`` back and wait to retry; ``False`` once closed."""
        if not self._failing:
            _log.warning("%s: store unreachable (%s); buffering", self._name, error_text(exc))
            self._failing = True
        with self._cond:
            self._batch = []
            if self._closed:  # close() is over or under way: the batch is lost, count it once
                lost = [] if self._abandoned else batch
                self._abandoned = True
            else:
                self._buffer.extendleft(reversed(batch))  # keep order, try again
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._closed, self._retry_interval)
                return True
        self._count_lost(lost)
        return False
