"""The implementation behind :mod:`resilience_otel.health` (documented there)."""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .._config.policy import HealthConfig, check_service_name
from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.validate import (
    MAX_DURATION,
    check_bool,
    check_callable,
    check_names,
    check_optional_float,
    check_type,
)
from .._telemetry import semconv as sc
from .._telemetry.events import Observer
from .builtins import http_check, postgres_check, redis_check
from .checks import (
    CheckLog,
    CheckRunner,
    HealthCheck,
    Outcome,
    run_check,
)
from .scoring import ServiceWindow, assess
from .status import HealthStatus, ResponseTime, SystemHealth

if TYPE_CHECKING:
    from .._core.breaker import BreakerSnapshot, CircuitBreaker, StateChange
    from .._core.classify import ErrorClass

__all__ = [
    "HealthCheck",
    "HealthMonitor",
    "HealthStatus",
    "ResponseTime",
    "SystemHealth",
    "http_check",
    "postgres_check",
    "redis_check",
]

_log = logging.getLogger("resilience_otel.health")
_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass
class _Service:
    window: ServiceWindow
    breakers: list[weakref.ref[CircuitBreaker]] = field(default_factory=list)
    checks: list[tuple[HealthCheck, float, float]] = field(default_factory=list)
    consecutive_failures: int = 0
    last_checked: float | None = None
    last_status: str | None = None


class HealthMonitor(Observer):
    """Tracks every service it hears about; thread-safe, bounded memory.

    Pass it as an observer to transports and clients (``observers=[monitor]``): it then sees
    every call and every breaker of those clients.

    Args:
        config: thresholds and intervals.
        optional: services that can make the overall status at most degraded.
        clock: time source (a fake one in tests).
        meter_provider: where the health gauges go (default: global).
    """

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        optional: Iterable[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        meter_provider: Any = None,
    ) -> None:
        if config is not None:
            check_type("HealthMonitor(config=...)", config, HealthConfig)
        if not callable(getattr(clock, "monotonic", None)):
            raise TypeError(f"HealthMonitor(clock=...) must be a Clock, got {clock!r}")
        self.config = config or HealthConfig()
        self.optional = check_names("HealthMonitor(optional=...)", optional)
        self._clock = clock
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}
        self._runner: CheckRunner | None = None
        self._check_log = CheckLog()
        self._register_gauges(meter_provider)

    # -- feeding ---------------------------------------------------------------------------------
    def _service(self, name: str) -> _Service:
        service = self._services.get(name)
        if service is None:
            with self._lock:
                service = self._services.setdefault(
                    name, _Service(ServiceWindow(self.config.window, self.config.window_buckets))
                )
        return service

    def call_finished(
        self,
        service: str,
        client: str,
        outcome: str,
        error_class: ErrorClass | None,
        attempts: int,
        duration: float,
    ) -> None:
        # A client error (PERMANENT) still means the upstream answered: it counts as available.
        ok = outcome == "success" or (error_class is not None and error_class.value == "permanent")
        state = self._service(service)
        with self._lock:
            state.window.add(
                self._clock.monotonic(), ok=ok, duration=None if outcome == "rejected" else duration
            )

    def breaker_added(self, service: str, breaker: CircuitBreaker) -> None:
        state = self._service(service)
        with self._lock:
            state.breakers = [r for r in state.breakers if r() is not None]
            if all(r() is not breaker for r in state.breakers):
                state.breakers.append(weakref.ref(breaker))

    def state_changed(self, service: str, change: StateChange) -> None:
        self.status(service)  # a breaker transition may change the status: log it now

    def record_check(self, service: str, ok: bool) -> None:
        """Count the result of an active check of ``service``."""
        check_bool("record_check(ok=...)", ok)
        state = self._service(service)
        with self._lock:
            state.consecutive_failures = 0 if ok else state.consecutive_failures + 1
            state.last_checked = self._clock.time()
        self.status(service)

    # -- reading ---------------------------------------------------------------------------------
    def services(self) -> list[str]:
        """Every service seen so far, sorted."""
        with self._lock:
            return sorted(self._services)

    def status(self, service: str) -> HealthStatus:
        """The current health of ``service`` (a service never seen is healthy, with no data)."""
        state = self._services.get(service)
        if state is None:  # reading must not register services (bounded memory)
            state = _Service(ServiceWindow(self.config.window, 1))
        now = self._clock.monotonic()
        breakers = [b for b in (r() for r in state.breakers) if b is not None]
        breaker_state = _worst_breaker([b.state.value for b in breakers])
        with self._lock:
            successes, failures = state.window.counts(now)
            p50, p95 = state.window.quantile(now, 0.5), state.window.quantile(now, 0.95)
            consecutive, last_checked = state.consecutive_failures, state.last_checked
        verdict = assess(
            self.config,
            successes=successes,
            failures=failures,
            p95=p95,
            breaker_state=breaker_state,
            consecutive_check_failures=consecutive,
        )
        calls = successes + failures
        result = HealthStatus(
            service=service,
            status=verdict.status,
            score=verdict.score,
            availability=verdict.availability,
            error_rate=0.0 if calls == 0 else failures / calls,
            response_time=ResponseTime(p50, p95),
            breaker_state=breaker_state,
            consecutive_failures=consecutive,
            last_checked=last_checked,
            reasons=verdict.reasons,
        )
        self._note_transition(state, result)
        return result

    def overall(self) -> SystemHealth:
        """Every service's status and the aggregate."""
        statuses = tuple(self.status(name) for name in self.services())
        worst = "healthy"
        for item in statuses:
            rank = _RANK[item.status]
            if item.service in self.optional:
                rank = min(rank, _RANK["degraded"])
            if rank > _RANK[worst]:
                worst = ("healthy", "degraded", "unhealthy")[rank]
        return SystemHealth(worst, statuses)

    def breaker_snapshots(self) -> list[BreakerSnapshot]:
        """Snapshots of every breaker of every service (for ``/breakers``)."""
        with self._lock:
            refs = [r for s in self._services.values() for r in s.breakers]
        return [b.snapshot() for b in (r() for r in refs) if b is not None]

    def _note_transition(self, state: _Service, result: HealthStatus) -> None:
        with self._lock:  # concurrent readers must not report one change twice
            previous, state.last_status = state.last_status, result.status
        if previous is None or previous == result.status:
            return
        _log.info(
            "service %r: %s -> %s (%s)",
            result.service,
            previous,
            result.status,
            "; ".join(result.reasons) or "recovered",
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "resilience.health.status_change",
                {
                    sc.RESILIENCE_SERVICE: result.service,
                    "resilience.health.from": previous,
                    "resilience.health.to": result.status,
                },
            )

    # -- active checks ---------------------------------------------------------------------------
    def add_check(
        self,
        service: str,
        check: HealthCheck,
        *,
        interval: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run ``check`` every ``interval`` seconds (default ``config.check_interval``) once
        the monitor is started; a check slower than ``timeout`` (default
        ``config.check_timeout``) fails. Both are more than 0 and at most 86400.

        Raises:
            ConfigError: a bad service name, interval or timeout.
            TypeError: ``check`` is not callable.
        """
        check_service_name("add_check(service=...)", service)
        check_callable("add_check(check=...)", check)
        every = check_optional_float("add_check(interval=...)", interval, 0.0, MAX_DURATION)
        limit = check_optional_float("add_check(timeout=...)", timeout, 0.0, MAX_DURATION)
        state = self._service(service)
        with self._lock:
            state.checks.append(
                (
                    check,
                    self.config.check_interval if every is None else every,
                    self.config.check_timeout if limit is None else limit,
                )
            )

    async def run_checks(self) -> dict[str, bool]:
        """Run every check once, concurrently, on the running loop; returns results by service."""
        with self._lock:
            jobs = [(name, c, t) for name, s in self._services.items() for c, _, t in s.checks]
        results = await asyncio.gather(*(run_check(check, timeout) for _, check, timeout in jobs))
        failed: dict[str, Outcome] = {}
        for (name, _, _), result in zip(jobs, results, strict=True):
            if not result[0]:
                failed.setdefault(name, result)
        outcome = {name: name not in failed for name, _, _ in jobs}
        for name in outcome:
            self._record_outcome(name, failed.get(name, (True, "")))
        return outcome

    def start(self) -> None:
        """Run the checks on their intervals in a background thread (its own event loop)."""
        if self._runner is None:
            self._runner = CheckRunner(self)
            self._runner.start_thread()

    async def astart(self) -> None:
        """Run the checks on their intervals as a task of the running event loop."""
        if self._runner is None:
            self._runner = CheckRunner(self)
            self._runner.start_task()

    def stop(self) -> None:
        """Stop running checks."""
        if self._runner is not None:
            self._runner.stop()
            self._runner = None

    def _record_outcome(self, service: str, outcome: Outcome) -> None:
        self.record_check(service, outcome[0])
        if not outcome[0]:
            self._check_log.failed(service, outcome[1], self._clock.monotonic())

    def _check_intervals(self) -> list[float]:
        with self._lock:
            return [interval for s in self._services.values() for _, interval, _ in s.checks]

    def _due_checks(
        self, now: float, last_run: dict[tuple[str, int], float]
    ) -> list[tuple[str, HealthCheck, float]]:
        with self._lock:
            due = []
            for name, state in self._services.items():
                for check, interval, timeout in state.checks:
                    key = (name, id(check))  # one callable may check several services
                    if now - last_run.get(key, float("-inf")) >= interval:
                        last_run[key] = now
                        due.append((name, check, timeout))
            return due

    # -- metrics ---------------------------------------------------------------------------------
    def _register_gauges(self, meter_provider: Any) -> None:
        meter = metrics.get_meter(sc.SCOPE_NAME, "0.1.0", meter_provider)
        gauges = (
            (sc.HEALTH_STATUS, self._observe_status),
            (sc.HEALTH_SCORE, self._observe_score),
            (sc.HEALTH_ERROR_RATIO, self._observe_errors),
            (sc.HEALTH_RESPONSE_TIME, self._observe_latency),
        )
        for (name, unit, description), callback in gauges:
            meter.create_observable_gauge(
                name, callbacks=[callback], unit=unit, description=description
            )

    def _observe_status(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(int(s.status == value), {sc.SERVICE: s.service, sc.STATUS: value})
            for s in self.overall().services
            for value in sc.HEALTH_STATUS_VALUES
        ]

    def _observe_score(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.score, {sc.SERVICE: s.service}) for s in self.overall().services]

    def _observe_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.error_rate, {sc.SERVICE: s.service}) for s in self.overall().services]

    def _observe_latency(self, options: CallbackOptions) -> Iterable[Observation]:
        found = []
        for s in self.overall().services:
            for percentile, value in (("50", s.response_time.p50), ("95", s.response_time.p95)):
                if value is not None:
                    found.append(
                        Observation(value, {sc.SERVICE: s.service, sc.PERCENTILE: percentile})
                    )
        return found


def _worst_breaker(states: list[str]) -> str | None:
    order = ("closed", "forced_closed", "half_open", "open", "forced_open")
    return max(states, key=order.index) if states else None
