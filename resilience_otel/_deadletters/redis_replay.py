"""One replay pass over a Redis stream's consumer group, each letter held while it is handled.

Ownership is the consumer group's pending-entries list: an entry pending to us is ours until
another consumer claims it, which ``XAUTOCLAIM`` only does once it has been idle for
``claim_idle``. So before each handler we confirm, atomically, that the entry is still
pending to us and reset its idle time; while the handler runs a renewal thread resets it
again every ``claim_idle / 3``. Fetching a few entries at a time keeps the entries we hold but
have not started small; those may be claimed by others meanwhile, and the confirmation then
tells us to skip them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._telemetry.errortext import error_text
from .base import DeadLetter, ReplayResult
from .outbox import letter_from_json

if TYPE_CHECKING:
    import redis
    import redis.cluster

__all__ = ["HeldEntries", "StreamReplay"]

_log = logging.getLogger("resilience_otel")

BATCH = 4
"""Entries fetched per read or claim: few, so entries we hold but have not started stay few."""

# 1: pending to us (idle time reset); 0: acknowledged, or another consumer holds it;
# -1: the entry was deleted (someone handled it), dropped from our pending list.
_HOLD = r"""
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local pending = redis.call('XPENDING', stream, group, id, id, 1)
if #pending == 0 or pending[1][2] ~= consumer then return 0 end
if #redis.call('XRANGE', stream, id, id) == 0 then
  redis.call('XACK', stream, group, id)
  return -1
end
redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
return 1
"""

_OURS = 1


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HeldEntries:
    """The entries one queue object's replays are handling now.

    Concurrent replays of one object share its consumer name, so Redis cannot tell them
    apart: this set does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def add(self, entry_id: str) -> bool:
        """Mark ``entry_id`` held; ``False`` if another replay already holds it."""
        with self._lock:
            if entry_id in self._ids:
                return False
            self._ids.add(entry_id)
            return True

    def discard(self, entry_id: str) -> None:
        """Mark ``entry_id`` no longer held."""
        with self._lock:
            self._ids.discard(entry_id)


class StreamReplay:
    """Offers the letters of one replay, holding each while its handler runs.

    Args:
        client: the queue's ``redis.Redis`` or ``redis.cluster.RedisCluster``.
        stream / group / consumer / claim_idle: as on the queue.
        held: what the queue object's replays are handling now.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        stream: str,
        group: str,
        consumer: str,
        claim_idle: float,
        held: HeldEntries,
    ) -> None:
        self._client: Any = client  # redis-py's reply types are too loose to be useful here
        self._stream, self._group, self._consumer = stream, group, consumer
        self._claim_idle = claim_idle
        self._hold_script = client.register_script(_HOLD)
        self._held = held
        self._seen: set[str] = set()  # offered (or skipped) in this replay
        self._fetched: deque[tuple[str, Any]] = deque()
        self._phase: Callable[[], bool] = self._own_pending
        self._cursor = "0"
        self._current: str | None = None
        self._renewer = _Renewer(self._hold, claim_idle / 3, name=f"replay {stream}")
        self.succeeded = 0
        self.failed = 0

    def result(self) -> ReplayResult:
        """What this replay did."""
        return ReplayResult(succeeded=self.succeeded, failed=self.failed)

    def next(self) -> tuple[str, DeadLetter] | None:
        """The next letter, confirmed ours and held; ``None`` when there is nothing left."""
        while True:
            while self._fetched:
                entry_id, fields = self._fetched.popleft()
                if entry_id in self._seen:
                    continue
                self._seen.add(entry_id)
                if self._take(entry_id):
                    if not fields:  # deleted since it was read: nothing to handle
                        self._release(entry_id)
                        continue
                    raw = fields.get(b"letter", fields.get("letter"))
                    return entry_id, letter_from_json(raw, id=entry_id)
            if not self._phase():
                return None

    def settle(self, entry_id: str, *, handled: bool) -> None:
        """Acknowledge and delete a handled letter; leave a failed one pending to us.

        A handled letter is deleted even if our claim lapsed meanwhile: it was handled, and
        deleting it is what stops another replayer from handling it again.
        """
        kept = self._renewer.release()
        try:
            if handled:
                pipe = self._client.pipeline(transaction=True)
                pipe.xack(self._stream, self._group, entry_id)
                pipe.xdel(self._stream, entry_id)
                pipe.execute()
                self.succeeded += 1
            else:
                self.failed += 1
        finally:
            self._release(entry_id)
        if not kept:
            _log.warning(
                "dead letter %s of %s: our claim lapsed while its handler ran (not renewed "
                "within claim_idle=%ss); another replayer may have handled it too",
                entry_id, self._stream, self._claim_idle,
            )  # fmt: skip

    def stop(self) -> None:
        """End the replay: stop renewing; an entry left unsettled stays pending to us."""
        self._renewer.stop()
        if self._current is not None:
            self._release(self._current)

    # -- holding -----------------------------------------------------------------------------
    def _hold(self, entry_id: str) -> int:
        keys = [self._stream]
        return int(self._hold_script(keys=keys, args=[self._group, self._consumer, entry_id]))

    def _take(self, entry_id: str) -> bool:
        """Confirm ``entry_id`` is ours, not handled by a sibling replay, and start renewing."""
        if not self._held.add(entry_id):
            return False
        if self._hold(entry_id) != _OURS:
            self._release(entry_id)
            return False
        self._current = entry_id
        self._renewer.hold(entry_id)
        return True

    def _release(self, entry_id: str) -> None:
        self._held.discard(entry_id)
        self._current = None

    # -- fetching: our pending entries, entries idle too long, then new ones -----------------
    def _add(self, entries: list[Any]) -> None:
        self._fetched.extend((_text(entry_id), fields) for entry_id, fields in entries)

    def _own_pending(self) -> bool:
        reply = self._client.xreadgroup(
            self._group, self._consumer, {self._stream: self._cursor}, count=BATCH
        )
        entries = [e for _, items in reply for e in items]
        if entries:
            self._add(entries)
            self._cursor = _text(entries[-1][0])
        else:
            self._phase, self._cursor = self._idle_elsewhere, "0-0"
        return True

    def _idle_elsewhere(self) -> bool:
        cursor, claimed, *_ = self._client.xautoclaim(
            self._stream,
            self._group,
            self._consumer,
            int(self._claim_idle * 1000),
            self._cursor,
            count=BATCH,
        )
        self._add(claimed)
        self._cursor = _text(cursor)
        if self._cursor == "0-0":
            self._phase = self._new
        return True

    def _new(self) -> bool:
        reply = self._client.xreadgroup(
            self._group, self._consumer, {self._stream: ">"}, count=BATCH
        )
        entries = [e for _, items in reply for e in items]
        self._add(entries)
        return bool(entries)


class _Renewer:
    """A thread that keeps the entry being handled pending to us by renewing it.

    Started on the first :meth:`hold`; every ``interval`` seconds it resets the idle time of
    the held entry (confirming it is still ours), so no other replayer may claim it.
    """

    def __init__(self, renew: Callable[[str], int], interval: float, *, name: str) -> None:
        self._renew = renew
        self._interval = interval
        self._name = name
        self._cond = threading.Condition()
        self._entry: str | None = None
        self._due = 0.0
        self._lapsed = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def hold(self, entry_id: str) -> None:
        """Renew ``entry_id`` (just confirmed ours) from now until :meth:`release`."""
        with self._cond:
            self._entry, self._lapsed = entry_id, False
            self._due = time.monotonic() + self._interval
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"{self._name}-renewer", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def release(self) -> bool:
        """Stop renewing; ``False`` if the entry stopped being ours while it was held."""
        with self._cond:
            self._entry = None
            return not self._lapsed

    def stop(self) -> None:
        """End the thread (without waiting long on a renewal stuck on Redis: it is a daemon)."""
        with self._cond:
            self._stopped, self._entry = True, None
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(max(1.0, 3 * self._interval))

    def _next(self) -> str | None:
        """Wait until the held entry is due for renewal; ``None`` once stopped."""
        with self._cond:
            while not self._stopped:
                wait = None if self._entry is None else self._due - time.monotonic()
                if wait is not None and wait <= 0:
                    self._due = time.monotonic() + self._interval
                    return self._entry
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        while (entry_id := self._next()) is not None:
            try:
                ours = self._renew(entry_id) == _OURS
            except Exception as exc:  # Redis unreachable: try again next interval
                _log.warning(
                    "%s: could not renew dead letter %s (%s)", self._name, entry_id, error_text(exc)
                )
                continue
            if not ours:
                with self._cond:
                    if self._entry == entry_id:
                        self._lapsed = True
