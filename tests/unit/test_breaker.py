"""The circuit breaker state machine, driven by a fake clock and explicit ``now`` values."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

from resilience_otel import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    ResilienceError,
    StateChange,
)
from resilience_otel.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable

NAME = "alpaca"
START = 1000.0
RESET = 30.0
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
FORCED_OPEN, FORCED_CLOSED = BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock starting at ``START``."""
    return FakeClock(start=START)


def make(clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker with a 10 s window of 1 s buckets, 3 failures to open, 30 s reset timeout."""
    values: dict[str, Any] = {
        "failure_threshold": 3,
        "monitoring_period": 10.0,
        "reset_timeout": RESET,
        "window_buckets": 10,
    }
    values.update(settings)
    return CircuitBreaker(BreakerConfig(**values), name=NAME, clock=clock)


def call(
    breaker: CircuitBreaker, clock: FakeClock, *, failure: bool, duration: float = 0.01
) -> None:
    """One admitted call at the clock's current time, recorded with the given outcome."""
    now = clock.monotonic()
    permit = breaker.acquire(now)
    breaker.record(permit, failure=failure, duration=duration, now=now)


def fail(breaker: CircuitBreaker, clock: FakeClock, times: int = 1) -> None:
    """Record ``times`` failed calls at the current time."""
    for _ in range(times):
        call(breaker, clock, failure=True)


def succeed(breaker: CircuitBreaker, clock: FakeClock, times: int = 1) -> None:
    """Record ``times`` successful calls at the current time."""
    for _ in range(times):
        call(breaker, clock, failure=False)


def trip(breaker: CircuitBreaker, clock: FakeClock) -> float:
    """Open a count-mode breaker now; return the time it opened."""
    fail(breaker, clock, breaker.config.failure_threshold)
    assert breaker.state is OPEN
    return clock.monotonic()


def half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """Open the breaker and let its reset timeout pass."""
    trip(breaker, clock)
    clock.advance(breaker.config.reset_timeout)
    assert breaker.state is HALF_OPEN


def rejection(breaker: CircuitBreaker, now: float) -> CircuitOpenError:
    """The CircuitOpenError that ``acquire(now)`` raises."""
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire(now)
    return info.value


# -- closed -> open ----------------------------------------------------------------------


def test_new_breaker_is_closed_and_admits(clock: FakeClock) -> None:
    """A fresh breaker is CLOSED and hands out permits."""
    breaker = make(clock)
    breaker.acquire(clock.monotonic())
    assert breaker.state is CLOSED


def test_stays_closed_below_failure_threshold(clock: FakeClock) -> None:
    """failure_threshold - 1 failures in the window leave the breaker closed."""
    breaker = make(clock)
    fail(breaker, clock, 2)
    assert breaker.state is CLOSED


def test_opens_on_failure_threshold_within_monitoring_period(clock: FakeClock) -> None:
    """failure_threshold failures spread inside the monitoring period open the breaker."""
    breaker = make(clock)
    for _ in range(3):
        fail(breaker, clock)
        clock.advance(4.0)
    assert breaker.state is OPEN


def test_failures_spread_beyond_monitoring_period_do_not_open(clock: FakeClock) -> None:
    """Failures further apart than the window expire before the threshold is reached."""
    breaker = make(clock)
    for _ in range(3):
        fail(breaker, clock)
        clock.advance(6.0)
    assert breaker.state is CLOSED


def test_successes_between_failures_do_not_reset_count_mode(clock: FakeClock) -> None:
    """Count mode counts failures in the window, not consecutive failures."""
    breaker = make(clock)
    for _ in range(2):
        fail(breaker, clock)
        succeed(breaker, clock, 3)
    fail(breaker, clock)
    assert breaker.state is OPEN


def test_record_returns_the_state_change_it_caused(clock: FakeClock) -> None:
    """The outcome that trips the breaker returns that StateChange."""
    breaker = make(clock)
    fail(breaker, clock, 2)
    permit = breaker.acquire(START)
    change = breaker.record(permit, failure=True, duration=0.01, now=START)
    assert change == StateChange(NAME, CLOSED, OPEN, START)


def test_record_without_transition_returns_none(clock: FakeClock) -> None:
    """An outcome that changes no state returns None."""
    breaker = make(clock)
    permit = breaker.acquire(START)
    assert breaker.record(permit, failure=True, duration=0.01, now=START) is None


def test_non_failures_never_open(clock: FakeClock) -> None:
    """Outcomes recorded with failure=False (e.g. PERMANENT) never open the breaker."""
    breaker = make(clock, failure_threshold=1)
    succeed(breaker, clock, 100)
    assert breaker.state is CLOSED


# -- open --------------------------------------------------------------------------------


def test_open_rejects_with_service_name(clock: FakeClock) -> None:
    """An open breaker raises CircuitOpenError carrying the breaker's service name."""
    breaker = make(clock)
    trip(breaker, clock)
    error = rejection(breaker, clock.monotonic())
    assert error.service == NAME
    assert isinstance(error, ResilienceError)


def test_open_rejection_retry_after_is_time_to_reset(clock: FakeClock) -> None:
    """retry_after is the time left until the reset timeout passes."""
    breaker = make(clock)
    opened = trip(breaker, clock)
    assert rejection(breaker, opened + 12.5).retry_after == pytest.approx(RESET - 12.5)


def test_open_rejects_just_before_reset_timeout(clock: FakeClock) -> None:
    """A hair before the reset timeout the breaker still rejects."""
    breaker = make(clock)
    opened = trip(breaker, clock)
    assert rejection(breaker, opened + RESET - 0.001).retry_after == pytest.approx(0.001)


def test_acquire_after_reset_timeout_admits_a_probe(clock: FakeClock) -> None:
    """acquire() at the reset timeout moves OPEN -> HALF_OPEN and admits the call."""
    breaker = make(clock)
    opened = trip(breaker, clock)
    breaker.acquire(opened + RESET)
    assert breaker.snapshot().half_open_in_flight == 1


def test_state_property_reads_half_open_after_reset_timeout(clock: FakeClock) -> None:
    """Reading ``state`` once the reset timeout passed reports HALF_OPEN without a call."""
    breaker = make(clock)
    trip(breaker, clock)
    clock.advance(RESET)
    assert breaker.state is HALF_OPEN


def test_state_property_reads_open_before_reset_timeout(clock: FakeClock) -> None:
    """Reading ``state`` before the reset timeout keeps OPEN."""
    breaker = make(clock)
    trip(breaker, clock)
    clock.advance(RESET - 0.5)
    assert breaker.state is OPEN


def test_record_while_open_is_ignored(clock: FakeClock) -> None:
    """An outcome reported with a permit from before opening changes nothing."""
    breaker = make(clock)
    permit = breaker.acquire(clock.monotonic())
    trip(breaker, clock)
    before = breaker.snapshot()
    breaker.record(permit, failure=False, duration=0.01, now=clock.monotonic())
    assert breaker.snapshot() == before


# -- half-open ---------------------------------------------------------------------------


def test_half_open_admits_half_open_max_calls_probes(clock: FakeClock) -> None:
    """HALF_OPEN admits up to half_open_max_calls concurrent probes, then rejects."""
    breaker = make(clock, half_open_max_calls=2)
    half_open(breaker, clock)
    now = clock.monotonic()
    breaker.acquire(now)
    breaker.acquire(now)
    rejection(breaker, now)
    assert breaker.snapshot().half_open_in_flight == 2


def test_half_open_busy_rejection_has_zero_retry_after(clock: FakeClock) -> None:
    """A rejection because probe slots are busy says retry_after 0.0 and names the service."""
    breaker = make(clock)
    half_open(breaker, clock)
    breaker.acquire(clock.monotonic())
    error = rejection(breaker, clock.monotonic())
    assert (error.service, error.retry_after) == (NAME, 0.0)


def test_probe_success_closes(clock: FakeClock) -> None:
    """With success_threshold 1 one successful probe closes the breaker."""
    breaker = make(clock)
    half_open(breaker, clock)
    succeed(breaker, clock)
    assert breaker.state is CLOSED


def test_success_threshold_probe_successes_needed_to_close(clock: FakeClock) -> None:
    """The breaker stays HALF_OPEN until success_threshold probes succeeded."""
    breaker = make(clock, success_threshold=3)
    half_open(breaker, clock)
    succeed(breaker, clock, 2)
    assert breaker.state is HALF_OPEN
    succeed(breaker, clock)
    assert breaker.state is CLOSED


def test_concurrent_probe_successes_close(clock: FakeClock) -> None:
    """Two probes admitted together both count toward success_threshold."""
    breaker = make(clock, half_open_max_calls=2, success_threshold=2)
    half_open(breaker, clock)
    now = clock.monotonic()
    first, second = breaker.acquire(now), breaker.acquire(now)
    breaker.record(first, failure=False, duration=0.01, now=now)
    breaker.record(second, failure=False, duration=0.01, now=now)
    assert breaker.state is CLOSED


def test_probe_failure_reopens(clock: FakeClock) -> None:
    """One failed probe re-opens the breaker."""
    breaker = make(clock, success_threshold=2)
    half_open(breaker, clock)
    succeed(breaker, clock)
    fail(breaker, clock)
    assert breaker.state is OPEN


def test_probe_failure_restarts_reset_timer(clock: FakeClock) -> None:
    """After a failed probe the full reset timeout runs again from the failure."""
    breaker = make(clock)
    half_open(breaker, clock)
    clock.advance(5.0)
    fail(breaker, clock)
    reopened = clock.monotonic()
    assert rejection(breaker, reopened + RESET - 0.1).retry_after == pytest.approx(0.1)
    breaker.acquire(reopened + RESET)


def test_probe_successes_do_not_carry_over_a_reopen(clock: FakeClock) -> None:
    """Probe successes counted before a re-open do not count in the next half-open period."""
    breaker = make(clock, success_threshold=2)
    half_open(breaker, clock)
    succeed(breaker, clock)
    fail(breaker, clock)
    clock.advance(RESET)
    succeed(breaker, clock)
    assert breaker.state is HALF_OPEN


def test_release_of_cancelled_probe_frees_its_slot(clock: FakeClock) -> None:
    """release() of a probe that ended without an outcome lets another probe in."""
    breaker = make(clock)
    half_open(breaker, clock)
    now = clock.monotonic()
    probe = breaker.acquire(now)
    breaker.release(probe)
    breaker.acquire(now)
    assert breaker.state is HALF_OPEN


def test_release_does_not_count_as_probe_outcome(clock: FakeClock) -> None:
    """A released probe neither closes nor re-opens the breaker."""
    breaker = make(clock)
    half_open(breaker, clock)
    breaker.release(breaker.acquire(clock.monotonic()))
    assert breaker.snapshot().state is HALF_OPEN


def test_release_of_closed_permit_changes_nothing(clock: FakeClock) -> None:
    """release() of a permit issued while CLOSED leaves counts and state alone."""
    breaker = make(clock)
    fail(breaker, clock, 2)
    before = breaker.snapshot()
    breaker.release(breaker.acquire(clock.monotonic()))
    assert breaker.snapshot() == before


def test_closing_starts_with_an_empty_window(clock: FakeClock) -> None:
    """Failures from before the breaker opened do not count after it closes again."""
    breaker = make(clock, monitoring_period=1000.0)
    half_open(breaker, clock)
    succeed(breaker, clock)
    fail(breaker, clock, 2)
    assert breaker.state is CLOSED


# -- stale permits -----------------------------------------------------------------------


def test_stale_closed_permit_failure_does_not_reopen_half_open(clock: FakeClock) -> None:
    """A failure reported with a permit from the CLOSED period does not re-open HALF_OPEN."""
    breaker = make(clock)
    old = breaker.acquire(clock.monotonic())
    half_open(breaker, clock)
    breaker.acquire(clock.monotonic())
    breaker.record(old, failure=True, duration=0.01, now=clock.monotonic())
    assert breaker.snapshot().state is HALF_OPEN


def test_stale_closed_permit_success_is_not_a_probe_success(clock: FakeClock) -> None:
    """A success reported with a permit from the CLOSED period does not close HALF_OPEN."""
    breaker = make(clock)
    old = breaker.acquire(clock.monotonic())
    half_open(breaker, clock)
    breaker.record(old, failure=False, duration=0.01, now=clock.monotonic())
    assert breaker.state is HALF_OPEN


def test_stale_probe_cannot_close_a_later_half_open(clock: FakeClock) -> None:
    """A probe from an earlier half-open period cannot close the current one."""
    breaker = make(clock, half_open_max_calls=2)
    half_open(breaker, clock)
    now = clock.monotonic()
    old_probe, failing = breaker.acquire(now), breaker.acquire(now)
    breaker.record(failing, failure=True, duration=0.01, now=now)
    clock.advance(RESET)
    assert breaker.state is HALF_OPEN
    breaker.record(old_probe, failure=False, duration=0.01, now=clock.monotonic())
    assert breaker.state is HALF_OPEN


def test_stale_probe_release_does_not_free_a_new_slot(clock: FakeClock) -> None:
    """Releasing a probe from an earlier half-open period leaves the new slots taken."""
    breaker = make(clock, half_open_max_calls=2)
    half_open(breaker, clock)
    now = clock.monotonic()
    old_probe, failing = breaker.acquire(now), breaker.acquire(now)
    breaker.record(failing, failure=True, duration=0.01, now=now)
    clock.advance(RESET)
    now = clock.monotonic()
    breaker.acquire(now)
    breaker.acquire(now)
    breaker.release(old_probe)
    assert breaker.snapshot().half_open_in_flight == 2
    rejection(breaker, now)


def test_permit_from_before_reset_is_ignored(clock: FakeClock) -> None:
    """A failure reported with a permit from before a manual reset is not counted."""
    breaker = make(clock)
    old = breaker.acquire(clock.monotonic())
    breaker.force_open()
    breaker.reset()
    breaker.record(old, failure=True, duration=0.01, now=clock.monotonic())
    assert breaker.snapshot().failures == 0


# -- rate mode ---------------------------------------------------------------------------


def test_rate_mode_below_minimum_calls_never_trips(clock: FakeClock) -> None:
    """With fewer than minimum_calls calls in the window no failure rate trips."""
    breaker = make(clock, failure_rate_threshold=0.5, minimum_calls=10)
    fail(breaker, clock, 9)
    assert breaker.state is CLOSED


def test_rate_mode_trips_at_the_rate(clock: FakeClock) -> None:
    """Failures reaching failure_rate_threshold of at least minimum_calls calls open."""
    breaker = make(clock, failure_rate_threshold=0.5, minimum_calls=10)
    succeed(breaker, clock, 5)
    fail(breaker, clock, 4)
    assert breaker.state is CLOSED
    fail(breaker, clock)
    assert breaker.state is OPEN


def test_rate_mode_below_the_rate_stays_closed(clock: FakeClock) -> None:
    """A failure rate under the threshold leaves the breaker closed."""
    breaker = make(clock, failure_rate_threshold=0.5, minimum_calls=10)
    succeed(breaker, clock, 6)
    fail(breaker, clock, 4)
    assert breaker.state is CLOSED


def test_rate_mode_ignores_failure_threshold(clock: FakeClock) -> None:
    """In rate mode failure_threshold is not used: more failures than it do not open."""
    breaker = make(clock, failure_threshold=1, failure_rate_threshold=0.5, minimum_calls=10)
    succeed(breaker, clock, 6)
    fail(breaker, clock, 3)
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("rate", "calls", "failures"), [(0.07, 100, 7), (0.28, 25, 7), (0.55, 100, 55)]
)
def test_rate_mode_trips_at_exact_decimal_rate(
    clock: FakeClock, rate: float, calls: int, failures: int
) -> None:
    """Failures exactly at a decimal rate (7 of 100 at 0.07) open despite float rounding."""
    breaker = make(
        clock, failure_rate_threshold=rate, minimum_calls=calls, monitoring_period=1000.0
    )
    succeed(breaker, clock, calls - failures)
    fail(breaker, clock, failures)
    assert breaker.state is OPEN


def test_rate_mode_trips_when_a_success_reaches_minimum_calls(clock: FakeClock) -> None:
    """The rate is judged when a success brings the window to minimum_calls."""
    breaker = make(clock, failure_rate_threshold=0.5, minimum_calls=4)
    fail(breaker, clock, 2)
    succeed(breaker, clock, 2)
    assert breaker.state is OPEN


def test_rate_mode_forgets_expired_calls(clock: FakeClock) -> None:
    """Calls that left the window do not count toward minimum_calls."""
    breaker = make(clock, failure_rate_threshold=0.5, minimum_calls=4)
    fail(breaker, clock, 3)
    clock.advance(11.0)
    fail(breaker, clock)
    assert breaker.state is CLOSED


# -- slow-call mode ----------------------------------------------------------------------


def slow_mode(clock: FakeClock, **settings: Any) -> CircuitBreaker:
    """A breaker where calls over 1 s are slow and half of minimum_calls=4 slow ones open."""
    values: dict[str, Any] = {
        "slow_call_threshold": 1.0,
        "slow_call_rate_threshold": 0.5,
        "minimum_calls": 4,
    }
    values.update(settings)
    return make(clock, **values)


def test_slow_calls_trip_at_slow_call_rate(clock: FakeClock) -> None:
    """Successful but slow calls reaching slow_call_rate_threshold open the breaker."""
    breaker = slow_mode(clock)
    succeed(breaker, clock, 2)
    call(breaker, clock, failure=False, duration=2.0)
    assert breaker.state is CLOSED
    call(breaker, clock, failure=False, duration=2.0)
    assert breaker.state is OPEN


def test_slow_calls_trip_at_exact_decimal_rate(clock: FakeClock) -> None:
    """Slow calls exactly at a decimal rate (7 of 100 at 0.07) open despite float rounding."""
    breaker = slow_mode(clock, slow_call_rate_threshold=0.07, minimum_calls=100)
    succeed(breaker, clock, 93)
    for _ in range(7):
        call(breaker, clock, failure=False, duration=2.0)
    assert breaker.state is OPEN


def test_slow_calls_below_minimum_calls_do_not_trip(clock: FakeClock) -> None:
    """Slow calls alone do not open before minimum_calls calls are in the window."""
    breaker = slow_mode(clock)
    for _ in range(3):
        call(breaker, clock, failure=False, duration=2.0)
    assert breaker.state is CLOSED


def test_duration_equal_to_slow_threshold_is_not_slow(clock: FakeClock) -> None:
    """Only a call slower than slow_call_threshold counts as slow."""
    breaker = slow_mode(clock)
    call(breaker, clock, failure=False, duration=1.0)
    assert breaker.snapshot().slow_calls == 0


def test_slow_threshold_alone_counts_but_never_trips(clock: FakeClock) -> None:
    """slow_call_threshold without a slow rate counts slow calls but never opens."""
    breaker = make(clock, slow_call_threshold=1.0, minimum_calls=1)
    for _ in range(20):
        call(breaker, clock, failure=False, duration=5.0)
    assert (breaker.state, breaker.snapshot().slow_calls) == (CLOSED, 20)


def test_slow_probe_reopens_in_slow_call_mode(clock: FakeClock) -> None:
    """A successful but slow probe re-opens when slow-call mode is configured."""
    breaker = slow_mode(clock)
    half_open(breaker, clock)
    call(breaker, clock, failure=False, duration=2.0)
    assert breaker.state is OPEN


def test_slow_probe_closes_without_slow_rate_threshold(clock: FakeClock) -> None:
    """With only slow_call_threshold set, a slow probe success still closes."""
    breaker = make(clock, slow_call_threshold=1.0)
    half_open(breaker, clock)
    call(breaker, clock, failure=False, duration=2.0)
    assert breaker.state is CLOSED


def test_slow_probe_closes_without_slow_call_config(clock: FakeClock) -> None:
    """Without slow-call settings a long probe that succeeded closes the breaker."""
    breaker = make(clock)
    half_open(breaker, clock)
    call(breaker, clock, failure=False, duration=500.0)
    assert breaker.state is CLOSED


def test_fast_probe_closes_in_slow_call_mode(clock: FakeClock) -> None:
    """In slow-call mode a fast successful probe closes the breaker."""
    breaker = slow_mode(clock)
    half_open(breaker, clock)
    call(breaker, clock, failure=False, duration=0.5)
    assert breaker.state is CLOSED


# -- manual control ----------------------------------------------------------------------


def test_force_open_rejects_with_reset_timeout_retry_after(clock: FakeClock) -> None:
    """A forced-open breaker rejects every call with retry_after = reset_timeout."""
    breaker = make(clock)
    breaker.force_open()
    error = rejection(breaker, clock.monotonic())
    assert (error.service, error.retry_after) == (NAME, RESET)


def test_force_open_never_half_opens(clock: FakeClock) -> None:
    """A forced-open breaker stays FORCED_OPEN long after the reset timeout."""
    breaker = make(clock)
    breaker.force_open()
    clock.advance(RESET * 10)
    assert breaker.state is FORCED_OPEN
    rejection(breaker, clock.monotonic())


def test_force_closed_never_trips(clock: FakeClock) -> None:
    """A forced-closed breaker keeps admitting whatever fails."""
    breaker = make(clock, failure_threshold=1)
    breaker.force_closed()
    fail(breaker, clock, 50)
    assert breaker.state is FORCED_CLOSED


def test_force_closed_still_counts_the_window(clock: FakeClock) -> None:
    """A forced-closed breaker still counts calls and failures for the snapshot."""
    breaker = make(clock)
    breaker.force_closed()
    fail(breaker, clock, 5)
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures) == (5, 5)


def test_force_closed_overrides_open(clock: FakeClock) -> None:
    """force_closed() on an open breaker admits calls at once."""
    breaker = make(clock)
    trip(breaker, clock)
    breaker.force_closed()
    breaker.acquire(clock.monotonic())
    assert breaker.state is FORCED_CLOSED


def test_reset_from_forced_open_admits(clock: FakeClock) -> None:
    """reset() leaves FORCED_OPEN for CLOSED and admits calls."""
    breaker = make(clock)
    breaker.force_open()
    breaker.reset()
    breaker.acquire(clock.monotonic())
    assert breaker.state is CLOSED


def test_reset_from_forced_closed_trips_normally_again(clock: FakeClock) -> None:
    """After reset() a formerly forced-closed breaker opens on failures again."""
    breaker = make(clock)
    breaker.force_closed()
    fail(breaker, clock, 2)
    breaker.reset()
    fail(breaker, clock, 3)
    assert breaker.state is OPEN


def test_reset_from_open_clears_the_window(clock: FakeClock) -> None:
    """reset() of an open breaker closes it with an empty window."""
    breaker = make(clock)
    trip(breaker, clock)
    breaker.reset()
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.calls, snapshot.failures) == (CLOSED, 0, 0)


def test_reset_when_closed_clears_window_without_event(clock: FakeClock) -> None:
    """reset() of a closed breaker empties its window and reports no state change."""
    breaker = make(clock)
    changes: list[StateChange] = []
    breaker.add_listener(changes.append)
    fail(breaker, clock, 2)
    breaker.reset()
    assert (breaker.snapshot().failures, changes) == (0, [])


def test_forcing_the_current_state_again_reports_nothing(clock: FakeClock) -> None:
    """force_open() twice reports a single state change."""
    breaker = make(clock)
    changes: list[StateChange] = []
    breaker.add_listener(changes.append)
    breaker.force_open()
    breaker.force_open()
    assert changes == [StateChange(NAME, CLOSED, FORCED_OPEN, START)]


# -- listeners ---------------------------------------------------------------------------


def test_listeners_get_every_transition_in_order(clock: FakeClock) -> None:
    """Listeners see CLOSED->OPEN->HALF_OPEN->OPEN->HALF_OPEN->CLOSED with their times."""
    breaker = make(clock)
    changes: list[StateChange] = []
    breaker.add_listener(changes.append)
    trip(breaker, clock)
    clock.advance(RESET)
    fail(breaker, clock)
    clock.advance(RESET + 1.0)
    succeed(breaker, clock)
    t1, t2, t3 = START + RESET, START + RESET, START + 2 * RESET + 1.0
    assert changes == [
        StateChange(NAME, CLOSED, OPEN, START),
        StateChange(NAME, OPEN, HALF_OPEN, t1),
        StateChange(NAME, HALF_OPEN, OPEN, t2),
        StateChange(NAME, OPEN, HALF_OPEN, t3),
        StateChange(NAME, HALF_OPEN, CLOSED, t3),
    ]


def test_every_listener_is_called(clock: FakeClock) -> None:
    """Each registered listener receives the same change."""
    breaker = make(clock)
    first: list[StateChange] = []
    second: list[StateChange] = []
    breaker.add_listener(first.append)
    breaker.add_listener(second.append)
    breaker.force_open()
    assert first == second == [StateChange(NAME, CLOSED, FORCED_OPEN, START)]


def _trip_by_record(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, clock, 3)


def _half_open_by_acquire(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.acquire(clock.monotonic() + RESET)


def _half_open_by_state(breaker: CircuitBreaker, clock: FakeClock) -> None:
    clock.advance(RESET)
    assert breaker.state is HALF_OPEN


def _half_open_by_snapshot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    clock.advance(RESET)
    breaker.snapshot()


def _force_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.force_open()


@pytest.mark.parametrize(
    ("opened", "trigger", "to_state"),
    [
        (False, _trip_by_record, OPEN),
        (True, _half_open_by_acquire, HALF_OPEN),
        (True, _half_open_by_state, HALF_OPEN),
        (True, _half_open_by_snapshot, HALF_OPEN),
        (False, _force_open, FORCED_OPEN),
    ],
)
def test_listener_runs_outside_the_lock(
    clock: FakeClock,
    opened: bool,
    trigger: Callable[[CircuitBreaker, FakeClock], None],
    to_state: BreakerState,
) -> None:
    """A listener may call snapshot() (which takes the lock) without deadlocking."""
    breaker = make(clock)
    if opened:
        trip(breaker, clock)
    seen: list[tuple[StateChange, BreakerSnapshot]] = []
    breaker.add_listener(lambda change: seen.append((change, breaker.snapshot())))
    worker = threading.Thread(target=trigger, args=(breaker, clock), daemon=True)
    worker.start()
    worker.join(timeout=5.0)
    assert not worker.is_alive(), "deadlock: the listener was called with the lock held"
    assert [(c.to_state, s.state) for c, s in seen] == [(to_state, to_state)]


def test_raising_listener_does_not_break_the_breaker(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged; later listeners still run and the state moves."""
    breaker = make(clock)
    after: list[StateChange] = []

    def broken(change: StateChange) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    breaker.add_listener(after.append)
    with caplog.at_level(logging.ERROR, logger="resilience_otel"):
        trip(breaker, clock)
    assert [c.to_state for c in after] == [OPEN]
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


# -- snapshot, retry_after, allows_retry -------------------------------------------------


def test_snapshot_counts_calls_failures_and_slow_calls(clock: FakeClock) -> None:
    """snapshot() reports the window's calls, failures and slow calls."""
    breaker = make(clock, failure_threshold=10, slow_call_threshold=1.0)
    succeed(breaker, clock, 3)
    fail(breaker, clock, 2)
    call(breaker, clock, failure=False, duration=2.0)
    assert breaker.snapshot() == BreakerSnapshot(
        name=NAME,
        state=CLOSED,
        calls=6,
        failures=2,
        slow_calls=1,
        half_open_in_flight=0,
        retry_after=0.0,
    )


def test_snapshot_forgets_calls_older_than_the_window(clock: FakeClock) -> None:
    """Once the monitoring period passed, snapshot() shows an empty window."""
    breaker = make(clock)
    fail(breaker, clock, 2)
    clock.advance(10.0)
    assert (breaker.snapshot().calls, breaker.snapshot().failures) == (0, 0)


def test_snapshot_reports_time_left_while_open(clock: FakeClock) -> None:
    """While open, the snapshot's retry_after is the time left until a probe."""
    breaker = make(clock)
    trip(breaker, clock)
    clock.advance(10.0)
    snapshot = breaker.snapshot()
    assert snapshot.state is OPEN
    assert snapshot.retry_after == pytest.approx(RESET - 10.0)


def test_retry_after_is_zero_when_closed(clock: FakeClock) -> None:
    """retry_after() of a closed breaker is 0.0."""
    assert make(clock).retry_after() == 0.0


def test_retry_after_uses_the_clock_without_now(clock: FakeClock) -> None:
    """retry_after() without ``now`` counts down with the injected clock."""
    breaker = make(clock)
    trip(breaker, clock)
    clock.advance(RESET - 4.0)
    assert breaker.retry_after() == pytest.approx(4.0)


def _closed(breaker: CircuitBreaker, clock: FakeClock) -> float:
    return clock.monotonic()


def _open_early(breaker: CircuitBreaker, clock: FakeClock) -> float:
    return trip(breaker, clock) + RESET - 0.01


def _open_due(breaker: CircuitBreaker, clock: FakeClock) -> float:
    return trip(breaker, clock) + RESET


def _half_open_now(breaker: CircuitBreaker, clock: FakeClock) -> float:
    half_open(breaker, clock)
    return clock.monotonic()


def _forced_open(breaker: CircuitBreaker, clock: FakeClock) -> float:
    breaker.force_open()
    return clock.monotonic() + RESET * 10


def _forced_closed(breaker: CircuitBreaker, clock: FakeClock) -> float:
    breaker.force_closed()
    return clock.monotonic()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (_closed, True),
        (_open_early, False),
        (_open_due, True),
        (_half_open_now, True),
        (_forced_open, False),
        (_forced_closed, True),
    ],
)
def test_allows_retry(
    clock: FakeClock, setup: Callable[[CircuitBreaker, FakeClock], float], expected: bool
) -> None:
    """allows_retry(now) is False only while open before the reset timeout, or forced open."""
    breaker = make(clock)
    now = setup(breaker, clock)
    assert breaker.allows_retry(now) is expected
