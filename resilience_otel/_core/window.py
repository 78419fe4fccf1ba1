"""A rolling window of counters cut into fixed buckets.

Memory is ``3 * buckets`` integers whatever the call rate; the window covers between
``period - period/buckets`` and ``period`` seconds of history.
"""

from __future__ import annotations

__all__ = ["RollingWindow"]


class RollingWindow:
    """Counts calls, failures and slow calls over the last ``period`` seconds.

    Not thread-safe on its own: the owner holds its lock around every method.
    """

    __slots__ = (
        "_calls",
        "_epochs",
        "_failures",
        "_last",
        "_n",
        "_slow",
        "_width",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, period: float, buckets: int) -> None:
        self._n = buckets
        self._width = period / buckets
        self._epochs = [-1] * buckets
        self._calls = [0] * buckets
        self._failures = [0] * buckets
        self._slow = [0] * buckets
        self._last = -1
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _clear(self, index: int, epoch: int) -> None:
        self.calls -= self._calls[index]
        self.failures -= self._failures[index]
        self.slow -= self._slow[index]
        self._calls[index] = self._failures[index] = self._slow[index] = 0
        self._epochs[index] = epoch

    def advance(self, now: float) -> None:
        """Expire the buckets that fell out of the window by ``now``."""
        epoch = int(now // self._width)
        last = self._last
        if epoch <= last:
            return
        first = max(last + 1, epoch - self._n + 1)
        for e in range(first, epoch + 1):
            self._clear(e % self._n, e)
        self._last = epoch

    def add(self, now: float, calls: int = 1, failures: int = 0, slow: int = 0) -> None:
        """Count events at ``now`` (which must not be older than the last ``advance``)."""
        self.advance(now)
        index = self._last % self._n
        self._calls[index] += calls
        self._failures[index] += failures
        self._slow[index] += slow
        self.calls += calls
        self.failures += failures
        self.slow += slow

    def reset(self) -> None:
        """Forget everything."""
        for index in range(self._n):
            self._clear(index, -1)
        self._last = -1
