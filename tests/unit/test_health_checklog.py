"""Failed health checks are logged at most once per service per minute, with the number of
failures left unlogged in between (explicit times, no clock)."""

from __future__ import annotations

import logging

import pytest

from resilience_otel._health.checks import LOG_EVERY, CheckLog


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The health warnings logged so far."""
    return [r.getMessage() for r in caplog.records if r.name == "resilience_otel.health"]


def test_first_failure_is_logged_then_a_minute_of_silence(caplog: pytest.LogCaptureFixture) -> None:
    """Failures within LOG_EVERY of a logged one are counted, not logged."""
    caplog.set_level(logging.WARNING, logger="resilience_otel.health")
    log = CheckLog()
    for now in (0.0, 10.0, 20.0, LOG_EVERY - 0.1):
        log.failed("quotes", "ValueError: boom", now)
    assert logged(caplog) == ["health check of 'quotes' failed: ValueError: boom"]


def test_next_report_carries_the_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    """After a minute the next failure is logged with how many were left out."""
    caplog.set_level(logging.WARNING, logger="resilience_otel.health")
    log = CheckLog()
    for now in (0.0, 10.0, 20.0, LOG_EVERY, LOG_EVERY + 1.0):
        log.failed("quotes", "timed out after 5s", now)
    assert logged(caplog) == [
        "health check of 'quotes' failed: timed out after 5s",
        "health check of 'quotes' failed: timed out after 5s (2 more failures since the last "
        "report)",
    ]


def test_services_are_rate_limited_separately(caplog: pytest.LogCaptureFixture) -> None:
    """One noisy service does not silence another."""
    caplog.set_level(logging.WARNING, logger="resilience_otel.health")
    log = CheckLog()
    log.failed("quotes", "x", 0.0)
    log.failed("quotes", "x", 1.0)
    log.failed("cache", "y", 2.0)
    assert len(logged(caplog)) == 2
    assert "'cache'" in logged(caplog)[1]
