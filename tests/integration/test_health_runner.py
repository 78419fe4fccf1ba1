"""The background check runner on real threads with short intervals: no argument or check can
stop it, a hung check holds at most one thread and is not restarted, and failures are logged,
rate-limited, with the exception's type and a redacted message."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.metrics import NoOpMeterProvider

from resilience_otel import ConfigError, HealthConfig, HealthMonitor

pytestmark = pytest.mark.integration

INTERVAL = 0.05
TIMEOUT = 0.1


class Counter:
    """A check that counts its runs and returns ``result``."""

    def __init__(self, result: object = True) -> None:
        self.result = result
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            self.runs += 1
        return self.result


class Hang:
    """A sync check that blocks until released, counting its starts."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.starts = 0

    def __call__(self) -> bool:
        self.starts += 1
        self.release.wait(10.0)
        return True


@pytest.fixture
def monitor() -> Iterator[HealthMonitor]:
    """A monitor whose gauges go nowhere; stopped afterwards."""
    health = HealthMonitor(
        HealthConfig(check_interval=INTERVAL), meter_provider=NoOpMeterProvider()
    )
    yield health
    health.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll every 20 ms until ``predicate`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


def test_string_interval_is_refused_before_it_can_stop_the_runner(monitor: HealthMonitor) -> None:
    """add_check(interval="5") raises; the runner started after keeps running the good check."""
    good = Counter()
    monitor.add_check("good", good, interval=INTERVAL)
    with pytest.raises(ConfigError, match=r"add_check\(interval=...\)"):
        monitor.add_check("bad", Counter(), interval="5")  # type: ignore[arg-type]
    monitor.start()
    wait_until(lambda: good.runs >= 5)
    assert "bad" not in monitor.services()


def test_a_sync_check_that_hangs_does_not_starve_the_others(monitor: HealthMonitor) -> None:
    """A sync check that never returns fails at each due time; a sync check beside it keeps
    running, and the hung one is started only once (one thread, not one per interval)."""
    hang, good = Hang(), Counter()
    monitor.add_check("hung", hang, interval=INTERVAL, timeout=TIMEOUT)
    monitor.add_check("good", good, interval=INTERVAL, timeout=TIMEOUT)
    try:
        monitor.start()
        wait_until(lambda: monitor.status("hung").consecutive_failures >= 10)
        assert good.runs >= 10
        assert hang.starts == 1
        assert monitor.status("good").consecutive_failures == 0
        assert monitor.status("hung").status == "unhealthy"
        threads = [t for t in threading.enumerate() if t.name == "health-check"]
        assert len(threads) <= 2  # the hung one, and at most one good run in flight
    finally:
        hang.release.set()


def test_an_async_check_that_ignores_cancellation_does_not_freeze_the_runner(
    monitor: HealthMonitor,
) -> None:
    """A coroutine that swallows its cancellation is left behind; the others keep running."""
    released = threading.Event()
    starts = []

    async def stubborn() -> bool:
        starts.append(1)
        while not released.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue
        return True

    good = Counter()
    monitor.add_check("stubborn", stubborn, interval=INTERVAL, timeout=TIMEOUT)
    monitor.add_check("good", good, interval=INTERVAL, timeout=TIMEOUT)
    try:
        monitor.start()
        wait_until(lambda: good.runs >= 10)
        wait_until(lambda: monitor.status("stubborn").consecutive_failures >= 5)
        assert len(starts) == 1
    finally:
        released.set()


def raises_value_error() -> None:
    """A check that raises."""
    raise ValueError("bad payload")


def exits() -> None:
    """A check that calls sys.exit() in its thread."""
    sys.exit(3)


async def cancels_itself() -> None:
    """An async check that raises CancelledError of its own accord."""
    raise asyncio.CancelledError


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(raises_value_error, id="raises"),
        pytest.param(
            exits,
            id="sys-exit",
            # The SystemExit still ends the check's own thread, as it would any thread.
            marks=pytest.mark.filterwarnings(
                "ignore::pytest.PytestUnhandledThreadExceptionWarning"
            ),
        ),
        pytest.param(cancels_itself, id="cancels-itself"),
        pytest.param(Counter(result=False), id="returns-false"),
    ],
)
def test_whatever_a_check_does_the_others_keep_running(
    monitor: HealthMonitor, check: Callable[[], object]
) -> None:
    """A check that raises, exits or cancels itself fails; the good check beside it still runs."""
    good = Counter()
    monitor.add_check("odd", check, interval=INTERVAL, timeout=TIMEOUT)
    monitor.add_check("good", good, interval=INTERVAL, timeout=TIMEOUT)
    monitor.start()
    wait_until(lambda: good.runs >= 8)
    assert monitor.status("odd").consecutive_failures >= 3


@pytest.mark.anyio
async def test_astart_runner_survives_a_hanging_check_too(monitor: HealthMonitor) -> None:
    """As a task of the caller's loop, the runner also leaves a hung check behind."""
    released = asyncio.Event()

    async def stubborn() -> bool:
        while not released.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue
        return True

    enough = asyncio.Event()
    good = Counter()

    async def counted() -> bool:
        good()
        if good.runs >= 8:
            enough.set()
        return True

    monitor.add_check("stubborn", stubborn, interval=INTERVAL, timeout=TIMEOUT)
    monitor.add_check("good", counted, interval=INTERVAL, timeout=TIMEOUT)
    await monitor.astart()
    try:
        await asyncio.wait_for(enough.wait(), 5.0)
        assert monitor.status("stubborn").consecutive_failures >= 3
    finally:
        released.set()
        monitor.stop()
        await asyncio.sleep(0.05)  # let the stubborn task see the release and end


def test_failures_are_logged_once_per_service_with_type_and_redacted_text(
    monitor: HealthMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    """Many failing runs give one warning per service in a minute, naming the exception type;
    a URL in its message has its credentials and token redacted."""

    def leaky() -> None:
        raise ConnectionError("cannot reach https://user:hunter2@db.internal/?token=s3cret")

    caplog.set_level(logging.WARNING, logger="resilience_otel.health")
    monitor.add_check("leaky", leaky, interval=INTERVAL, timeout=TIMEOUT)
    monitor.add_check("other", raises_value_error, interval=INTERVAL, timeout=TIMEOUT)
    monitor.start()
    wait_until(lambda: monitor.status("leaky").consecutive_failures >= 6)
    wait_until(lambda: monitor.status("other").consecutive_failures >= 6)
    messages = [r.getMessage() for r in caplog.records if r.name == "resilience_otel.health"]
    leaky_logs = [m for m in messages if "'leaky'" in m and "failed" in m]
    other_logs = [m for m in messages if "'other'" in m and "failed" in m]
    assert len(leaky_logs) == 1
    assert len(other_logs) == 1
    assert "ConnectionError" in leaky_logs[0]
    assert "hunter2" not in leaky_logs[0]
    assert "s3cret" not in leaky_logs[0]
    assert "ValueError: bad payload" in other_logs[0]
