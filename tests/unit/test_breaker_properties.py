"""Property-based tests: random operation sequences keep the breaker's invariants."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience_otel import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    StateChange,
)
from resilience_otel.testing import FakeClock

DETERMINISTIC = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SLOW_THRESHOLD = 1.0

ADVANCES = (0.0, 0.3, 1.0, 2.5, 5.0, 10.0)

# An operation is (kind, n). "acquire" takes a permit and holds it; "success", "failure",
# "slow" and "release" finish held permit number n; "call_success"/"call_failure" acquire and
# record at once; "advance" moves the clock by ADVANCES[n]. The list is weighted so that
# short sequences reach OPEN, HALF_OPEN with busy probe slots, and back.
KINDS = (
    *["acquire"] * 3,
    *["call_failure"] * 3,
    "call_success",
    "success",
    "failure",
    "slow",
    *["release"] * 2,
    *["advance"] * 2,
)
Op = tuple[str, int]

# One integer per operation keeps generation cheap.
operations = st.lists(
    st.integers(0, len(KINDS) * len(ADVANCES) - 1).map(
        lambda i: (KINDS[i // len(ADVANCES)], i % len(ADVANCES))
    ),
    min_size=10,
    max_size=40,
)


@st.composite
def breaker_configs(draw: st.DrawFn) -> BreakerConfig:
    """Small thresholds and timings so short sequences reach every state."""
    slow = draw(st.booleans())
    return BreakerConfig(
        failure_threshold=draw(st.integers(1, 4)),
        monitoring_period=draw(st.sampled_from([2.0, 5.0, 10.0])),
        reset_timeout=draw(st.sampled_from([1.0, 5.0, 10.0])),
        half_open_max_calls=draw(st.integers(1, 3)),
        success_threshold=draw(st.integers(1, 3)),
        failure_rate_threshold=draw(st.none() | st.sampled_from([0.25, 0.5, 1.0])),
        minimum_calls=draw(st.integers(1, 5)),
        slow_call_threshold=SLOW_THRESHOLD if slow else None,
        slow_call_rate_threshold=draw(st.none() | st.just(0.5)) if slow else None,
        window_buckets=draw(st.sampled_from([1, 4, 10])),
    )


@dataclass
class Permit:
    """A permit we hold, and whether it was a probe of the half-open period ``episode``."""

    value: int
    probe: bool
    episode: int


@dataclass
class Harness:
    """Drives a breaker and tracks permits and state changes independently of its internals."""

    config: BreakerConfig
    clock: FakeClock = field(default_factory=FakeClock)
    changes: list[StateChange] = field(default_factory=list)
    held: list[Permit] = field(default_factory=list)
    upstream_calls: int = 0

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.config, name="prop", clock=self.clock)
        self.breaker.add_listener(self.changes.append)

    @property
    def episode(self) -> int:
        """Changes so far; a permit is stale once any change happened after it was issued."""
        return len(self.changes)

    def opened_at(self) -> float | None:
        """When the breaker last opened, if its last transition was to OPEN."""
        if self.changes and self.changes[-1].to_state is BreakerState.OPEN:
            return self.changes[-1].at
        return None

    def last_opened(self) -> float | None:
        """When the breaker most recently moved to OPEN, whatever happened since."""
        opens = [change.at for change in self.changes if change.to_state is BreakerState.OPEN]
        return opens[-1] if opens else None

    def live_probes(self, state: BreakerState) -> int:
        """Probes we hold that belong to the current half-open period."""
        if state is not BreakerState.HALF_OPEN:
            return 0
        return sum(p.probe and p.episode == self.episode for p in self.held)

    def acquire(self) -> bool:
        """Ask for a permit, check that the decision is justified; return whether admitted."""
        now = self.clock.monotonic()
        opened = self.opened_at()
        must_reject = opened is not None and now < opened + self.config.reset_timeout
        try:
            value = self.breaker.acquire(now)
        except CircuitOpenError as error:
            self.check_rejection(error, now)
            return False
        assert not must_reject, "an open breaker admitted a call before its reset timeout"
        self.upstream_calls += 1
        probe = self.breaker.snapshot().state is BreakerState.HALF_OPEN
        self.held.append(Permit(value, probe, self.episode))
        return True

    def check_rejection(self, error: CircuitOpenError, now: float) -> None:
        """A rejection happens only while OPEN before the timeout or with every slot busy."""
        state = self.breaker.snapshot().state
        assert error.service == "prop"
        if state is BreakerState.OPEN:
            opened = self.opened_at()
            assert opened is not None
            assert now < opened + self.config.reset_timeout
            assert error.retry_after == pytest.approx(opened + self.config.reset_timeout - now)
        else:
            assert state is BreakerState.HALF_OPEN
            assert self.live_probes(state) == self.config.half_open_max_calls
            assert error.retry_after == 0.0

    def finish(self, kind: str, index: int) -> None:
        """Record or release one held permit."""
        if not self.held:
            return
        permit = self.held.pop(index % len(self.held))
        if kind == "release":
            self.breaker.release(permit.value)
            return
        duration = SLOW_THRESHOLD * 2 if kind == "slow" else 0.01
        self.breaker.record(
            permit.value, failure=kind == "failure", duration=duration, now=self.clock.monotonic()
        )

    def apply(self, op: Op) -> None:
        """Run one operation."""
        kind, n = op
        if kind == "acquire":
            self.acquire()
        elif kind == "advance":
            self.clock.advance(ADVANCES[n])
        elif kind.startswith("call_"):
            if self.acquire():
                self.finish(kind.removeprefix("call_"), len(self.held) - 1)
        else:
            self.finish(kind, n)

    def snapshot(self) -> BreakerSnapshot:
        """A snapshot taken at the clock's time."""
        return self.breaker.snapshot()


def run(config: BreakerConfig, ops: list[Op]) -> Harness:
    """Apply ``ops`` to a fresh harness, checking the common invariants after each."""
    harness = Harness(config)
    for op in ops:
        harness.apply(op)
        snap = harness.snapshot()
        assert isinstance(snap.state, BreakerState)
        assert 0 <= snap.failures <= snap.calls
        assert 0 <= snap.slow_calls <= snap.calls
        assert harness.live_probes(snap.state) == snap.half_open_in_flight
        assert snap.half_open_in_flight <= config.half_open_max_calls
        if snap.state is BreakerState.HALF_OPEN:
            opened = harness.last_opened()
            assert opened is not None
            assert harness.clock.monotonic() >= opened + config.reset_timeout
    return harness


@DETERMINISTIC
@given(config=breaker_configs(), ops=operations)
def test_invariants_hold_for_any_operation_sequence(config: BreakerConfig, ops: list[Op]) -> None:
    """Probes stay within half_open_max_calls, counts stay sane, rejections are justified."""
    run(config, ops)


@settings(DETERMINISTIC, max_examples=40)
@given(config=breaker_configs(), ops=operations)
def test_state_changes_form_a_chain(config: BreakerConfig, ops: list[Op]) -> None:
    """Each reported change starts where the previous one ended, at non-decreasing times."""
    changes = run(config, ops).changes
    for before, after in itertools.pairwise(changes):
        assert before.to_state is after.from_state
        assert before.at <= after.at
    assert all(change.to_state is not change.from_state for change in changes)
    assert not changes or changes[0].from_state is BreakerState.CLOSED


@settings(DETERMINISTIC, max_examples=20)
@given(config=breaker_configs(), ops=operations)
def test_only_failures_or_slow_calls_open_a_closed_breaker(
    config: BreakerConfig, ops: list[Op]
) -> None:
    """Without failed or slow outcomes a breaker never leaves CLOSED."""
    harmless = [op for op in ops if op[0] not in ("failure", "slow", "call_failure")]
    assert run(config, harmless).changes == []
