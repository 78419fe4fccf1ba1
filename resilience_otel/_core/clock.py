"""Time as the policy core sees it: injected, so tests drive it by hand."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """A monotonic clock for decisions, a wall clock for display, and the ways to wait."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""

    def time(self) -> float:
        """Unix time, for timestamps shown to people (dead letters, health)."""

    def sleep(self, seconds: float) -> None:
        """Block the thread for ``seconds``."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the task for ``seconds``."""


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, and real sleeps."""

    __slots__ = ()

    # The builtins themselves: a method wrapping them would cost a Python call per reading.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio (httpx runs on it through anyio)
            import anyio

            await anyio.sleep(seconds)
            return
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
