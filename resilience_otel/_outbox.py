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

from .dlq import DeadLetter, DeadLetterReason

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

    Args:
        write: stores a batch; raising keeps what is left of the batch buffered for another
            try (a writer that stores letters one by one deletes each stored one from the
            front of the list first, so none is written twice).
        name: for log messages.
        maxlen: the most letters buffered while the store is slow or down.
        retry_interval: seconds between tries while the store fails.
    """

    def __init__(
        self,
        write: Callable[[list[DeadLetter]], None],
        *,
        name: str,
        maxlen: int = 10_000,
        retry_interval: float = 0.5,
    ) -> None:
        self._write = write
        self._name = name
        self._maxlen = maxlen
        self._retry_interval = retry_interval
        self._buffer: deque[DeadLetter] = deque()
        self._cond = threading.Condition()
        self._writing = 0
        self._closed = False
        self._failing = False
        self.dropped = 0
        """Letters dropped because the buffer was full."""
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
            while self._buffer or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the writer; ``False`` if letters were still buffered."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return flushed

    def _take(self) -> list[DeadLetter] | None:
        with self._cond:
            while not self._buffer and not self._closed:
                self._cond.wait()
            if not self._buffer or self._closed:  # closed: stop, even if the store is down
                return None
            batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), 100))]
            self._writing = len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._write(batch)
            except Exception as exc:
                with self._cond:
                    self._buffer.extendleft(reversed(batch))  # keep order, try again
                    self._writing = 0
                    self._cond.notify_all()
                if not self._failing:
                    _log.warning("%s: store unreachable (%s); buffering", self._name, exc)
                    self._failing = True
                time.sleep(self._retry_interval)
                continue
            self._failing = False
            with self._cond:
                self._writing = 0
                self._cond.notify_all()
