"""Write loops that run while a failover happens, and the ledger of what they were told.

A write counts as acknowledged only when the client call returned; a failed call is recorded
with its error. Checks afterwards compare the ledger with what the servers hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Ledger", "Switch", "Write", "async_writers", "error_kinds", "thread_writers"]

PACE = 0.002  # between writes of one writer: enough writes, without starving the servers


@dataclass(frozen=True)
class Switch:
    """When a switchover began (writes paused or refused) and ended (writes resumed)."""

    began: float
    ended: float


@dataclass(frozen=True)
class Write:
    """One write call: when it started and ended, and the error if it failed."""

    started: float
    ended: float
    error: str | None = None


@dataclass
class Ledger:
    """Everything the write loops did, shared by every writer (thread-safe)."""

    acked: list[str] = field(default_factory=list)
    """Identifiers of acknowledged writes (the key, row id or transaction id)."""
    writes: list[Write] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, ident: str | None, error: BaseException | None) -> None:
        """Record one call: acknowledged ``ident`` when ``error`` is None."""
        ended = time.monotonic()
        with self._lock:
            if error is None and ident is not None:
                self.acked.append(ident)
            text = None if error is None else f"{type(error).__name__}: {error}"
            self.writes.append(Write(started, ended, text))

    @property
    def failures(self) -> list[Write]:
        """Failed calls, oldest first."""
        with self._lock:
            return [write for write in self.writes if write.error is not None]

    def successes_after(self, moment: float) -> list[Write]:
        """Acknowledged calls that ended after ``moment``."""
        with self._lock:
            return [w for w in self.writes if w.error is None and w.ended > moment]

    def recovery(self, switched: float) -> float | None:
        """Seconds from ``switched`` to the first success that ended after it (None while
        there is none)."""
        with self._lock:
            ends = [w.ended for w in self.writes if w.error is None and w.ended >= switched]
        return min(ends) - switched if ends else None

    def wait_for_successes(self, after: float, count: int, timeout: float) -> None:
        """Block until ``count`` calls ended well after ``after`` (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while len(self.successes_after(after)) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    async def await_successes(self, after: float, count: int, limit: float) -> None:
        """:meth:`wait_for_successes` for a task (waits in a thread, the loop runs on)."""
        await asyncio.to_thread(self.wait_for_successes, after, count, limit)

    def summary(self, switch: Switch) -> str:
        """One line for the test log: counts, the recovery time (from the end of the switch
        to the first success) and the outage (from its start to that success)."""
        recovery = self.recovery(switch.ended)
        if recovery is None:
            shown = "recovery=none"
        else:
            outage = switch.ended + recovery - switch.began
            shown = f"recovery={recovery * 1000:.0f} ms outage={outage * 1000:.0f} ms"
        return (
            f"writes={len(self.writes)} acked={len(self.acked)} failed={len(self.failures)} "
            f"{shown} errors={error_kinds(self.failures)}"
        )


def error_kinds(writes: list[Write], top: int = 4) -> list[str]:
    """The most common errors of ``writes``, counted (the text cut before its details)."""
    kinds = Counter((w.error or "")[:60] for w in writes)
    return [f"{text} x{n}" for text, n in kinds.most_common(top)]


@contextlib.contextmanager
def thread_writers(
    write: Callable[[int, int], str], ledger: Ledger, count: int = 2
) -> Iterator[None]:
    """Run ``count`` threads calling ``write(writer, n)`` (it returns the write's identifier)
    until the block ends; every call is recorded in ``ledger``."""
    stop = threading.Event()

    def loop(writer: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                ident = write(writer, n)
            except Exception as exc:
                ledger.record(started, None, exc)
            else:
                ledger.record(started, ident, None)
            stop.wait(PACE)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


@contextlib.asynccontextmanager
async def async_writers(
    write: Callable[[int, int], Awaitable[str]], ledger: Ledger, count: int = 2
) -> AsyncIterator[None]:
    """:func:`thread_writers` with ``count`` asyncio tasks."""
    stop = asyncio.Event()

    async def loop(writer: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                ident = await write(writer, n)
            except Exception as exc:
                ledger.record(started, None, exc)
            else:
                ledger.record(started, ident, None)
            await asyncio.sleep(PACE)

    tasks = [asyncio.create_task(loop(i)) for i in range(count)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
