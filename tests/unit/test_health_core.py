"""Health bookkeeping: the rolling window, the status and score rules, the monitor fed through
its observer hooks on a fake clock, aggregation, configuration, and transition logging."""

from __future__ import annotations

import gc
import logging
import math
import tracemalloc
from collections.abc import Mapping

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience_otel import (
    BreakerConfig,
    CircuitBreaker,
    ConfigError,
    ErrorClass,
    HealthConfig,
    HealthMonitor,
)
from resilience_otel._health.scoring import ServiceWindow, assess
from resilience_otel.testing import FakeClock

SERVICE = "quotes"
RESOLUTION = 1.12  # latency buckets are 12% apart; a quantile is a bucket's upper bound

# A config whose numbers are easy to reason about: a 60 s window in six 10 s buckets.
CONFIG = HealthConfig(window=60.0, window_buckets=6, minimum_calls=10)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at t=1000."""
    return FakeClock()


@pytest.fixture
def monitor(clock: FakeClock) -> HealthMonitor:
    """A monitor on the fake clock whose gauges go nowhere."""
    return HealthMonitor(CONFIG, clock=clock, meter_provider=NoOpMeterProvider())


def feed(
    monitor: HealthMonitor,
    *,
    ok: int = 0,
    failed: int = 0,
    duration: float = 0.05,
    service: str = SERVICE,
    error_class: ErrorClass = ErrorClass.TRANSIENT,
) -> None:
    """Report ``ok`` successful and ``failed`` failed calls of ``service``."""
    for _ in range(ok):
        monitor.call_finished(service, "http", "success", None, 1, duration)
    for _ in range(failed):
        monitor.call_finished(service, "http", "failure", error_class, 1, duration)


def breaker(clock: FakeClock, name: str = SERVICE) -> CircuitBreaker:
    """A breaker that opens on the first failure and half-opens 30 s later."""
    config = BreakerConfig(failure_threshold=1, reset_timeout=30.0, call_timeout=None)
    return CircuitBreaker(config, name=name, clock=clock)


def trip(cb: CircuitBreaker, clock: FakeClock) -> None:
    """Open ``cb`` with one failed call."""
    permit = cb.acquire(clock.monotonic())
    cb.record(permit, failure=True, duration=0.01, now=clock.monotonic())


def probe_ok(cb: CircuitBreaker, clock: FakeClock) -> None:
    """Run one successful (half-open probe) call through ``cb``."""
    permit = cb.acquire(clock.monotonic())
    cb.record(permit, failure=False, duration=0.01, now=clock.monotonic())


def near(value: float | None, true: float) -> bool:
    """Whether a reported quantile is ``true`` rounded up to its bucket (at most 12% above)."""
    return value is not None and true <= value <= true * RESOLUTION


def verdict(config: HealthConfig = CONFIG, **evidence: object) -> tuple[str, tuple[str, ...]]:
    """``assess`` with neutral evidence overridden by ``evidence``: (status, reasons)."""
    base: dict[str, object] = {
        "successes": 0,
        "failures": 0,
        "p95": None,
        "breaker_state": None,
        "consecutive_check_failures": 0,
    }
    base.update(evidence)
    result = assess(config, **base)  # type: ignore[arg-type]
    return result.status, result.reasons


# -- ServiceWindow -------------------------------------------------------------------------------
def test_window_counts_successes_and_failures() -> None:
    """Outcomes added within the window are counted as (successes, failures)."""
    window = ServiceWindow(60.0, 6)
    for _ in range(7):
        window.add(5.0, ok=True, duration=0.1)
    for _ in range(3):
        window.add(25.0, ok=False, duration=None)
    assert window.counts(30.0) == (7, 3)


def test_window_keeps_a_sample_until_its_bucket_leaves_the_window() -> None:
    """A sample in bucket [0, 10) counts until t=60 and is gone at t=60."""
    window = ServiceWindow(60.0, 6)
    window.add(5.0, ok=False, duration=0.1)
    assert window.counts(59.999) == (0, 1)
    assert window.counts(60.0) == (0, 0)


def test_window_expires_buckets_one_by_one() -> None:
    """Older buckets expire first; newer ones stay counted."""
    window = ServiceWindow(60.0, 6)
    window.add(5.0, ok=True, duration=None)
    window.add(15.0, ok=False, duration=None)
    assert window.counts(60.0) == (0, 1)
    assert window.counts(70.0) == (0, 0)


def test_window_reused_slot_drops_its_old_counts() -> None:
    """A slot reused one full window later starts from zero."""
    window = ServiceWindow(60.0, 6)
    for _ in range(5):
        window.add(5.0, ok=False, duration=1.0)
    window.add(65.0, ok=True, duration=0.01)
    p95 = window.quantile(65.0, 0.95)
    assert window.counts(65.0) == (1, 0)
    assert near(p95, 0.01)


def test_window_quantiles_of_known_samples_within_bucket_resolution() -> None:
    """p50 and p95 of 0.01..1.00 s lie between the true value and one bucket (12%) above."""
    window = ServiceWindow(60.0, 6)
    for i in range(1, 101):
        window.add(10.0 + i * 0.1, ok=True, duration=i / 100)
    for q, true in ((0.5, 0.50), (0.95, 0.95), (0.99, 0.99)):
        value = window.quantile(30.0, q)
        assert value is not None
        assert true <= value <= true * RESOLUTION, (q, value)


def test_window_quantiles_separate_a_slow_tail() -> None:
    """With 90% fast and 10% slow calls, p50 is fast and p95 is slow."""
    window = ServiceWindow(60.0, 6)
    for _ in range(90):
        window.add(1.0, ok=True, duration=0.010)
    for _ in range(10):
        window.add(1.0, ok=True, duration=2.0)
    p50, p95 = window.quantile(1.0, 0.5), window.quantile(1.0, 0.95)
    assert near(p50, 0.010)
    assert near(p95, 2.0)


def test_window_quantile_is_none_without_latency_samples() -> None:
    """Outcomes without a duration leave the quantiles undefined."""
    window = ServiceWindow(60.0, 6)
    window.add(1.0, ok=False, duration=None)
    assert window.quantile(1.0, 0.5) is None


def test_window_quantile_forgets_expired_samples() -> None:
    """Latency samples leave the quantiles when their bucket expires."""
    window = ServiceWindow(60.0, 6)
    window.add(1.0, ok=True, duration=3.0)
    window.add(30.0, ok=True, duration=0.02)
    p95 = window.quantile(61.0, 0.95)
    assert near(p95, 0.02)


def test_window_memory_does_not_grow_with_traffic() -> None:
    """Five windows' more traffic (30k calls) allocates no lasting memory."""
    window = ServiceWindow(60.0, 6)

    def traffic(start: float, seconds: int) -> None:
        for t in range(seconds * 100):
            now = start + t / 100
            window.add(now, ok=t % 7 != 0, duration=0.001 * (1 + t % 500))

    traffic(0.0, 60)  # every bucket and histogram exists now
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        traffic(60.0, 300)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16_384


# -- assess: score ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("successes", "failures", "p95", "breaker_state", "check_failures", "score"),
    [
        (0, 0, None, None, 0, 1.0),
        (100, 0, 0.2, "closed", 0, 1.0),
        (90, 10, None, None, 0, 0.94),  # 0.6*0.9 + 0.25 + 0.15
        (100, 0, 4.0, "closed", 0, 0.8125),  # latency factor 1/4
        (100, 0, None, "half_open", 0, 0.925),  # breaker factor 0.5
        (100, 0, None, "open", 0, 0.85),  # breaker factor 0
        (100, 0, None, "forced_open", 0, 0.85),
        (100, 0, None, "forced_closed", 0, 1.0),
        (9, 1, 2.0, "half_open", 1, 0.37),  # (0.54 + 0.125 + 0.075) / 2
        (0, 10, 4.0, "open", 0, 0.0625),
        (1, 2, 3.0, "closed", 5, 0.2167),  # (0.2 + 0.08333 + 0.15) / 2, rounded to 4 places
    ],
)
def test_score_follows_documented_formula(
    successes: int,
    failures: int,
    p95: float | None,
    breaker_state: str | None,
    check_failures: int,
    score: float,
) -> None:
    """score = 0.6 availability + 0.25 latency + 0.15 breaker factor, halved on failed checks."""
    result = assess(
        CONFIG,
        successes=successes,
        failures=failures,
        p95=p95,
        breaker_state=breaker_state,
        consecutive_check_failures=check_failures,
    )
    assert result.score == score


def test_availability_is_one_without_calls() -> None:
    """No calls means availability 1.0, not a division by zero."""
    result = assess(
        CONFIG,
        successes=0,
        failures=0,
        p95=None,
        breaker_state=None,
        consecutive_check_failures=0,
    )
    assert (result.status, result.availability, result.reasons) == ("healthy", 1.0, ())


# -- assess: status and threshold edges ------------------------------------------------------------
@pytest.mark.parametrize(
    ("evidence", "status", "reasons"),
    [
        ({"successes": 95, "failures": 5}, "degraded", ("availability 0.950 below 0.99",)),
        ({"successes": 94, "failures": 6}, "unhealthy", ("availability 0.940 below 0.95",)),
        ({"successes": 99, "failures": 1}, "healthy", ()),
        ({"successes": 98, "failures": 2}, "degraded", ("availability 0.980 below 0.99",)),
        ({"successes": 0, "failures": 9}, "healthy", ()),  # below minimum_calls: not judged
        ({"successes": 0, "failures": 10}, "unhealthy", ("availability 0.000 below 0.95",)),
        ({"p95": 1.0}, "healthy", ()),
        ({"p95": 1.5}, "degraded", ("p95 1.500s above target 1.0s",)),
        ({"consecutive_check_failures": 1}, "degraded", ("last active check failed",)),
        ({"consecutive_check_failures": 2}, "degraded", ("last active check failed",)),
        (
            {"consecutive_check_failures": 3},
            "unhealthy",
            ("3 active checks failed in a row",),
        ),
        ({"breaker_state": "closed"}, "healthy", ()),
        ({"breaker_state": "forced_closed"}, "healthy", ()),
        ({"breaker_state": "half_open"}, "degraded", ("circuit breaker half-open",)),
        ({"breaker_state": "open"}, "unhealthy", ("circuit breaker open",)),
        ({"breaker_state": "forced_open"}, "unhealthy", ("circuit breaker open",)),
    ],
)
def test_status_at_threshold_edges(
    evidence: dict[str, object], status: str, reasons: tuple[str, ...]
) -> None:
    """Each rule changes the status exactly past its threshold, with its reason."""
    assert verdict(**evidence) == (status, reasons)


def test_unhealthy_lists_every_unhealthy_reason_and_no_degraded_ones() -> None:
    """An open breaker, low availability and failing checks are all named; p95 is not."""
    assert verdict(
        successes=1,
        failures=9,
        p95=5.0,
        breaker_state="open",
        consecutive_check_failures=3,
    ) == (
        "unhealthy",
        (
            "circuit breaker open",
            "availability 0.100 below 0.95",
            "3 active checks failed in a row",
        ),
    )


def test_degraded_lists_every_degraded_reason() -> None:
    """Half-open breaker, low availability, slow p95 and a failed check are all named."""
    assert verdict(
        successes=97,
        failures=3,
        p95=2.0,
        breaker_state="half_open",
        consecutive_check_failures=1,
    ) == (
        "degraded",
        (
            "circuit breaker half-open",
            "availability 0.970 below 0.99",
            "p95 2.000s above target 1.0s",
            "last active check failed",
        ),
    )


def test_thresholds_come_from_the_config() -> None:
    """Custom alert/degraded thresholds, minimum_calls, latency target and check count apply."""
    config = HealthConfig(
        alert_threshold=0.5,
        degraded_threshold=0.8,
        minimum_calls=2,
        latency_target=0.1,
        failures_to_unhealthy=1,
    )
    assert verdict(config, successes=1, failures=1)[0] == "degraded"
    assert verdict(config, successes=0, failures=2)[0] == "unhealthy"
    assert verdict(config, successes=0, failures=1)[0] == "healthy"
    assert verdict(config, p95=0.11)[0] == "degraded"
    assert verdict(config, consecutive_check_failures=1)[0] == "unhealthy"


# -- HealthMonitor fed through its hooks ---------------------------------------------------------
def test_unseen_service_is_healthy_without_data(monitor: HealthMonitor) -> None:
    """A service never heard of reads healthy, score 1, no latency, no breaker, no checks."""
    health = monitor.status("ghost")
    assert (health.status, health.score, health.availability, health.error_rate) == (
        "healthy",
        1.0,
        1.0,
        0.0,
    )
    assert (health.response_time.p50, health.response_time.p95) == (None, None)
    assert (health.breaker_state, health.consecutive_failures, health.last_checked) == (
        None,
        0,
        None,
    )


def test_monitor_walks_healthy_degraded_unhealthy_recovered(
    monitor: HealthMonitor, clock: FakeClock
) -> None:
    """Calls and a breaker move a service healthy -> degraded -> unhealthy -> recovered."""
    cb = breaker(clock)
    monitor.breaker_added(SERVICE, cb)
    feed(monitor, ok=99)
    assert monitor.status(SERVICE).status == "healthy"
    feed(monitor, failed=2)  # 99/101 = 0.980
    assert monitor.status(SERVICE).status == "degraded"
    trip(cb, clock)
    unhealthy = monitor.status(SERVICE)
    assert (unhealthy.status, unhealthy.breaker_state) == ("unhealthy", "open")
    clock.advance(30.0)  # reset timeout: the breaker reads half-open
    half_open = monitor.status(SERVICE)
    assert (half_open.status, half_open.breaker_state) == ("degraded", "half_open")
    clock.advance(60.0)  # the failures leave the window
    probe_ok(cb, clock)
    recovered = monitor.status(SERVICE)
    assert (recovered.status, recovered.breaker_state, recovered.score) == (
        "healthy",
        "closed",
        1.0,
    )


def test_status_reports_availability_error_rate_and_score(monitor: HealthMonitor) -> None:
    """90 successes and 10 failures: availability 0.9, error rate 0.1, score 0.94."""
    feed(monitor, ok=90, failed=10)
    health = monitor.status(SERVICE)
    assert (health.availability, health.error_rate, health.score) == (0.9, 0.1, 0.94)
    assert health.status == "unhealthy"


def test_permanent_failures_count_as_available(monitor: HealthMonitor) -> None:
    """Client errors (PERMANENT) mean the upstream answered: availability stays 1."""
    feed(monitor, ok=5, failed=20, error_class=ErrorClass.PERMANENT)
    health = monitor.status(SERVICE)
    assert (health.status, health.availability, health.error_rate) == ("healthy", 1.0, 0.0)


@pytest.mark.parametrize("error_class", [ErrorClass.TRANSIENT, ErrorClass.CRITICAL])
def test_transient_and_critical_failures_count_against_availability(
    monitor: HealthMonitor, error_class: ErrorClass
) -> None:
    """TRANSIENT and CRITICAL failures lower availability."""
    feed(monitor, ok=15, failed=5, error_class=error_class)
    assert monitor.status(SERVICE).availability == 0.75


def test_rejected_calls_count_as_failures_without_latency(monitor: HealthMonitor) -> None:
    """A call rejected by an open breaker is a failure and adds no response time."""
    for _ in range(10):
        monitor.call_finished(SERVICE, "http", "rejected", None, 0, 0.0)
    health = monitor.status(SERVICE)
    assert (health.status, health.error_rate) == ("unhealthy", 1.0)
    assert (health.response_time.p50, health.response_time.p95) == (None, None)


def test_rejected_call_duration_is_not_a_latency_sample(monitor: HealthMonitor) -> None:
    """Rejections do not drag p50 down next to real calls."""
    feed(monitor, ok=10, duration=0.5)
    for _ in range(30):
        monitor.call_finished(SERVICE, "http", "rejected", None, 0, 0.0)
    p50 = monitor.status(SERVICE).response_time.p50
    assert near(p50, 0.5)


def test_call_durations_feed_response_time(monitor: HealthMonitor) -> None:
    """p50/p95 reflect call durations within the bucket resolution."""
    feed(monitor, ok=90, duration=0.02)
    feed(monitor, ok=10, duration=0.3)
    rt = monitor.status(SERVICE).response_time
    assert near(rt.p50, 0.02)
    assert near(rt.p95, 0.3)


def test_slow_service_is_degraded_with_latency_factor_in_score(monitor: HealthMonitor) -> None:
    """A p95 above latency_target degrades and scores 0.6 + 0.25 * target / p95 + 0.15."""
    feed(monitor, ok=20, duration=2.0)
    health = monitor.status(SERVICE)
    p95 = health.response_time.p95
    assert near(p95, 2.0)
    assert health.status == "degraded"
    assert health.score == round(0.6 + 0.25 * (1.0 / p95) + 0.15, 4)


def test_failures_leave_the_window(monitor: HealthMonitor, clock: FakeClock) -> None:
    """Once the window has passed, old failures no longer count."""
    feed(monitor, failed=20)
    assert monitor.status(SERVICE).status == "unhealthy"
    clock.advance(CONFIG.window)
    health = monitor.status(SERVICE)
    assert (health.status, health.error_rate, health.availability) == ("healthy", 0.0, 1.0)


def test_failures_within_the_window_still_count(monitor: HealthMonitor, clock: FakeClock) -> None:
    """Failures one bucket short of the window's end still count."""
    feed(monitor, failed=20)
    clock.advance(CONFIG.window - 10.0)
    assert monitor.status(SERVICE).status == "unhealthy"


def test_failed_checks_degrade_then_make_unhealthy(monitor: HealthMonitor) -> None:
    """One or two failed checks degrade; the third in a row makes the service unhealthy."""
    seen = []
    for _ in range(3):
        monitor.record_check(SERVICE, ok=False)
        health = monitor.status(SERVICE)
        seen.append((health.status, health.consecutive_failures, health.score))
    assert seen == [("degraded", 1, 0.5), ("degraded", 2, 0.5), ("unhealthy", 3, 0.5)]


def test_successful_check_resets_consecutive_failures(monitor: HealthMonitor) -> None:
    """A passing check clears the failure streak and the status."""
    for _ in range(3):
        monitor.record_check(SERVICE, ok=False)
    monitor.record_check(SERVICE, ok=True)
    health = monitor.status(SERVICE)
    assert (health.status, health.consecutive_failures, health.score) == ("healthy", 0, 1.0)


def test_record_check_sets_last_checked_to_wall_time(
    monitor: HealthMonitor, clock: FakeClock
) -> None:
    """last_checked is the wall-clock time of the latest check."""
    monitor.record_check(SERVICE, ok=True)
    clock.advance(7.0)
    monitor.record_check(SERVICE, ok=False)
    assert monitor.status(SERVICE).last_checked == clock.time()


def test_breaker_added_twice_is_listed_once(monitor: HealthMonitor, clock: FakeClock) -> None:
    """Adopting the same breaker again does not duplicate it."""
    cb = breaker(clock)
    monitor.breaker_added(SERVICE, cb)
    monitor.breaker_added(SERVICE, cb)
    assert [s.name for s in monitor.breaker_snapshots()] == [SERVICE]


def test_worst_breaker_of_a_service_decides(monitor: HealthMonitor, clock: FakeClock) -> None:
    """With one closed and one open breaker (per host), the service reads open."""
    closed, opened = breaker(clock, "quotes:a"), breaker(clock, "quotes:b")
    monitor.breaker_added(SERVICE, closed)
    monitor.breaker_added(SERVICE, opened)
    trip(opened, clock)
    health = monitor.status(SERVICE)
    assert (health.status, health.breaker_state) == ("unhealthy", "open")


def test_forced_open_breaker_makes_service_unhealthy(
    monitor: HealthMonitor, clock: FakeClock
) -> None:
    """A breaker forced open by hand reads unhealthy."""
    cb = breaker(clock)
    monitor.breaker_added(SERVICE, cb)
    cb.force_open()
    health = monitor.status(SERVICE)
    assert (health.status, health.breaker_state) == ("unhealthy", "forced_open")


def test_breaker_is_forgotten_once_garbage_collected(
    monitor: HealthMonitor, clock: FakeClock
) -> None:
    """The monitor holds breakers weakly: a dropped breaker disappears."""
    cb = breaker(clock)
    monitor.breaker_added(SERVICE, cb)
    trip(cb, clock)
    del cb
    gc.collect()
    assert monitor.breaker_snapshots() == []
    assert monitor.status(SERVICE).breaker_state is None


def test_breaker_snapshots_report_window_and_state(
    monitor: HealthMonitor, clock: FakeClock
) -> None:
    """breaker_snapshots gives each breaker's state, counts and retry-after."""
    cb = breaker(clock)
    monitor.breaker_added(SERVICE, cb)
    trip(cb, clock)
    clock.advance(10.0)
    (snapshot,) = monitor.breaker_snapshots()
    assert (snapshot.name, snapshot.state.value, snapshot.retry_after) == (SERVICE, "open", 20.0)


def test_services_lists_every_service_sorted(monitor: HealthMonitor, clock: FakeClock) -> None:
    """Services heard of by calls, breakers or checks are listed sorted."""
    feed(monitor, ok=1, service="payments")
    monitor.breaker_added("auth", breaker(clock, "auth"))
    monitor.record_check("cache", ok=True)
    assert monitor.services() == ["auth", "cache", "payments"]


# -- overall -------------------------------------------------------------------------------------
def test_overall_is_healthy_without_services(monitor: HealthMonitor) -> None:
    """No services: the overall status is healthy with an empty list."""
    overall = monitor.overall()
    assert (overall.status, overall.services) == ("healthy", ())


def test_overall_is_the_worst_critical_service(monitor: HealthMonitor) -> None:
    """healthy + degraded -> degraded; adding an unhealthy service -> unhealthy."""
    feed(monitor, ok=20, service="a")
    feed(monitor, ok=98, failed=2, service="b")
    assert monitor.overall().status == "degraded"
    feed(monitor, failed=20, service="c")
    overall = monitor.overall()
    assert overall.status == "unhealthy"
    assert [(s.service, s.status) for s in overall.services] == [
        ("a", "healthy"),
        ("b", "degraded"),
        ("c", "unhealthy"),
    ]


def test_optional_unhealthy_service_makes_overall_at_most_degraded(clock: FakeClock) -> None:
    """An unhealthy optional service only degrades the overall status."""
    monitor = HealthMonitor(
        CONFIG, optional={"cache"}, clock=clock, meter_provider=NoOpMeterProvider()
    )
    feed(monitor, ok=20, service="quotes")
    feed(monitor, failed=20, service="cache")
    overall = monitor.overall()
    assert overall.status == "degraded"
    assert {s.service: s.status for s in overall.services}["cache"] == "unhealthy"


def test_optional_degraded_service_degrades_overall(clock: FakeClock) -> None:
    """A degraded optional service still degrades the overall status."""
    monitor = HealthMonitor(
        CONFIG, optional={"cache"}, clock=clock, meter_provider=NoOpMeterProvider()
    )
    feed(monitor, ok=98, failed=2, service="cache")
    assert monitor.overall().status == "degraded"


def test_critical_unhealthy_service_outranks_optional(clock: FakeClock) -> None:
    """An unhealthy critical service makes the overall status unhealthy regardless."""
    monitor = HealthMonitor(
        CONFIG, optional={"cache"}, clock=clock, meter_provider=NoOpMeterProvider()
    )
    feed(monitor, failed=20, service="cache")
    feed(monitor, failed=20, service="quotes")
    assert monitor.overall().status == "unhealthy"


# -- HealthConfig --------------------------------------------------------------------------------
def test_health_config_defaults_match_the_documentation() -> None:
    """Defaults: 30 s checks, 5 s timeout, 0.95/0.99 thresholds, 1 s target, 300 s window."""
    config = HealthConfig()
    assert (
        config.check_interval,
        config.check_timeout,
        config.alert_threshold,
        config.degraded_threshold,
        config.latency_target,
        config.window,
        config.window_buckets,
        config.minimum_calls,
        config.failures_to_unhealthy,
    ) == (30.0, 5.0, 0.95, 0.99, 1.0, 300.0, 30, 10, 3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("check_interval", 0),
        ("check_interval", -1.0),
        ("check_interval", "5"),
        ("check_interval", True),
        ("check_timeout", 0.0),
        ("check_timeout", math.inf),
        ("alert_threshold", 1.5),
        ("alert_threshold", -0.1),
        ("alert_threshold", math.nan),
        ("degraded_threshold", 0.9),  # below alert_threshold 0.95
        ("degraded_threshold", 1.01),
        ("latency_target", 0.0),
        ("window", -60.0),
        ("window_buckets", 0),
        ("window_buckets", 1001),
        ("window_buckets", 2.5),
        ("minimum_calls", 0),
        ("failures_to_unhealthy", 0),
        ("failures_to_unhealthy", 1001),
    ],
)
def test_health_config_rejects_bad_values(field: str, value: object) -> None:
    """Bad values raise ConfigError naming the field and the value."""
    with pytest.raises(ConfigError) as caught:
        HealthConfig(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == f"HealthConfig.{field}"
    assert f"HealthConfig.{field}" in str(caught.value)
    assert repr(value) in str(caught.value)


def test_health_config_accepts_equal_thresholds() -> None:
    """degraded_threshold may equal alert_threshold."""
    config = HealthConfig(alert_threshold=0.9, degraded_threshold=0.9)
    assert (config.alert_threshold, config.degraded_threshold) == (0.9, 0.9)


def test_health_config_coerces_integer_floats() -> None:
    """Integer seconds become floats."""
    assert HealthConfig(check_interval=10).check_interval == 10.0


# -- HealthConfig.from_env -------------------------------------------------------------------------
def test_from_env_without_variables_gives_defaults() -> None:
    """No variables: the defaults."""
    assert HealthConfig.from_env({}) == HealthConfig()


def test_from_env_reads_check_interval_in_milliseconds() -> None:
    """HEALTH_CHECK_INTERVAL=500 means 0.5 s."""
    assert HealthConfig.from_env({"HEALTH_CHECK_INTERVAL": "500"}).check_interval == 0.5


def test_from_env_reads_alert_threshold() -> None:
    """HEALTH_ALERT_THRESHOLD sets alert_threshold; degraded_threshold keeps 0.99."""
    config = HealthConfig.from_env({"HEALTH_ALERT_THRESHOLD": "0.9"})
    assert (config.alert_threshold, config.degraded_threshold) == (0.9, 0.99)


def test_from_env_alert_threshold_above_degraded_default_raises_it() -> None:
    """HEALTH_ALERT_THRESHOLD=0.995 lifts degraded_threshold to 0.995 instead of failing."""
    config = HealthConfig.from_env({"HEALTH_ALERT_THRESHOLD": "0.995"})
    assert (config.alert_threshold, config.degraded_threshold) == (0.995, 0.995)


def test_from_env_ignores_blank_values() -> None:
    """Empty or blank variables count as unset."""
    env = {"HEALTH_CHECK_INTERVAL": "  ", "HEALTH_ALERT_THRESHOLD": ""}
    assert HealthConfig.from_env(env) == HealthConfig()


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a mapping, the process environment is read."""
    monkeypatch.setenv("HEALTH_CHECK_INTERVAL", "250")
    monkeypatch.setenv("HEALTH_ALERT_THRESHOLD", "0.8")
    config = HealthConfig.from_env()
    assert (config.check_interval, config.alert_threshold) == (0.25, 0.8)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("HEALTH_CHECK_INTERVAL", "fast"),
        ("HEALTH_CHECK_INTERVAL", "30s"),
        ("HEALTH_ALERT_THRESHOLD", "95%"),
        ("HEALTH_CHECK_INTERVAL", "0"),
        ("HEALTH_CHECK_INTERVAL", "-1000"),
        ("HEALTH_CHECK_INTERVAL", "nan"),
        ("HEALTH_ALERT_THRESHOLD", "1.5"),
        ("HEALTH_ALERT_THRESHOLD", "-0.5"),
    ],
)
def test_from_env_malformed_value_names_the_variable(variable: str, raw: str) -> None:
    """Unparsable or out-of-range values raise ConfigError naming the variable and value."""
    with pytest.raises(ConfigError) as caught:
        HealthConfig.from_env({variable: raw})
    assert caught.value.field == variable
    assert variable in str(caught.value)
    assert repr(raw) in str(caught.value)


# -- transitions: log records and span events ------------------------------------------------------
def transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The status-change messages captured from the health logger."""
    return [r.getMessage() for r in caplog.records if r.name == "resilience_otel.health"]


def test_first_assessment_is_not_a_transition(
    monitor: HealthMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading a service's status the first time logs nothing."""
    caplog.set_level(logging.INFO, logger="resilience_otel.health")
    feed(monitor, failed=20)
    monitor.status(SERVICE)
    assert transitions(caplog) == []


def test_status_change_is_logged_once(
    monitor: HealthMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    """A change is logged once with its reasons, however often the status is read."""
    caplog.set_level(logging.INFO, logger="resilience_otel.health")
    feed(monitor, ok=98)
    monitor.status(SERVICE)
    feed(monitor, failed=2)
    for _ in range(3):
        monitor.status(SERVICE)
    monitor.overall()
    assert transitions(caplog) == [
        "service 'quotes': healthy -> degraded (availability 0.980 below 0.99)"
    ]
    assert caplog.records[-1].levelno == logging.INFO


def test_recovery_is_logged_as_recovered(
    monitor: HealthMonitor, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Returning to healthy logs the change with "recovered"."""
    caplog.set_level(logging.INFO, logger="resilience_otel.health")
    feed(monitor, failed=20)
    monitor.status(SERVICE)
    clock.advance(CONFIG.window)
    monitor.status(SERVICE)
    assert transitions(caplog) == ["service 'quotes': unhealthy -> healthy (recovered)"]


def test_breaker_transition_is_logged_without_a_read(
    monitor: HealthMonitor, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """state_changed (as the engine forwards it) re-evaluates and logs the new status."""
    caplog.set_level(logging.INFO, logger="resilience_otel.health")
    cb = breaker(clock)
    monitor.breaker_added(SERVICE, cb)
    cb.add_listener(lambda change: monitor.state_changed(SERVICE, change))
    monitor.status(SERVICE)
    trip(cb, clock)
    assert transitions(caplog) == ["service 'quotes': healthy -> unhealthy (circuit breaker open)"]


def test_failed_check_transition_is_logged_without_a_read(
    monitor: HealthMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    """record_check re-evaluates and logs the change it causes."""
    caplog.set_level(logging.INFO, logger="resilience_otel.health")
    monitor.record_check(SERVICE, ok=True)
    monitor.record_check(SERVICE, ok=False)
    assert transitions(caplog) == [
        "service 'quotes': healthy -> degraded (last active check failed)"
    ]


def span_events(
    exporter: InMemorySpanExporter,
) -> list[tuple[str, Mapping[str, object]]]:
    """(name, attributes) of every event of every finished span."""
    return [
        (event.name, dict(event.attributes or {}))
        for span in exporter.get_finished_spans()
        for event in span.events
    ]


def test_status_change_is_added_to_the_current_span(monitor: HealthMonitor) -> None:
    """A change seen inside a recording span becomes a status_change event on it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    feed(monitor, ok=98)
    monitor.status(SERVICE)
    with provider.get_tracer("test").start_as_current_span("request"):
        feed(monitor, failed=2)
        monitor.status(SERVICE)
        monitor.status(SERVICE)
    assert span_events(exporter) == [
        (
            "resilience.health.status_change",
            {
                "resilience.service": SERVICE,
                "resilience.health.from": "healthy",
                "resilience.health.to": "degraded",
            },
        )
    ]


def test_no_span_event_without_a_change(monitor: HealthMonitor) -> None:
    """Reading an unchanged status inside a span adds no event."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    feed(monitor, ok=20)
    monitor.status(SERVICE)
    with provider.get_tracer("test").start_as_current_span("request"):
        monitor.status(SERVICE)
    assert span_events(exporter) == []
