"""RollingWindow: bucketed counts of calls, failures and slow calls over a period."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience_otel._core.window import RollingWindow


def counts(window: RollingWindow) -> tuple[int, int, int]:
    """(calls, failures, slow) as the window reports them."""
    return window.calls, window.failures, window.slow


def test_new_window_is_empty() -> None:
    """A fresh window counts nothing."""
    assert counts(RollingWindow(10.0, 5)) == (0, 0, 0)


def test_add_counts_calls_failures_and_slow() -> None:
    """add() sums calls, failures and slow calls across buckets."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 1, 1, 0)
    window.add(100.5, 2, 0, 1)
    window.add(103.0, 3, 2, 2)
    assert counts(window) == (6, 3, 3)


def test_add_defaults_to_one_call() -> None:
    """add(now) with no counts records one call, no failure, not slow."""
    window = RollingWindow(10.0, 5)
    window.add(100.0)
    assert counts(window) == (1, 0, 0)


def test_bucket_is_kept_until_the_period_has_passed() -> None:
    """An event still counts just before the period is over."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 1, 1, 1)
    window.advance(109.9)
    assert counts(window) == (1, 1, 1)


def test_bucket_expires_once_the_period_has_passed() -> None:
    """An event no longer counts once its bucket is a full period old."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 1, 1, 1)
    window.advance(110.0)
    assert counts(window) == (0, 0, 0)


def test_only_expired_buckets_are_cleared() -> None:
    """Advancing past one bucket's lifetime keeps the younger buckets."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 1, 1, 0)
    window.add(104.0, 2, 0, 1)
    window.advance(110.0)
    assert counts(window) == (2, 0, 1)


def test_window_covers_less_than_period_by_at_most_one_bucket() -> None:
    """An event late in its bucket expires up to one bucket width early."""
    window = RollingWindow(10.0, 5)
    window.add(101.9)
    window.advance(110.0)
    assert window.calls == 0


def test_gap_longer_than_period_clears_everything() -> None:
    """After a silence longer than the period every bucket is empty."""
    window = RollingWindow(10.0, 5)
    for step in range(10):
        window.add(100.0 + step, 1, 1, 1)
    window.advance(125.0)
    assert counts(window) == (0, 0, 0)


def test_huge_gap_clears_everything_and_counts_again() -> None:
    """A gap of a billion seconds clears the window, which then counts normally."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 4, 2, 1)
    window.add(1e9, 1, 1, 0)
    assert counts(window) == (1, 1, 0)


def test_advance_to_an_earlier_time_changes_nothing() -> None:
    """advance() to a time before the last one keeps the counts."""
    window = RollingWindow(10.0, 5)
    window.add(105.0, 1, 1, 0)
    window.advance(50.0)
    assert counts(window) == (1, 1, 0)


def test_late_add_counts_in_the_current_bucket() -> None:
    """An event stamped slightly before the last advance is counted, not lost."""
    window = RollingWindow(10.0, 5)
    window.advance(106.0)
    window.add(104.0, 1, 1, 0)  # an older bucket than the current one
    window.advance(115.0)
    assert counts(window) == (1, 1, 0)


def test_reset_forgets_everything() -> None:
    """reset() empties every bucket."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 3, 2, 1)
    window.add(104.0, 3, 2, 1)
    window.reset()
    assert counts(window) == (0, 0, 0)


def test_window_counts_normally_after_reset() -> None:
    """After reset() new events count from zero and old buckets never come back."""
    window = RollingWindow(10.0, 5)
    window.add(100.0, 3, 2, 1)
    window.reset()
    window.add(102.0, 1, 0, 0)
    window.advance(111.0)
    assert counts(window) == (1, 0, 0)


def test_single_bucket_window() -> None:
    """With one bucket the window holds only the current period-wide bucket."""
    window = RollingWindow(10.0, 1)
    window.add(100.0)
    window.add(109.0)
    assert window.calls == 2
    window.advance(110.0)
    assert window.calls == 0


# -- property: the window agrees with a brute-force model --------------------------------

QUARTER = Fraction(1, 4)

events = st.lists(
    st.tuples(
        st.integers(0, 24),  # time step forward, in quarter seconds
        st.integers(0, 3),  # calls
        st.integers(0, 3),  # failures (capped at calls)
        st.integers(0, 3),  # slow (capped at calls)
    ),
    max_size=40,
)


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(
    period=st.sampled_from([Fraction(2), Fraction(6), Fraction(10)]),
    buckets=st.sampled_from([1, 2, 4, 5]),
    steps=events,
)
def test_window_matches_a_model(
    period: Fraction, buckets: int, steps: list[tuple[int, int, int, int]]
) -> None:
    """Counts equal the events in buckets younger than ``buckets`` bucket widths; never < 0."""
    window = RollingWindow(float(period), buckets)
    width = period / buckets
    now = Fraction(400)
    history: list[tuple[int, int, int, int]] = []  # (epoch, calls, failures, slow)
    for forward, calls, failures, slow in steps:
        now += forward * QUARTER
        failures, slow = min(failures, calls), min(slow, calls)
        window.add(float(now), calls, failures, slow)
        epoch = int(now // width)
        history.append((epoch, calls, failures, slow))
        live = [h for h in history if h[0] > epoch - buckets]
        expected = tuple(sum(h[i] for h in live) for i in (1, 2, 3))
        assert counts(window) == expected
        assert min(counts(window)) >= 0
