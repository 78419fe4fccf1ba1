"""Health bookkeeping: per-service rolling windows of outcomes and latencies, and the status
and score rules. Pure and clocked from outside, like the breaker."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from .._config.policy import HealthConfig

__all__ = ["LATENCY_BOUNDS", "ServiceWindow", "assess"]

# Latency histogram bounds in seconds (about 12% apart): quantiles within ~6%.
LATENCY_BOUNDS: tuple[float, ...] = tuple(0.0005 * (1.12**i) for i in range(100))


class ServiceWindow:
    """Calls, failures and a latency histogram over the last ``period`` seconds, in buckets.

    Memory is fixed by ``buckets`` and the histogram size, never by traffic. Not thread-safe
    on its own: the monitor holds a lock around it.
    """

    __slots__ = ("_epochs", "_failures", "_hist", "_n", "_successes", "_width")

    def __init__(self, period: float, buckets: int) -> None:
        self._n = buckets
        self._width = period / buckets
        self._epochs = [-1] * buckets
        self._successes = [0] * buckets
        self._failures = [0] * buckets
        self._hist: list[list[int] | None] = [None] * buckets

    def _slot(self, now: float) -> int:
        epoch = int(now // self._width)
        index = epoch % self._n
        if self._epochs[index] != epoch:
            self._epochs[index] = epoch
            self._successes[index] = self._failures[index] = 0
            self._hist[index] = None
        return index

    def add(self, now: float, *, ok: bool, duration: float | None) -> None:
        """Count one outcome; ``duration`` (seconds) feeds the latency quantiles."""
        index = self._slot(now)
        if ok:
            self._successes[index] += 1
        else:
            self._failures[index] += 1
        if duration is not None:
            hist = self._hist[index]
            if hist is None:
                hist = self._hist[index] = [0] * (len(LATENCY_BOUNDS) + 1)
            hist[bisect.bisect_left(LATENCY_BOUNDS, duration)] += 1

    def _live(self, now: float) -> list[int]:
        epoch = int(now // self._width)
        return [i for i in range(self._n) if epoch - self._n < self._epochs[i] <= epoch]

    def counts(self, now: float) -> tuple[int, int]:
        """``(successes, failures)`` within the window."""
        live = self._live(now)
        return sum(self._successes[i] for i in live), sum(self._failures[i] for i in live)

    def quantile(self, now: float, q: float) -> float | None:
        """The ``q`` latency quantile (upper bucket bound), or ``None`` without samples."""
        merged = [0] * (len(LATENCY_BOUNDS) + 1)
        for i in self._live(now):
            hist = self._hist[i]
            if hist is not None:
                merged = [a + b for a, b in zip(merged, hist, strict=True)]
        total = sum(merged)
        if total == 0:
            return None
        rank = math.ceil(q * total)
        seen = 0
        for index, count in enumerate(merged):
            seen += count
            if seen >= rank:
                return LATENCY_BOUNDS[min(index, len(LATENCY_BOUNDS) - 1)]
        return LATENCY_BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class Assessment:
    """What :func:`assess` concluded for one service."""

    status: str
    score: float
    availability: float
    reasons: tuple[str, ...]


def assess(
    config: HealthConfig,
    *,
    successes: int,
    failures: int,
    p95: float | None,
    breaker_state: str | None,
    consecutive_check_failures: int,
) -> Assessment:
    """Status and score from the evidence (docs/guides/health.md gives the formula).

    availability = successes / (successes + failures), 1.0 with no calls;
    latency factor = 1 when p95 <= latency_target, else latency_target / p95;
    breaker factor = 1 closed, 0.5 half-open, 0 open;
    score = 0.6 * availability + 0.25 * latency factor + 0.15 * breaker factor, then halved
    when active checks are failing.
    """
    calls = successes + failures
    availability = 1.0 if calls == 0 else successes / calls
    latency = 1.0 if p95 is None or p95 <= config.latency_target else config.latency_target / p95
    open_states = ("open", "forced_open")
    breaker = 0.0 if breaker_state in open_states else 0.5 if breaker_state == "half_open" else 1.0
    score = 0.6 * availability + 0.25 * latency + 0.15 * breaker
    if consecutive_check_failures:
        score /= 2.0
    unhealthy: list[str] = []
    degraded: list[str] = []
    if breaker_state in open_states:
        unhealthy.append("circuit breaker open")
    if calls >= config.minimum_calls and availability < config.alert_threshold:
        unhealthy.append(f"availability {availability:.3f} below {config.alert_threshold}")
    if consecutive_check_failures >= config.failures_to_unhealthy:
        unhealthy.append(f"{consecutive_check_failures} active checks failed in a row")
    if unhealthy:
        return Assessment("unhealthy", round(score, 4), availability, tuple(unhealthy))
    if breaker_state == "half_open":
        degraded.append("circuit breaker half-open")
    if calls >= config.minimum_calls and availability < config.degraded_threshold:
        degraded.append(f"availability {availability:.3f} below {config.degraded_threshold}")
    if p95 is not None and p95 > config.latency_target:
        degraded.append(f"p95 {p95:.3f}s above target {config.latency_target}s")
    if consecutive_check_failures:
        degraded.append("last active check failed")
    status = "degraded" if degraded else "healthy"
    return Assessment(status, round(score, 4), availability, tuple(degraded))
