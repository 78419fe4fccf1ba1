"""The full demo's failover phase: Redis' primary hands over to its replica under load.

The cache service counts every INCR the new or old primary acknowledged during the phase;
at the end the counter on the primary must equal that count: a refused write (``READONLY``)
was resent once on a new connection, never lost and never applied twice.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .phases import FAILOVER

if TYPE_CHECKING:
    from .backends import RedisSide
    from .phases import Timeline
    from .stats import EventLog

__all__ = ["WriteTally", "drive_failover", "failover_facts"]


@dataclass
class WriteTally:
    """Writes the failover phase made and the server acknowledged (thread-safe)."""

    key: str
    acknowledged: int = 0
    switched_at: float | None = None
    paused: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acked(self) -> None:
        """One more INCR acknowledged."""
        with self._lock:
            self.acknowledged += 1


async def drive_failover(
    side: RedisSide, tally: WriteTally, timeline: Timeline, events: EventLog, stop: asyncio.Event
) -> None:
    """At the start of the failover phase, promote the replica and demote the primary."""
    pair = side.pair
    if pair is None:
        return
    while timeline.phase() != FAILOVER:
        if stop.is_set():
            return
        await asyncio.sleep(0.02)
    old = pair.primary
    try:
        tally.paused = await asyncio.to_thread(pair.switchover, side.proxy)
    except Exception as exc:  # a switchover that could not happen is part of the story
        events.add(f"cache: switchover failed ({type(exc).__name__}: {exc})")
        return
    tally.switched_at = timeline.elapsed()
    events.add(f"cache: Redis {old[1]} demoted, replica {pair.primary[1]} promoted; new "
               f"connections go to it (writes paused {tally.paused * 1000:.0f}ms)")  # fmt: skip


def failover_facts(side: RedisSide | None, tally: WriteTally | None, failovers: int) -> list[str]:
    """The summary lines about the failover phase."""
    if side is None or side.pair is None or tally is None:
        return ["failover: skipped (needs Redis and a redis-server binary to run a replica pair)"]
    if tally.switched_at is None:
        return ["failover: the switchover did not happen in this run"]
    stored = int(side.pair.primary_client.get(tally.key) or 0)
    lost = max(tally.acknowledged - stored, 0)
    doubled = max(stored - tally.acknowledged, 0)
    writes = "1 write" if failovers == 1 else f"{failovers} writes"
    return [
        f"failover at {tally.switched_at:.1f}s: {writes} refused by the demoted primary "
        "(READONLY): connections retired, resent on a new one",
        f"  {tally.acknowledged} INCRs acknowledged, {stored} on the new primary: "
        f"{lost} lost, {doubled} applied twice",
    ]
