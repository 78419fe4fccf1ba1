"""The health gauges, read through an in-memory OTel SDK reader (no sockets, fake clock)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, NumberDataPoint

from resilience_otel import ErrorClass, HealthConfig, HealthMonitor
from resilience_otel.testing import FakeClock

CONFIG = HealthConfig(window=60.0, window_buckets=6, minimum_calls=10)
STATUS = "resilience.health.status"
SCORE = "resilience.health.score"
ERRORS = "resilience.health.error_ratio"
LATENCY = "resilience.health.response_time"

Labels = tuple[tuple[str, str], ...]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An in-memory metric reader."""
    return InMemoryMetricReader()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock."""
    return FakeClock()


@pytest.fixture
def monitor(reader: InMemoryMetricReader, clock: FakeClock) -> HealthMonitor:
    """A monitor whose gauges go to ``reader``."""
    provider = MeterProvider(metric_readers=[reader])
    return HealthMonitor(CONFIG, clock=clock, meter_provider=provider)


def feed(
    monitor: HealthMonitor, service: str, *, ok: int = 0, failed: int = 0, duration: float = 0.05
) -> None:
    """Report ``ok`` successes and ``failed`` TRANSIENT failures of ``service``."""
    for _ in range(ok):
        monitor.call_finished(service, "http", "success", None, 1, duration)
    for _ in range(failed):
        monitor.call_finished(service, "http", "failure", ErrorClass.TRANSIENT, 1, duration)


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """Every metric collected now, by name."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(reader: InMemoryMetricReader, name: str) -> dict[Labels, float]:
    """The data points of metric ``name`` as {sorted labels: value} ({} when absent)."""
    metric = collect(reader).get(name)
    if metric is None:
        return {}
    found: dict[Labels, float] = {}
    for point in metric.data.data_points:
        assert isinstance(point, NumberDataPoint)
        attributes: Mapping[str, object] = point.attributes or {}
        found[tuple(sorted((k, str(v)) for k, v in attributes.items()))] = point.value
    return found


def status_points(service: str, current: str) -> dict[Labels, float]:
    """The expected status gauge of one service: 1 for ``current``, 0 for the others."""
    return {
        (("service", service), ("status", value)): float(value == current)
        for value in ("healthy", "degraded", "unhealthy")
    }


def test_no_points_before_any_service_is_seen(reader: InMemoryMetricReader) -> None:
    """A fresh monitor reports no health series."""
    HealthMonitor(CONFIG, meter_provider=MeterProvider(metric_readers=[reader]))
    assert [points(reader, name) for name in (STATUS, SCORE, ERRORS, LATENCY)] == [{}] * 4


def test_status_gauge_is_one_for_the_current_status_only(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """A healthy service: status="healthy" is 1, degraded and unhealthy are 0."""
    feed(monitor, "quotes", ok=20)
    assert points(reader, STATUS) == status_points("quotes", "healthy")


def test_status_gauge_follows_a_transition(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """After failures the 1 moves to status="unhealthy"."""
    feed(monitor, "quotes", ok=20)
    assert points(reader, STATUS) == status_points("quotes", "healthy")
    feed(monitor, "quotes", failed=20)
    assert points(reader, STATUS) == status_points("quotes", "unhealthy")


def test_status_gauge_has_three_series_per_service(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """Each service gets its own healthy/degraded/unhealthy series."""
    feed(monitor, "quotes", ok=20)
    feed(monitor, "cache", ok=98, failed=2)
    assert points(reader, STATUS) == {
        **status_points("quotes", "healthy"),
        **status_points("cache", "degraded"),
    }


def test_score_gauge_reports_the_score(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """90% availability, fast, no breaker: score 0.94."""
    feed(monitor, "quotes", ok=90, failed=10)
    assert points(reader, SCORE) == {(("service", "quotes"),): 0.94}


def test_score_gauge_is_halved_by_failing_checks(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """A failed active check halves the score reported."""
    monitor.record_check("quotes", ok=False)
    assert points(reader, SCORE) == {(("service", "quotes"),): 0.5}


def test_error_ratio_gauge_reports_failed_share(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """3 failures in 12 calls: error ratio 0.25."""
    feed(monitor, "quotes", ok=9, failed=3)
    assert points(reader, ERRORS) == {(("service", "quotes"),): 0.25}


def test_error_ratio_gauge_forgets_expired_calls(
    monitor: HealthMonitor, reader: InMemoryMetricReader, clock: FakeClock
) -> None:
    """Once the window has passed the ratio is back to 0."""
    feed(monitor, "quotes", failed=5)
    clock.advance(CONFIG.window)
    assert points(reader, ERRORS) == {(("service", "quotes"),): 0.0}


def test_response_time_gauge_reports_p50_and_p95(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """percentile="50" and "95" series carry the monitor's p50 and p95 (seconds)."""
    feed(monitor, "quotes", ok=90, duration=0.02)
    feed(monitor, "quotes", ok=10, duration=0.4)
    rt = monitor.status("quotes").response_time
    found = points(reader, LATENCY)
    assert found == {
        (("percentile", "50"), ("service", "quotes")): rt.p50,
        (("percentile", "95"), ("service", "quotes")): rt.p95,
    }
    p50 = found[(("percentile", "50"), ("service", "quotes"))]
    p95 = found[(("percentile", "95"), ("service", "quotes"))]
    assert 0.02 <= p50 <= 0.02 * 1.12
    assert 0.4 <= p95 <= 0.4 * 1.12


def test_response_time_gauge_absent_without_latency_samples(
    monitor: HealthMonitor, reader: InMemoryMetricReader
) -> None:
    """Only rejected calls: no response-time series (status series still exist)."""
    for _ in range(3):
        monitor.call_finished("quotes", "http", "rejected", None, 0, 0.0)
    assert points(reader, LATENCY) == {}
    assert points(reader, STATUS) == status_points("quotes", "healthy")


def test_gauge_units(monitor: HealthMonitor, reader: InMemoryMetricReader) -> None:
    """Response time is in seconds; score and error ratio are unit-less ratios."""
    feed(monitor, "quotes", ok=1)
    metrics = collect(reader)
    assert (metrics[LATENCY].unit, metrics[SCORE].unit, metrics[ERRORS].unit) == ("s", "1", "1")
