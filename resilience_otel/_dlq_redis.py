"""A dead-letter queue in a Redis stream: XADD with a bounded length, replay through a
consumer group, acknowledged (and deleted) only after the handler succeeded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._outbox import Outbox, letter_from_json, letter_to_json
from ._telemetry import MetricsObserver, Telemetry
from .dlq import DeadLetter, ReplayResult

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStreamDeadLetterQueue"]

# Append, trimming exactly to maxlen; returns the services of the entries trimmed away so the
# loss is counted, never silent.
_XADD_TRIM = r"""
local stream, maxlen = KEYS[1], tonumber(ARGV[1])
local trimmed = {}
local excess = redis.call('XLEN', stream) + 1 - maxlen
if excess > 0 then
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'service' then table.insert(trimmed, fields[i + 1]) end
    end
  end
end
redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'service', ARGV[2], 'letter', ARGV[3])
return trimmed
"""


class RedisStreamDeadLetterQueue:
    """Dead letters in a Redis stream; they survive process restarts.

    Args:
        client: a synchronous ``redis.Redis`` (a plain one, not instrumented by us).
        stream: the stream key.
        maxlen: entries kept; older ones are trimmed, counted in ``trimmed`` and in the
            ``resilience.dead_letters.dropped`` metric.
        group / consumer: the consumer group and this replayer's name. A replayer restarted
            under the same name takes back its unacknowledged entries first; entries another
            consumer left pending for ``claim_idle`` seconds are claimed too.
        buffer: letters held in memory while Redis is slow or down (then oldest dropped).
        meter_provider: where the dropped-letters metric goes (default: global).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str = "resilience:dead-letters",
        maxlen: int = 10_000,
        group: str = "replay",
        consumer: str = "replayer",
        claim_idle: float = 60.0,
        buffer: int = 10_000,
        meter_provider: Any = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.group = group
        self.consumer = consumer
        self.claim_idle = claim_idle
        self.trimmed = 0
        """Entries trimmed from the stream because it reached ``maxlen``."""
        self._xadd = client.register_script(_XADD_TRIM)
        self._metrics = MetricsObserver(Telemetry.get(None, meter_provider))
        self._outbox = Outbox(self._write, name=f"dead letters {stream}", maxlen=buffer)

    @property
    def dropped(self) -> int:
        """Letters lost: dropped from the in-memory buffer plus trimmed from the stream."""
        return self._outbox.dropped + self.trimmed

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Queue ``letter`` for the stream without waiting on Redis."""
        return self._outbox.put(letter)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until buffered letters are in the stream."""
        return self._outbox.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush and stop the background writer."""
        return self._outbox.close(timeout)

    def __len__(self) -> int:
        return int(self.client.xlen(self.stream))

    def _write(self, batch: list[DeadLetter]) -> None:
        while batch:
            letter = batch[0]
            args: list[str | int] = [self.maxlen, letter.service, letter_to_json(letter)]
            trimmed = self._xadd(keys=[self.stream], args=args)
            del batch[0]  # stored: not to be written again if a later one fails
            for service in trimmed:
                self.trimmed += 1
                name = service.decode() if isinstance(service, bytes) else str(service)
                self._metrics.dead_letter_dropped(name)

    # -- replay -------------------------------------------------------------------------------
    def _ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _batches(self) -> list[list[tuple[str, DeadLetter]]]:
        """Our pending entries, stale entries of other consumers, then new ones."""
        client: Any = self.client  # redis-py's reply types are too loose to be useful here
        entries: list[Any] = []
        after = "0"  # our own pending entries, page by page
        while page := [
            e
            for _, items in client.xreadgroup(
                self.group, self.consumer, {self.stream: after}, count=1000
            )
            for e in items
        ]:
            entries += page
            after = page[-1][0]
        start = "0-0"  # entries other consumers left pending too long, page by page
        while True:
            cursor, claimed, *_ = client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                int(self.claim_idle * 1000),
                start,
                count=1000,
            )
            entries += claimed
            if not claimed or cursor in (b"0-0", "0-0"):
                break
            start = cursor
        # every new entry, not just the first thousand (the stream holds up to maxlen)
        while new := client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=1000):
            entries += [e for _, items in new for e in items]
        seen: set[str] = set()
        batch: list[tuple[str, DeadLetter]] = []
        for entry_id, fields in entries:
            key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            if key in seen or not fields:
                continue
            seen.add(key)
            raw = fields.get(b"letter", fields.get("letter"))
            batch.append((key, letter_from_json(raw)))
        return [batch]

    def _done(self, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Run ``handler`` on each letter; acknowledge and delete those it handled.

        A letter whose handler raised stays pending and is offered again by the next replay.
        """
        self.flush()
        self._ensure_group()
        succeeded = failed = 0
        for batch in self._batches():
            for entry_id, letter in batch:
                try:
                    handler(letter)
                except Exception:
                    failed += 1
                    continue
                self._done(entry_id)
                succeeded += 1
        return ReplayResult(succeeded=succeeded, failed=failed)

    async def areplay(self, handler: Callable[[DeadLetter], Awaitable[object]]) -> ReplayResult:
        """Async :meth:`replay`; Redis calls run in a worker thread."""
        await asyncio.to_thread(self.flush)
        await asyncio.to_thread(self._ensure_group)
        succeeded = failed = 0
        for batch in await asyncio.to_thread(self._batches):
            for entry_id, letter in batch:
                try:
                    await handler(letter)
                except Exception:
                    failed += 1
                    continue
                await asyncio.to_thread(self._done, entry_id)
                succeeded += 1
        return ReplayResult(succeeded=succeeded, failed=failed)
