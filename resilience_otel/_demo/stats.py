"""What the full demo counts: per-service call counters fed by the engine's observer hooks,
a bounded event log, and the rows the views show."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from .._telemetry.events import Observer

if TYPE_CHECKING:
    from .._core.breaker import StateChange
    from .._core.classify import ErrorClass, FailureKind
    from .._deadletters.base import DeadLetter, ReplayResult
    from .._health.monitor import HealthMonitor

__all__ = ["Counts", "EventLog", "LogToEvents", "Recorder", "Row", "Sampler"]


@dataclass(slots=True)
class Counts:
    """Totals for one service since the start."""

    calls: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    retries: int = 0
    exhausted: int = 0
    dead: int = 0
    replayed: int = 0
    replay_failed: int = 0
    opened: int = 0
    closed: int = 0
    failovers: int = 0

    def minus(self, other: Counts) -> Counts:
        """The difference ``self - other``, field by field."""
        values = {f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        return Counts(**values)

    @property
    def pending(self) -> int:
        """Dead letters not replayed yet."""
        return self.dead - self.replayed


class EventLog:
    """Timestamped lines (breaker transitions, replays, alerts), the last ``size`` kept.

    Args:
        start: the scenario's start on the monotonic clock; events are stamped relative to it.
        on_event: called with each new ``(seconds, text)`` (the plain view prints them).
    """

    def __init__(
        self,
        start: float,
        on_event: Callable[[float, str], None] | None = None,
        size: int = 8,
    ) -> None:
        self.start = start
        self._on_event = on_event
        self._lines: deque[tuple[float, str]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        """Record ``text`` now."""
        stamp = time.monotonic() - self.start
        with self._lock:
            self._lines.append((stamp, text))
        if self._on_event is not None:
            self._on_event(stamp, text)

    def recent(self) -> list[tuple[float, str]]:
        """The kept events, oldest first."""
        with self._lock:
            return list(self._lines)


class LogToEvents(logging.Handler):
    """Shows the package's log lines (a failing health check, a store that went away) as
    events of the live view instead of letting them scribble over it on stderr."""

    def __init__(self, events: EventLog) -> None:
        super().__init__(logging.INFO)
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        self._events.add(record.getMessage())

    @contextlib.contextmanager
    def installed(self, logger: str = "resilience_otel") -> Iterator[None]:
        """Route ``logger`` here (and nowhere else) for the duration of the block."""
        target = logging.getLogger(logger)
        propagate = target.propagate
        target.addHandler(self)
        target.propagate = False
        try:
            yield
        finally:
            target.removeHandler(self)
            target.propagate = propagate


class Recorder(Observer):
    """Counts what the engine reports, per service; thread-safe."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._counts: dict[str, Counts] = {}
        self._lock = threading.Lock()

    def _bump(self, service: str, name: str, by: int = 1) -> None:
        with self._lock:
            counts = self._counts.setdefault(service, Counts())
            setattr(counts, name, getattr(counts, name) + by)

    def call_finished(
        self,
        service: str,
        client: str,
        outcome: str,
        error_class: ErrorClass | None,
        attempts: int,
        duration: float,
    ) -> None:
        self._bump(service, "calls")
        self._bump(service, {"success": "ok", "rejected": "rejected"}.get(outcome, "failed"))

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self._bump(service, "retries")

    def retries_exhausted(self, service: str, client: str, attempts: int) -> None:
        self._bump(service, "exhausted")

    def dead_lettered(self, letter: DeadLetter) -> None:
        self._bump(letter.service, "dead")

    def failover(self, service: str, client: str, error_type: str) -> None:
        first = self.snapshot(service).failovers == 0
        self._bump(service, "failovers")
        if first:  # one line tells the story; the count is in the summary
            self._events.add(f"{service}: {error_type} from a demoted primary: connections "
                             "retired, the write resent on a new one")  # fmt: skip

    def state_changed(self, service: str, change: StateChange) -> None:
        if change.to_state.value == "open":
            self._bump(service, "opened")
        elif change.to_state.value == "closed":
            self._bump(service, "closed")
        self._events.add(f"breaker {service}: {change.from_state} -> {change.to_state}")

    def replayed(self, service: str, result: ReplayResult) -> None:
        """Count a replay pass over ``service``'s dead letters."""
        self._bump(service, "replayed", result.succeeded)
        self._bump(service, "replay_failed", result.failed)

    def snapshot(self, service: str) -> Counts:
        """A copy of ``service``'s totals."""
        with self._lock:
            return replace(self._counts.get(service, Counts()))


@dataclass(frozen=True, slots=True)
class Row:
    """One service as the views show it."""

    service: str
    client: str
    status: str
    score: float
    breaker: str
    rate: float
    error_rate: float
    p95: float | None
    counts: Counts
    has_queue: bool


class Sampler:
    """Builds :class:`Row` values; calls per second are averaged over the last second."""

    def __init__(self, recorder: Recorder, monitor: HealthMonitor) -> None:
        self._recorder = recorder
        self._monitor = monitor
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def row(self, service: str, client: str, breaker: str, *, has_queue: bool) -> Row:
        """The current row of ``service``."""
        counts = self._recorder.snapshot(service)
        health = self._monitor.status(service)
        return Row(
            service=service,
            client=client,
            status=health.status,
            score=health.score,
            breaker=breaker,
            rate=self._rate(service, counts.calls),
            error_rate=health.error_rate,
            p95=health.response_time.p95,
            counts=counts,
            has_queue=has_queue,
        )

    def _rate(self, service: str, calls: int) -> float:
        now = time.monotonic()
        history = self._history.setdefault(service, deque())
        history.append((now, calls))
        while len(history) > 2 and now - history[1][0] >= 1.0:
            history.popleft()
        then, before = history[0]
        return 0.0 if now - then <= 0 else (calls - before) / (now - then)
