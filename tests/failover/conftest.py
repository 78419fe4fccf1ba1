"""Fixtures for failover tests: in-memory telemetry and the short policy every scenario uses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from resilience_otel import BreakerConfig, Jitter, Policy, RetryConfig
from resilience_otel._telemetry import semconv
from tests.support.otel import Otel as BaseOtel

FAILOVER_EVENT = "resilience.failover"

RESET_TIMEOUT = 0.5
CALL_TIMEOUT = 1.0
# A switchover must be over within one open period of the breaker and one probe call, plus
# room for a loaded CI machine to schedule the writer threads.
RECOVERY_BOUND = RESET_TIMEOUT + CALL_TIMEOUT + 0.5


def failover_policy(
    service: str, *, call_timeout: float = CALL_TIMEOUT, failure_threshold: int = 10
) -> Policy:
    """Short timeouts and 10 ms backoff, so a scenario recovers (or fails) within seconds.

    By default the breaker opens after 10 failures: the few refused writes of one switchover
    do not open it; with ``failure_threshold=1`` the first one does, and it half-opens after
    ``RESET_TIMEOUT``. ``call_timeout`` must outlast
    the time writes are paused by the switchover, or they end as timeouts instead.
    """
    return Policy(
        service=service,
        breaker=BreakerConfig(
            failure_threshold=failure_threshold,
            monitoring_period=10.0,
            reset_timeout=RESET_TIMEOUT,
            call_timeout=call_timeout,
        ),
        retry=RetryConfig(
            max_attempts=3,
            base_delay=0.01,
            max_delay=0.05,
            multiplier=2.0,
            jitter=Jitter.NONE,
            budget=None,
        ),
    )


def failovers_metric() -> str:
    """The OTel name of the metric exported as ``resilience_failovers_total``."""
    return semconv.FAILOVERS[0]


class Otel(BaseOtel):
    """In-memory telemetry, with the failover counter and span events."""

    def failover_events(self) -> list[dict[str, Any]]:
        """Attributes of every ``resilience.failover`` span event."""
        return [
            dict(event.attributes or {})
            for span in self.spans()
            for event in span.events
            if event.name == FAILOVER_EVENT
        ]

    def counter_points(self, metric: str) -> list[tuple[dict[str, Any], float]]:
        """``(attributes, value)`` of every point of the counter ``metric``."""
        return [(attributes, getattr(p, "value", 0)) for attributes, p in self.points(metric)]

    def counter_total(self, metric: str, **attributes: str) -> float:
        """Sum of the points of the counter ``metric`` that carry ``attributes``."""
        return sum(
            value
            for point, value in self.counter_points(metric)
            if all(point.get(key) == wanted for key, wanted in attributes.items())
        )

    def failovers(self) -> float:
        """How many failovers the package counted."""
        return self.counter_total(failovers_metric())


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh SDK providers with in-memory exporters."""
    telemetry = Otel()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
