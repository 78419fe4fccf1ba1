"""Engine.call / Engine.acall: the first attempt outside the flow, the flow after a failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience_otel import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    InMemoryDeadLetterQueue,
    Jitter,
    Observer,
    Policy,
    RetryConfig,
)
from resilience_otel._config.policy import RetryBudgetConfig
from resilience_otel._core.classify import ErrorClass, Failure, FailureKind
from resilience_otel._core.engine import Attempt, CallDescription, Engine
from resilience_otel.testing import FakeClock


class Flaky(Exception):
    """A transient failure in these tests."""


def classify(value: Any, error: Exception | None) -> Failure | None:
    if isinstance(error, Flaky):
        return Failure(ErrorClass.TRANSIENT, FailureKind.CONNECTION, error_type="Flaky")
    if error is not None:
        return Failure(ErrorClass.PERMANENT, FailureKind.OTHER, error_type=type(error).__name__)
    if value == "bad":
        return Failure(ErrorClass.TRANSIENT, FailureKind.SERVER_ERROR, error_type="bad")
    return None


class Recorder(Observer):
    def __init__(self) -> None:
        self.finished: list[tuple[str, int]] = []
        self.retries: list[int] = []
        self.rejected = 0

    def call_finished(self, service: str, client: str, outcome: str, error_class: ErrorClass | None,
                      attempts: int, duration: float) -> None:  # fmt: skip
        self.finished.append((outcome, attempts))

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self.retries.append(attempt)

    def call_rejected(self, service: str, client: str, retry_after: float) -> None:
        self.rejected += 1


def make_engine(
    *, breaker: BreakerConfig | None = None, budget: RetryBudgetConfig | None = None
) -> tuple[Engine, Recorder, InMemoryDeadLetterQueue]:
    recorder = Recorder()
    queue = InMemoryDeadLetterQueue()
    policy = Policy(
        service="svc",
        breaker=breaker or BreakerConfig(failure_threshold=2, reset_timeout=10.0),
        retry=RetryConfig(max_attempts=3, base_delay=0.1, jitter=Jitter.NONE, budget=budget),
        telemetry=False,
    )
    engine = Engine(
        policy, client="test", classify=classify, clock=FakeClock(), observers=[recorder],
        dead_letters=queue, cancel_slow=True,
    )  # fmt: skip
    return engine, recorder, queue


def describe() -> CallDescription:
    return CallDescription(operation="test op")


class Script:
    """Answers attempts from a list: a value, or an exception to raise."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.steps: list[Attempt] = []

    def __call__(self, step: Attempt) -> Any:
        self.steps.append(step)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def run_async(self, step: Attempt) -> Any:
        return self(step)


def test_a_first_success_returns_after_one_attempt_and_one_report() -> None:
    """A call that succeeds at once makes one attempt, reported once, with its timeout."""
    engine, recorder, _ = make_engine()
    script = Script("ok")
    breaker = engine.new_breaker("svc")
    assert engine.call(breaker, script, lambda v: None, replayable=True, describe=describe) == "ok"
    assert [s.number for s in script.steps] == [1]
    assert script.steps[0].timeout == engine.policy.breaker.call_timeout
    assert recorder.finished == [("success", 1)]
    assert breaker.snapshot().calls == 1


def test_a_first_failure_continues_in_the_flow_with_numbered_attempts() -> None:
    """After a failed first attempt the retries follow, numbered from 2, with the backoff."""
    engine, recorder, _ = make_engine(breaker=BreakerConfig(failure_threshold=5))
    script = Script(Flaky(), "bad", "ok")
    breaker = engine.new_breaker("svc")
    assert engine.call(breaker, script, lambda v: None, replayable=True, describe=describe) == "ok"
    assert [s.number for s in script.steps] == [1, 2, 3]
    assert recorder.retries == [1, 2]
    assert recorder.finished == [("success", 3)]
    assert isinstance(engine.clock, FakeClock)
    assert engine.clock.sleeps == [0.1, 0.2]


def test_a_failed_value_on_the_first_attempt_is_discarded_before_the_retry() -> None:
    """A value classified as a failure is handed to ``discard`` before the next attempt."""
    engine, _, _ = make_engine()
    discarded: list[str] = []
    result = engine.call(
        engine.new_breaker("svc"), Script("bad", "ok"), discarded.append,
        replayable=True, describe=describe,
    )  # fmt: skip
    assert result == "ok"
    assert discarded == ["bad"]


def test_a_permanent_first_failure_is_raised_without_retry() -> None:
    """A permanent error on the first attempt ends the call there, reported once and not
    dead-lettered (permanent failures are not recorded by default)."""
    engine, recorder, queue = make_engine()
    script = Script(ValueError("nope"))
    with pytest.raises(ValueError, match="nope"):
        engine.call(engine.new_breaker("svc"), script, lambda v: None, replayable=True,
                    describe=describe)  # fmt: skip
    assert len(script.steps) == 1
    assert recorder.finished == [("failure", 1)]
    assert queue.entries() == []


def test_an_open_breaker_rejects_without_an_attempt() -> None:
    """With the breaker open the attempt never runs; the call is rejected and recorded."""
    engine, recorder, queue = make_engine()
    breaker = engine.new_breaker("svc")
    breaker.force_open()
    script = Script("ok")
    with pytest.raises(CircuitOpenError):
        engine.call(breaker, script, lambda v: None, replayable=True, describe=describe)
    assert script.steps == []
    assert recorder.rejected == 1
    assert recorder.finished == [("rejected", 0)]
    assert [letter.reason.value for letter in queue.entries()] == ["circuit_open"]


def test_a_rejected_call_deposits_in_the_retry_budget_once() -> None:
    """A call counts once towards the retry budget, also when the flow takes it over."""
    engine, _, _ = make_engine(budget=RetryBudgetConfig(ratio=0.5, min_retries_per_second=0.0))
    breaker = engine.new_breaker("svc")
    breaker.force_open()
    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            engine.call(breaker, Script(), lambda v: None, replayable=True, describe=describe)
    assert engine.budget is not None
    assert engine.budget.available == pytest.approx(2.0)  # 4 calls x 0.5, not 8 x 0.5


def test_an_interrupted_probe_gives_its_permit_back() -> None:
    """KeyboardInterrupt in a half-open probe frees the probe slot for the next call."""
    engine, _, _ = make_engine(
        breaker=BreakerConfig(failure_threshold=1, reset_timeout=10.0, half_open_max_calls=1)
    )
    breaker = engine.new_breaker("svc")
    with pytest.raises(Flaky):
        engine.call(breaker, Script(Flaky()), lambda v: None, replayable=False, describe=describe)
    assert isinstance(engine.clock, FakeClock)
    engine.clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(KeyboardInterrupt):
        engine.call(breaker, Script(KeyboardInterrupt()), lambda v: None, replayable=True,
                    describe=describe)  # fmt: skip
    assert engine.call(breaker, Script("ok"), lambda v: None, replayable=True,
                       describe=describe) == "ok"  # fmt: skip
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.anyio
async def test_async_first_failure_is_retried_and_succeeds() -> None:
    """acall mirrors call: a transient first failure is retried by the flow."""
    engine, recorder, _ = make_engine()
    script = Script(Flaky(), "ok")

    async def discard(value: Any) -> None:
        return None

    result = await engine.acall(
        engine.new_breaker("svc"), script.run_async, discard, replayable=True, describe=describe
    )
    assert result == "ok"
    assert [s.number for s in script.steps] == [1, 2]
    assert recorder.finished == [("success", 2)]


@pytest.mark.anyio
async def test_async_slow_first_attempt_is_cancelled_at_call_timeout_and_retried() -> None:
    """With cancel_slow, an attempt over call_timeout fails with TimeoutError, then retries."""
    engine, recorder, _ = make_engine(breaker=BreakerConfig(call_timeout=0.05))
    attempts: list[int] = []

    def classify_timeouts(value: Any, error: Exception | None) -> Failure | None:
        if isinstance(error, TimeoutError):
            return Failure(ErrorClass.TRANSIENT, FailureKind.TIMEOUT, error_type="TimeoutError")
        return classify(value, error)

    engine.classify = classify_timeouts

    async def attempt(step: Attempt) -> str:
        attempts.append(step.number)
        if step.number == 1:
            await asyncio.sleep(5)
        return "ok"

    async def discard(value: Any) -> None:
        return None

    result = await engine.acall(
        engine.new_breaker("svc"), attempt, discard, replayable=True, describe=describe
    )
    assert result == "ok"
    assert attempts == [1, 2]
    assert recorder.retries == [1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
