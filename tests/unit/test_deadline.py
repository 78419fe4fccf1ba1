"""Attempt deadlines: one timer per loop, the semantics of ``asyncio.timeout``.

These run on a real event loop with timeouts of tens of milliseconds: what is tested is the
loop's own timer, which a fake clock cannot drive.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from resilience_otel._core.deadline import Deadlines

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_overdue_await_is_cancelled_and_raises_timeout_error() -> None:
    """An await still running at its deadline ends with TimeoutError, near the deadline."""
    deadlines = Deadlines()
    begin = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.scope(0.05) as scope:
        await asyncio.sleep(10)
    elapsed = time.monotonic() - begin
    assert scope.expired
    assert 0.045 <= elapsed < 1.0
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # our cancellation was taken back


async def test_an_await_that_finishes_in_time_is_left_alone() -> None:
    """A scope left before its deadline never cancels the task afterwards."""
    deadlines = Deadlines()
    with deadlines.scope(0.05) as scope:
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the old deadline: no CancelledError arrives
    assert not scope.expired


async def test_the_callers_own_cancellation_passes_through() -> None:
    """Cancelling the task from outside raises CancelledError, not TimeoutError."""
    deadlines = Deadlines()
    entered = asyncio.Event()

    async def work() -> None:
        with deadlines.scope(10):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_earlier_deadline_rearms_the_timer() -> None:
    """A short timeout added after a long one still fires on time."""
    deadlines = Deadlines()
    long_started = asyncio.Event()

    async def long_wait() -> str:
        with deadlines.scope(5):
            long_started.set()
            await asyncio.sleep(0.3)
        return "done"

    long_task = asyncio.create_task(long_wait())
    await long_started.wait()
    begin = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.scope(0.05):
        await asyncio.sleep(10)
    assert time.monotonic() - begin < 0.25
    assert await long_task == "done"  # the long scope was not touched


async def test_concurrent_scopes_each_expire_at_their_own_deadline() -> None:
    """Of many awaits with different timeouts, exactly the overdue ones time out."""
    deadlines = Deadlines()

    async def wait(limit: float, duration: float) -> str:
        try:
            with deadlines.scope(limit):
                await asyncio.sleep(duration)
        except TimeoutError:
            return "timeout"
        return "ok"

    cases = [(0.05, 0.3), (0.5, 0.01), (0.08, 0.3), (1.0, 0.1), (0.03, 0.3)] * 4
    results = await asyncio.gather(*(wait(t, d) for t, d in cases))
    assert results == ["timeout", "ok", "timeout", "ok", "timeout"] * 4


async def test_nothing_stays_watched_after_the_scopes_end() -> None:
    """Every scope leaves the watch when it ends, whether it expired or not."""
    deadlines = Deadlines()
    for timeout in (0.01, 5.0):
        try:
            with deadlines.scope(timeout):
                await asyncio.sleep(0.05)
        except TimeoutError:
            pass
    assert deadlines._last is not None
    watch = deadlines._last[1]
    assert watch.in_flight == set()


def test_one_deadlines_object_serves_successive_event_loops() -> None:
    """The same object works on a new loop after the first one closed."""
    deadlines = Deadlines()

    async def overdue() -> bool:
        try:
            with deadlines.scope(0.02):
                await asyncio.sleep(1)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(overdue())
    assert asyncio.run(overdue())


def test_a_scope_outside_a_running_loop_is_refused() -> None:
    """Asking for a scope with no running loop fails loudly."""
    with pytest.raises(RuntimeError):
        Deadlines().scope(1.0)
