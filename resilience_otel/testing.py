"""Helpers for testing code that uses resilience-otel.

``FakeClock`` makes every wait instant and lets a test move time by hand::

    clock = FakeClock()
    transport = ResilientTransport(mock_transport, policy=policy, clock=clock)
    ...
    clock.advance(60)  # the breaker's reset timeout has now passed
"""

from __future__ import annotations

import threading

from ._core.validate import check_float

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to; sleeping advances it instead of waiting.

    Args:
        start: the initial monotonic reading.
        wall: the Unix time matching ``start``.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_767_225_600.0) -> None:
        self._now = check_float("FakeClock(start=...)", start, -1e15, 1e15)
        self._wall_offset = check_float("FakeClock(wall=...)", wall, -1e15, 1e15) - self._now
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        """Every sleep requested, in order (handy for asserting backoff)."""

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance needs seconds >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
