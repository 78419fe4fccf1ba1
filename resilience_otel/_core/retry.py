"""Retry arithmetic: backoff with jitter, ``Retry-After`` parsing and the retry budget (pure)."""

from __future__ import annotations

import datetime
import email.utils
import math
import threading
from typing import TYPE_CHECKING

from .._config.policy import Jitter, RetryBudgetConfig, RetryConfig
from .window import RollingWindow

if TYPE_CHECKING:
    import random

    from .classify import Failure

__all__ = ["RetryBudget", "backoff_delay", "parse_retry_after", "retry_limits"]


def retry_limits(config: RetryConfig, failure: Failure) -> tuple[int, float, float, float]:
    """``(max_attempts, base_delay, max_delay, multiplier)`` for this kind of failure."""
    override = config.by_kind.get(failure.kind)
    if override is None:
        return config.max_attempts, config.base_delay, config.max_delay, config.multiplier
    return (
        config.max_attempts if override.max_attempts is None else override.max_attempts,
        config.base_delay if override.base_delay is None else override.base_delay,
        config.max_delay if override.max_delay is None else override.max_delay,
        config.multiplier if override.multiplier is None else override.multiplier,
    )


def backoff_delay(
    jitter: Jitter,
    retry_index: int,
    *,
    base_delay: float,
    max_delay: float,
    multiplier: float,
    previous: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before retry number ``retry_index`` (0 for the first retry).

    The un-jittered delay is ``base_delay * multiplier**retry_index`` capped at ``max_delay``;
    ``previous`` is the last delay actually used (decorrelated jitter grows from it).
    """
    if jitter is Jitter.DECORRELATED:
        upper = max(base_delay, previous * 3.0)
        return min(max_delay, rng.uniform(base_delay, upper))
    # Cap the exponent first: multiplier**retry_index overflows long before it matters.
    exponent = min(retry_index, 1024)
    try:
        delay = min(max_delay, base_delay * multiplier**exponent)
    except OverflowError:
        delay = max_delay
    if jitter is Jitter.FULL:
        return rng.uniform(0.0, delay)
    if jitter is Jitter.EQUAL:
        return delay / 2.0 + rng.uniform(0.0, delay / 2.0)
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value.

    Accepts delta-seconds (``"120"``) and HTTP dates (``"Wed, 21 Oct 2026 07:28:00 GMT"``,
    compared with the Unix time ``now``). A date in the past gives 0.0. Garbage, negative
    numbers, non-finite values and absent headers give ``None`` (fall back to backoff).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        # Not strictly RFC 9110, but some servers send "1.5"; negative or NaN is garbage.
        return number if math.isfinite(number) and number >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # HTTP dates are always GMT (RFC 9110); asctime-style dates carry no zone at all.
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


class RetryBudget:
    """Finagle/Envoy-style retry budget, thread-safe.

    Every call deposits; a retry may be taken while retries in the window stay within
    ``ratio * calls + min_retries_per_second * window``.
    """

    _BUCKETS = 10

    def __init__(self, config: RetryBudgetConfig) -> None:
        self.config = config
        self._floor = config.min_retries_per_second * config.window
        self._lock = threading.Lock()
        # calls -> calls made, failures -> retries taken
        self._window = RollingWindow(config.window, self._BUCKETS)
        self._width = config.window / self._BUCKETS
        # Deposits of the current bucket are counted without the lock and folded into the
        # window when the bucket changes or a retry is asked for. Every call deposits, so
        # this keeps a lock off the hot path; a race between threads can only miscount a
        # deposit or two, which a ratio over thousands of calls does not notice.
        self._pending_epoch = -1
        self._pending = 0

    def deposit(self, now: float) -> None:
        """Count one call."""
        epoch = int(now // self._width)
        if epoch == self._pending_epoch:
            self._pending += 1
            return
        with self._lock:
            self._fold()
            self._pending_epoch = epoch
            self._pending = 1

    def _fold(self) -> None:
        """Move the pending deposits into the window (the caller holds the lock)."""
        if self._pending and self._pending_epoch >= 0:
            self._window.add(self._pending_epoch * self._width, self._pending)
        self._pending = 0

    def try_withdraw(self, now: float) -> bool:
        """Take one retry if the budget allows it."""
        with self._lock:
            self._fold()
            window = self._window
            window.advance(now)
            if window.failures + 1 > self.config.ratio * window.calls + self._floor:
                return False
            window.add(now, 0, 1)
            return True

    @property
    def available(self) -> float:
        """Retries that could be taken right now (for endpoints and tests)."""
        with self._lock:
            self._fold()
            window = self._window
            return max(0.0, self.config.ratio * window.calls + self._floor - window.failures)
