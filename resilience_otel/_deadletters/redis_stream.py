"""A dead-letter queue in a Redis stream: XADD with a bounded length, replay through a
consumer group, acknowledged (and deleted) only after the handler succeeded.

Everything lives in the one stream key (its consumer group and pending entries are part of
the stream), and every script is given that key in KEYS, so the queue works unchanged on
Redis Cluster: the stream is one key in one slot, and its name is kept as the user gave it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._core.exceptions import ConfigError
from .._core.validate import check_float, check_int
from .._telemetry.otel import MetricsObserver, Telemetry
from .base import DeadLetter, ReplayResult
from .outbox import Outbox, letter_to_json
from .redis_replay import HeldEntries, StreamReplay

if TYPE_CHECKING:
    import redis
    import redis.cluster

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

    Replay guarantee. Any number of replayers (threads, processes, hosts) may replay one
    stream at once, each under its own ``consumer`` name. A replayer fetches a few entries
    at a time and, right before each handler, confirms in one atomic step that the entry is
    still pending to it (and resets its idle time); while the handler runs, a background
    thread renews that claim every ``claim_idle / 3`` seconds, so no other replayer can claim
    it, however long the handler takes. An entry whose handler returned is acknowledged and
    deleted, so it is never offered again. Hence, while replayers live, **each letter is
    handled exactly once**: never by two replayers at the same time, never again after a
    success. A handler that raised leaves its entry pending, to be offered again.

    Across crashes the guarantee is **at least once**: if a replayer dies mid-handler (or
    after the handler but before the acknowledgement), its entry stays pending and is
    handled again, by the same consumer name restarted or, once idle for ``claim_idle``, by
    any other replayer. Likewise, a replayer that cannot renew for ``claim_idle`` (frozen
    process, Redis unreachable from it) may lose the entry to another replayer while its
    handler still runs; this is logged as a warning. Keep ``claim_idle`` well above such
    pauses.

    Args:
        client: a synchronous ``redis.Redis`` or ``redis.cluster.RedisCluster`` (a plain one,
            not instrumented by us).
        stream: the stream key.
        maxlen: entries kept (>= 1); older ones are trimmed, counted in ``trimmed`` and in the
            ``resilience.dead_letters.dropped`` metric.
        group: the consumer group replayers share.
        consumer: this replayer's name in the group; unique per queue object by default.
            Concurrent replayers must have different names (one name is one consumer to
            Redis). A replayer restarted under its old name takes back its unacknowledged
            entries first.
        claim_idle: seconds an entry may sit unrenewed before another replayer may claim it
            (> 0): the recovery delay after a replayer died.
        buffer: letters held in memory while Redis is slow or down (>= 1; then oldest
            dropped). Letters still unstored when :meth:`close` gives up are counted as
            dropped.
        meter_provider: where the dropped-letters metric goes (default: global).

    Raises:
        ConfigError: an argument is out of range; the message names it.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        stream: str = "resilience:dead-letters",
        maxlen: int = 10_000,
        group: str = "replay",
        consumer: str | None = None,
        claim_idle: float = 60.0,
        buffer: int = 10_000,
        meter_provider: Any = None,
    ) -> None:
        cls = "RedisStreamDeadLetterQueue"
        self.client = client
        self.stream = _check_name(f"{cls}.stream", stream)
        self.maxlen = check_int(f"{cls}.maxlen", maxlen, 1)
        self.group = _check_name(f"{cls}.group", group)
        if consumer is None:
            consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.consumer = _check_name(f"{cls}.consumer", consumer)
        self.claim_idle = check_float(f"{cls}.claim_idle", claim_idle, 0.0, low_open=True)
        check_int(f"{cls}.buffer", buffer, 1)
        self.trimmed = 0
        """Entries trimmed from the stream because it reached ``maxlen``."""
        self._xadd = client.register_script(_XADD_TRIM)
        self._metrics = MetricsObserver(Telemetry.get(None, meter_provider))
        self._held = HeldEntries()
        self._outbox = Outbox(
            self._write,
            name=f"dead letters {stream}",
            maxlen=buffer,
            on_lost=lambda letter: self._metrics.dead_letter_dropped(letter.service),
        )

    @property
    def dropped(self) -> int:
        """Letters lost: dropped from the in-memory buffer (full, or unstored at close) plus
        trimmed from the stream."""
        return self._outbox.dropped + self.trimmed

    def put(self, letter: DeadLetter) -> DeadLetter | None:
        """Queue ``letter`` for the stream without waiting on Redis."""
        return self._outbox.put(letter)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until buffered letters are in the stream."""
        return self._outbox.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to ``timeout`` seconds and stop the background writer; never raises.

        Returns ``False`` if letters could not be stored: those are counted in ``dropped``,
        the ``resilience.dead_letters.dropped`` metric and an error log line.
        """
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

    def _start(self) -> StreamReplay:
        self.flush()
        self._ensure_group()
        return StreamReplay(
            self.client,
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            claim_idle=self.claim_idle,
            held=self._held,
        )

    def replay(self, handler: Callable[[DeadLetter], object]) -> ReplayResult:
        """Run ``handler`` on each letter; acknowledge and delete those it handled.

        Our own pending entries come first, then entries other replayers left idle for
        ``claim_idle``, then new ones. A letter whose handler raised stays pending and is
        offered again by a later replay. See the class docstring for the guarantee.
        """
        run = self._start()
        try:
            while (item := run.next()) is not None:
                entry_id, letter = item
                try:
                    handler(letter)
                except Exception:
                    run.settle(entry_id, handled=False)
                    continue
                run.settle(entry_id, handled=True)
        finally:
            run.stop()
        return run.result()

    async def areplay(self, handler: Callable[[DeadLetter], Awaitable[object]]) -> ReplayResult:
        """Async :meth:`replay`; Redis calls run in a worker thread."""
        run = await asyncio.to_thread(self._start)
        try:
            while (item := await asyncio.to_thread(run.next)) is not None:
                entry_id, letter = item
                try:
                    await handler(letter)
                except Exception:
                    await asyncio.to_thread(run.settle, entry_id, handled=False)
                    continue
                await asyncio.to_thread(run.settle, entry_id, handled=True)
        finally:
            await asyncio.to_thread(run.stop)
        return run.result()


def _check_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field} must be a non-empty string, got {value!r}", field=field)
    return value
