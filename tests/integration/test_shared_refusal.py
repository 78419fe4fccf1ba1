"""The shared breaker store against the machine's Redis: "Redis refused our script" (an error
reply) is told apart from "Redis unreachable", and the largest settings allowed run in Redis."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from resilience_otel import BreakerConfig, BreakerState, CircuitOpenError
from resilience_otel.redis import RedisBreakerStore, SharedCircuitBreaker

pytestmark = pytest.mark.integration

DAY = 86_400.0


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    """A plain client of the machine's Redis."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def prefix(shared: redis.Redis) -> Iterator[str]:
    """A unique key prefix; its keys are deleted after the test."""
    value = f"test-shared-refusal:{uuid.uuid4().hex}"
    yield value
    keys = list(shared.scan_iter(match=f"{value}*", count=1000))
    if keys:
        shared.delete(*keys)


def breaker(prefix: str, config: BreakerConfig, recheck: float = 1.0) -> SharedCircuitBreaker:
    """A shared breaker named ``b`` with its own short-timeout client."""
    client = redis.Redis(port=6379, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisBreakerStore(client, prefix=prefix, sync_interval=0.0, recheck_interval=recheck)
    return store.breaker(config, name="b")


def admits(subject: SharedCircuitBreaker) -> bool:
    """Whether the breaker admits a call now (the permit is given back unused)."""
    try:
        permit = subject.acquire(time.monotonic())
    except CircuitOpenError:
        return False
    subject.release(permit)
    return True


def test_a_refused_script_logs_one_error_not_an_outage(
    prefix: str, shared: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A WRONGTYPE reply is counted as a refusal and logged once at error level, as such."""
    shared.set(f"{prefix}:{{b}}:s", "someone else's string")  # the state hash's key, taken
    subject = breaker(prefix, BreakerConfig(), recheck=0.02)
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    for _ in range(3):
        assert admits(subject)  # falls back to local state: calls still flow
        time.sleep(0.03)  # past recheck_interval: the next call asks Redis again
    assert subject.refusals == 3
    assert subject.fallbacks == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "refused" in message
    assert "ResponseError" in message
    assert prefix in message
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_an_unreachable_redis_is_still_a_warning_not_a_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection errors keep their own path: a warning, and no refusal counted."""
    client = redis.Redis(port=1, socket_timeout=0.2, socket_connect_timeout=0.2)
    subject = RedisBreakerStore(client, prefix="nowhere").breaker(BreakerConfig(), name="b")
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    assert admits(subject)
    assert (subject.fallbacks, subject.refusals) == (1, 0)
    assert [r.levelno for r in caplog.records if "unreachable" in r.getMessage()] == [
        logging.WARNING
    ]


def test_the_largest_settings_allowed_run_in_redis(prefix: str, shared: redis.Redis) -> None:
    """Durations of one day and a threshold of 10**9 are accepted by Redis: the state is shared."""
    config = BreakerConfig(
        failure_threshold=10**9, monitoring_period=DAY, reset_timeout=DAY, call_timeout=DAY
    )
    subject = breaker(prefix, config)
    permit = subject.acquire(time.monotonic())
    subject.record(permit, failure=True, duration=0.01, now=time.monotonic())
    assert (subject.refusals, subject.fallbacks) == (0, 0)
    assert subject.snapshot().failures == 1
    window = f"{prefix}:{{b}}:w"
    assert shared.hlen(window) == 2  # one bucket: its calls and its failures
    assert DAY * 1000 < shared.pttl(window) <= 2 * DAY * 1000  # twice the window


def test_a_day_long_reset_timeout_opens_for_every_process(prefix: str) -> None:
    """With reset_timeout at its maximum, a trip is shared and reports a day to wait."""
    config = BreakerConfig(failure_threshold=1, reset_timeout=DAY, monitoring_period=DAY)
    first, second = breaker(prefix, config), breaker(prefix, config)
    permit = first.acquire(time.monotonic())
    first.record(permit, failure=True, duration=0.01, now=time.monotonic())
    assert second.state is BreakerState.OPEN
    assert DAY - 5 < second.retry_after() <= DAY
    assert (first.refusals, second.refusals) == (0, 0)
