"""Retry arithmetic: backoff and jitter, Retry-After parsing, the retry budget, per-kind limits."""

from __future__ import annotations

import email.utils
import random
import statistics

import pytest

from resilience_otel import (
    ErrorClass,
    Failure,
    FailureKind,
    Jitter,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
)
from resilience_otel._core.retry import RetryBudget, backoff_delay, parse_retry_after, retry_limits
from resilience_otel.testing import FakeClock

BASE, CAP, MULTIPLIER = 1.0, 30.0, 2.0
SAMPLES = 2000


def delay(
    jitter: Jitter,
    retry_index: int,
    *,
    previous: float = 0.0,
    rng: random.Random | None = None,
    base_delay: float = BASE,
    max_delay: float = CAP,
    multiplier: float = MULTIPLIER,
) -> float:
    """backoff_delay with the module's default base 1 s, cap 30 s, multiplier 2."""
    return backoff_delay(
        jitter,
        retry_index,
        base_delay=base_delay,
        max_delay=max_delay,
        multiplier=multiplier,
        previous=previous,
        rng=rng or random.Random(0),
    )


def samples(jitter: Jitter, retry_index: int, *, previous: float = 0.0) -> list[float]:
    """SAMPLES delays from one seeded generator."""
    rng = random.Random(20260101)
    return [delay(jitter, retry_index, previous=previous, rng=rng) for _ in range(SAMPLES)]


# -- backoff -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_index", "expected"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (6, 30.0), (50, 30.0)],
)
def test_no_jitter_grows_exponentially_up_to_the_cap(retry_index: int, expected: float) -> None:
    """Jitter.NONE waits base * multiplier**n, capped at max_delay."""
    assert delay(Jitter.NONE, retry_index) == expected


def test_no_jitter_with_multiplier_one_is_constant() -> None:
    """A multiplier of 1 gives the same delay for every retry."""
    assert {delay(Jitter.NONE, n, multiplier=1.0) for n in range(10)} == {BASE}


@pytest.mark.parametrize("retry_index", [0, 3, 7])
def test_full_jitter_stays_within_zero_and_the_delay(retry_index: int) -> None:
    """Jitter.FULL draws from [0, d] where d is the capped exponential delay."""
    ceiling = delay(Jitter.NONE, retry_index)
    values = samples(Jitter.FULL, retry_index)
    assert all(0.0 <= value <= ceiling for value in values)


def test_full_jitter_spreads_over_the_whole_range() -> None:
    """Full jitter reaches both ends of [0, d], not a narrow band."""
    values = samples(Jitter.FULL, 3)
    assert min(values) < 0.05 * 8.0
    assert max(values) > 0.95 * 8.0


def test_full_jitter_mean_is_half_the_delay() -> None:
    """The mean of 2000 full-jitter samples is within 5% of d/2."""
    assert statistics.fmean(samples(Jitter.FULL, 3)) == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("retry_index", [0, 3, 7])
def test_equal_jitter_stays_within_half_and_the_delay(retry_index: int) -> None:
    """Jitter.EQUAL draws from [d/2, d]."""
    ceiling = delay(Jitter.NONE, retry_index)
    values = samples(Jitter.EQUAL, retry_index)
    assert all(ceiling / 2 <= value <= ceiling for value in values)


def test_equal_jitter_mean_is_three_quarters_of_the_delay() -> None:
    """The mean of 2000 equal-jitter samples is within 5% of 3d/4."""
    assert statistics.fmean(samples(Jitter.EQUAL, 3)) == pytest.approx(6.0, rel=0.05)


@pytest.mark.parametrize("previous", [0.5, 1.0, 4.0, 9.0])
def test_decorrelated_jitter_stays_within_base_and_three_times_previous(previous: float) -> None:
    """Jitter.DECORRELATED draws from [base, max(base, 3 * previous)]."""
    upper = max(BASE, 3 * previous)
    values = samples(Jitter.DECORRELATED, 0, previous=previous)
    assert all(BASE <= value <= upper for value in values)


def test_decorrelated_jitter_is_capped_at_max_delay() -> None:
    """Decorrelated delays never exceed max_delay, even when 3 * previous does."""
    values = samples(Jitter.DECORRELATED, 0, previous=25.0)
    assert all(BASE <= value <= CAP for value in values)
    assert max(values) == CAP


def test_decorrelated_jitter_first_retry_waits_base_delay() -> None:
    """With no previous delay, decorrelated jitter waits exactly base_delay."""
    assert delay(Jitter.DECORRELATED, 0, previous=0.0) == BASE


def test_decorrelated_jitter_ignores_retry_index() -> None:
    """Decorrelated jitter grows from the previous delay, not from the retry index."""
    first = delay(Jitter.DECORRELATED, 0, previous=2.0, rng=random.Random(5))
    later = delay(Jitter.DECORRELATED, 40, previous=2.0, rng=random.Random(5))
    assert first == later


@pytest.mark.parametrize("jitter", list(Jitter))
@pytest.mark.parametrize("retry_index", [1024, 1025, 10**6, 10**18])
def test_huge_retry_index_does_not_overflow(jitter: Jitter, retry_index: int) -> None:
    """A huge retry index gives a delay within [0, max_delay] instead of OverflowError."""
    value = delay(jitter, retry_index, previous=CAP, multiplier=100.0)
    assert 0.0 <= value <= CAP


def test_huge_retry_index_without_jitter_waits_max_delay() -> None:
    """With no jitter a huge retry index waits exactly max_delay."""
    assert delay(Jitter.NONE, 10**9, multiplier=100.0) == CAP


def test_zero_base_delay_gives_zero_delays() -> None:
    """base_delay 0 means retry at once (for every realistic retry index)."""
    assert {delay(Jitter.NONE, n, base_delay=0.0) for n in range(100)} == {0.0}


# -- Retry-After -------------------------------------------------------------------------

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def http_date(unix: float) -> str:
    """An IMF-fixdate such as ``Thu, 01 Jan 2026 00:02:00 GMT``."""
    return email.utils.formatdate(unix, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-1", None),
        ("-0.5", None),
        ("nan", None),
        ("inf", None),
        ("1e400", None),
        ("abc", None),
        ("", None),
        ("   ", None),
        (None, None),
        (http_date(NOW + 120), 120.0),
        ("Thursday, 01-Jan-26 00:02:00 GMT", 120.0),  # obsolete RFC 850 form
        (http_date(NOW - 3600), 0.0),
        ("Thu, 01 Jan 2026 00:02:00", 120.0),  # no zone: HTTP dates are GMT
        ("Thu Jan  1 00:02:00 2026", 120.0),  # asctime form, which RFC 9110 still accepts
        ("Thu, 99 Foo 2026 25:61:00 GMT", None),
        ("\u00b2", None),  # a digit to str.isdigit() that int() rejects
        ("9" * 5000, None),  # beyond int()'s digit limit
        ("1" + "0" * 400, None),  # too large for a float
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, str) else None,
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After gives seconds for delta-seconds and HTTP dates, None for garbage."""
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_date_is_relative_to_now() -> None:
    """The same HTTP date means less waiting the later ``now`` is."""
    value = http_date(NOW + 120)
    assert parse_retry_after(value, NOW + 100) == pytest.approx(20.0)


# -- retry budget ------------------------------------------------------------------------


def withdrawals(budget: RetryBudget, now: float, attempts: int = 1000) -> int:
    """How many retries the budget grants in a row at ``now``."""
    granted = 0
    for _ in range(attempts):
        if not budget.try_withdraw(now):
            break
        granted += 1
    return granted


def test_budget_floor_allows_retries_without_calls() -> None:
    """With no calls, min_retries_per_second * window retries are allowed, then refused."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_retries_per_second=1.0, window=10.0))
    assert withdrawals(budget, 1000.0) == 10


def test_budget_ratio_grows_allowance_with_calls() -> None:
    """Each call deposited adds ``ratio`` retries to the allowance."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries_per_second=0.0, window=10.0))
    for _ in range(20):
        budget.deposit(1000.0)
    assert withdrawals(budget, 1000.0) == 10


def test_budget_ratio_adds_to_the_floor() -> None:
    """The allowance is ratio * calls plus the floor."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries_per_second=0.5, window=10.0))
    for _ in range(10):
        budget.deposit(1000.0)
    assert withdrawals(budget, 1000.0) == 10


def test_budget_without_floor_refuses_with_no_calls() -> None:
    """With no floor and no calls there is no retry to take."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries_per_second=0.0, window=10.0))
    assert budget.try_withdraw(1000.0) is False


def test_exhausted_budget_keeps_refusing() -> None:
    """Once exhausted, the budget refuses until something changes."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_retries_per_second=0.5, window=10.0))
    withdrawals(budget, 1000.0)
    assert [budget.try_withdraw(1000.0 + t) for t in (0.0, 1.0, 5.0)] == [False] * 3


def test_budget_allowance_returns_after_the_window() -> None:
    """Retries taken leave the window after ``window`` seconds of fake time."""
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_retries_per_second=0.5, window=10.0))
    withdrawals(budget, clock.monotonic())
    clock.advance(10.0)
    assert withdrawals(budget, clock.monotonic()) == 5


def test_budget_calls_leave_the_window_too() -> None:
    """Calls older than the window stop adding to the allowance."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries_per_second=0.0, window=10.0))
    for _ in range(20):
        budget.deposit(1000.0)
    assert withdrawals(budget, 1010.0) == 0


def test_budget_available_reports_remaining_allowance() -> None:
    """``available`` is ratio * calls + floor - retries taken."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries_per_second=0.5, window=10.0))
    for _ in range(4):
        budget.deposit(1000.0)
    budget.try_withdraw(1000.0)
    assert budget.available == pytest.approx(6.0)


# -- per-kind retry limits ---------------------------------------------------------------

RATE_LIMITED = Failure(ErrorClass.TRANSIENT, FailureKind.RATE_LIMITED)
TIMEOUT = Failure(ErrorClass.TRANSIENT, FailureKind.TIMEOUT)


def test_retry_limits_without_override_use_the_config() -> None:
    """With no override for the kind, the config's own limits apply."""
    config = RetryConfig(max_attempts=4, base_delay=0.5, max_delay=8.0, multiplier=3.0)
    assert retry_limits(config, RATE_LIMITED) == (4, 0.5, 8.0, 3.0)


def test_retry_limits_use_a_full_override() -> None:
    """An override with every field set replaces all four limits."""
    override = RetryOverride(max_attempts=6, base_delay=2.0, max_delay=60.0, multiplier=1.5)
    config = RetryConfig(by_kind={FailureKind.RATE_LIMITED: override})
    assert retry_limits(config, RATE_LIMITED) == (6, 2.0, 60.0, 1.5)


def test_retry_limits_inherit_unset_override_fields() -> None:
    """Override fields left as None inherit the config's values."""
    config = RetryConfig(
        max_attempts=4,
        base_delay=0.5,
        max_delay=8.0,
        multiplier=3.0,
        by_kind={FailureKind.RATE_LIMITED: RetryOverride(max_attempts=7)},
    )
    assert retry_limits(config, RATE_LIMITED) == (7, 0.5, 8.0, 3.0)


def test_retry_limits_override_applies_to_its_kind_only() -> None:
    """An override for RATE_LIMITED leaves TIMEOUT on the config's limits."""
    config = RetryConfig(
        max_attempts=4, by_kind={FailureKind.RATE_LIMITED: RetryOverride(max_attempts=7)}
    )
    assert retry_limits(config, TIMEOUT)[0] == 4
