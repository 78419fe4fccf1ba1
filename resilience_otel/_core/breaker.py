"""The circuit breaker: a state machine over explicit outcomes and an injected clock.

It never sleeps, logs on the call path or emits telemetry; it only decides. A call asks
:meth:`CircuitBreaker.acquire` for a permit (or gets :class:`CircuitOpenError`), runs without
any lock held, then reports the outcome with the permit. Permits carry the breaker's
generation, so an outcome that arrives after the state moved on cannot flip the new state.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .._config.policy import BreakerConfig
from .clock import SYSTEM_CLOCK, Clock
from .exceptions import CircuitOpenError
from .validate import check_type
from .window import RollingWindow

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BreakerSnapshot", "BreakerState", "CircuitBreaker", "StateChange"]

_log = logging.getLogger("resilience_otel")


class BreakerState(StrEnum):
    """Breaker states; the ``FORCED_*`` ones are set by hand and left only by hand."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


@dataclass(frozen=True, slots=True)
class StateChange:
    """A state transition, as given to listeners. ``at`` is on the monotonic clock."""

    name: str
    from_state: BreakerState
    to_state: BreakerState
    at: float


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A consistent view of a breaker for endpoints and dashboards."""

    name: str
    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    half_open_in_flight: int
    retry_after: float


_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
_FORCED_OPEN, _FORCED_CLOSED = BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED


class CircuitBreaker:
    """A thread- and asyncio-safe circuit breaker (no lock is held while a call runs).

    Args:
        config: thresholds and timings.
        name: what it protects (the service, or ``service:host``).
        clock: the time source; tests pass a fake one.
    """

    def __init__(self, config: BreakerConfig, *, name: str, clock: Clock = SYSTEM_CLOCK) -> None:
        check_type("CircuitBreaker(config=...)", config, BreakerConfig)
        if not isinstance(name, str) or not name:
            raise TypeError(f"CircuitBreaker(name=...) must be a non-empty string, got {name!r}")
        self.config = config
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._window = RollingWindow(config.monitoring_period, config.window_buckets)
        self._state = _CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._listeners: list[Callable[[StateChange], None]] = []
        self._forwarding: set[int] = set()
        self._count_only = (
            config.failure_rate_threshold is None and config.slow_call_rate_threshold is None
        )
        self._bucket_width = config.monitoring_period / config.window_buckets
        self._pending_epoch = -1  # successes of this bucket not yet in the window
        self._pending_calls = 0

    # -- reading -----------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose reset timeout passed reads half-open)."""
        self._maybe_half_open(self._clock.monotonic())
        return self._state

    @property
    def current_state(self) -> BreakerState:
        """The state as last set, without consulting the clock (cheap; for labels)."""
        return self._state

    def retry_after(self, now: float | None = None) -> float:
        """Seconds until an open breaker admits a probe; 0.0 when it is not open."""
        now = self._clock.monotonic() if now is None else now
        if self._state is _OPEN:
            return max(0.0, self._opened_at + self.config.reset_timeout - now)
        if self._state is _FORCED_OPEN:
            return self.config.reset_timeout
        return 0.0

    def snapshot(self) -> BreakerSnapshot:
        """State, window counts, probes in flight and retry-after, read under the lock."""
        now = self._clock.monotonic()
        self._maybe_half_open(now)
        with self._lock:
            self._fold_pending()
            self._window.advance(now)
            return BreakerSnapshot(
                name=self.name,
                state=self._state,
                calls=self._window.calls,
                failures=self._window.failures,
                slow_calls=self._window.slow,
                half_open_in_flight=self._probes_in_flight,
                retry_after=self.retry_after(now),
            )

    def add_listener(self, listener: Callable[[StateChange], None]) -> None:
        """Call ``listener`` after every state change (outside the breaker's lock)."""
        self._listeners.append(listener)

    def claim_forwarding(self, key: int) -> bool:
        """Record that ``key`` (an observer) now hears this breaker; ``False`` if it already
        did. Lets several clients share one breaker without reporting it twice."""
        with self._lock:
            if key in self._forwarding:
                return False
            self._forwarding.add(key)
            return True

    def allows_retry(self, now: float) -> bool:
        """Whether a retry could be admitted now (the breaker is not open)."""
        state = self._state
        if state is _OPEN:
            return now >= self._opened_at + self.config.reset_timeout
        return state is not _FORCED_OPEN

    # -- the call protocol ---------------------------------------------------------------
    def acquire(self, now: float) -> int:
        """Admit a call or raise :class:`CircuitOpenError`.

        Returns:
            A permit to hand back to :meth:`record` or :meth:`release`.
        """
        state = self._state
        if state is _CLOSED or state is _FORCED_CLOSED:
            return self._generation << 1  # the common case takes no lock
        if state is _OPEN:
            self._maybe_half_open(now)
        with self._lock:
            state = self._state
            if state is _CLOSED or state is _FORCED_CLOSED:
                return self._generation << 1
            if state is _HALF_OPEN and self._probes_in_flight < self.config.half_open_max_calls:
                self._probes_in_flight += 1
                return self._generation << 1 | 1
            retry_after = self.retry_after(now)
        raise CircuitOpenError(self.name, retry_after)

    def record(
        self, permit: int, *, failure: bool, duration: float, now: float
    ) -> StateChange | None:
        """Report the outcome of an admitted call.

        Args:
            permit: what :meth:`acquire` returned.
            failure: whether the outcome counts as a failure (TRANSIENT, CRITICAL, timeout).
            duration: how long the attempt took, seconds (for slow-call accounting).
            now: the monotonic time of the outcome.

        Returns:
            The state change this outcome caused, if any (listeners have been told).
        """
        cfg = self.config
        slow = cfg.slow_call_threshold is not None and duration > cfg.slow_call_threshold
        if not (failure or slow) and self._count_only and not permit & 1:
            # Count mode: a success cannot trip the breaker, it only adds to the window's
            # call count; count it without the lock while the bucket stays the same (a race
            # may miscount a call or two, which only the snapshot's call count would show).
            epoch = int(now // self._bucket_width)
            if epoch == self._pending_epoch and permit >> 1 == self._generation:
                self._pending_calls += 1
                return None
        change: StateChange | None = None
        with self._lock:
            if permit >> 1 != self._generation:
                return None  # the state moved on while this call ran
            self._fold_pending()
            state = self._state
            if state is _HALF_OPEN:
                self._probes_in_flight -= 1
                if failure or (slow and cfg.slow_call_rate_threshold is not None):
                    change = self._transition(_OPEN, now)
                else:
                    self._probe_successes += 1
                    if self._probe_successes >= cfg.success_threshold:
                        change = self._transition(_CLOSED, now)
            elif (state is _CLOSED or state is _FORCED_CLOSED) and not (
                failure or slow or not self._count_only
            ):
                self._pending_epoch = int(now // self._bucket_width)
                self._pending_calls = 1
            elif state is _CLOSED or state is _FORCED_CLOSED:
                window = self._window
                window.add(now, 1, int(failure), int(slow))
                # A success only lowers the ratios, except as the call that reaches
                # minimum_calls (the first moment a rate is judged): check then, and on
                # every failure or slow call.
                if (
                    state is _CLOSED
                    and (failure or slow or window.calls == cfg.minimum_calls)
                    and self._should_trip(window)
                ):
                    change = self._transition(_OPEN, now)
        if change is not None:
            self._notify(change)
        return change

    def release(self, permit: int) -> None:
        """Give back a permit whose call ended without a countable outcome (cancelled)."""
        if not permit & 1:
            return
        with self._lock:
            in_flight = self._probes_in_flight
            if permit >> 1 == self._generation and self._state is _HALF_OPEN and in_flight > 0:
                self._probes_in_flight = in_flight - 1

    # -- manual control ------------------------------------------------------------------
    def force_open(self) -> None:
        """Reject every call until :meth:`reset` or :meth:`force_closed`."""
        self._set_by_hand(_FORCED_OPEN)

    def force_closed(self) -> None:
        """Admit every call and never trip (the breaker is disabled) until :meth:`reset`."""
        self._set_by_hand(_FORCED_CLOSED)

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        self._set_by_hand(_CLOSED)

    # -- internals -----------------------------------------------------------------------
    def _fold_pending(self) -> None:
        """Move lock-free counted successes into the window (the caller holds the lock)."""
        if self._pending_calls and self._pending_epoch >= 0:
            self._window.add(self._pending_epoch * self._bucket_width, self._pending_calls)
        self._pending_calls = 0

    def _reset_window(self) -> None:
        self._window.reset()
        self._pending_calls = 0
        self._pending_epoch = -1

    def _should_trip(self, window: RollingWindow) -> bool:
        cfg = self.config
        if cfg.failure_rate_threshold is None:
            if window.failures >= cfg.failure_threshold:
                return True
        elif (
            window.calls >= cfg.minimum_calls
            and window.failures / window.calls >= cfg.failure_rate_threshold
        ):
            return True
        return (
            cfg.slow_call_rate_threshold is not None
            and window.calls >= cfg.minimum_calls
            and window.slow / window.calls >= cfg.slow_call_rate_threshold
        )

    def _maybe_half_open(self, now: float) -> None:
        if self._state is not _OPEN or now < self._opened_at + self.config.reset_timeout:
            return
        with self._lock:
            if self._state is not _OPEN or now < self._opened_at + self.config.reset_timeout:
                return
            change = self._transition(_HALF_OPEN, now)
        self._notify(change)

    def _transition(self, to_state: BreakerState, now: float) -> StateChange:
        """Move to ``to_state``; the caller holds the lock and notifies afterwards."""
        change = StateChange(self.name, self._state, to_state, now)
        self._state = to_state
        self._generation += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if to_state is _OPEN:
            self._opened_at = now
        if to_state is _CLOSED or to_state is _FORCED_CLOSED:
            self._reset_window()
        return change

    def _set_by_hand(self, to_state: BreakerState) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if self._state is to_state:
                if to_state is _CLOSED:
                    self._reset_window()
                return
            change = self._transition(to_state, now)
        self._notify(change)

    def _notify(self, change: StateChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                _log.exception("breaker %r state listener failed", self.name)
