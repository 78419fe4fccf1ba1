"""Attempts that return after their timeout, and a breaker that opens during the backoff.

An attempt that overran its timeout is a TIMEOUT failure on every driver (never a success),
and a call whose retry the breaker refuses ends as the failure it was, with its attempts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    CircuitOpenError,
    InMemoryDeadLetterQueue,
    Jitter,
    Observer,
    Policy,
    ResilientTransport,
    RetriesExhaustedError,
    RetryConfig,
)
from resilience_otel._core.classify import ErrorClass, Failure, FailureKind
from resilience_otel._core.engine import Attempt, CallDescription, Engine
from resilience_otel.dlq import DeadLetterReason
from resilience_otel.testing import FakeClock

URL = "http://overrun.test/"


class Recorder(Observer):
    """Keeps what the engine reports about calls and retries."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, ErrorClass | None, int]] = []
        self.retry_reasons: list[FailureKind] = []
        self.rejected = 0

    def call_finished(self, service: str, client: str, outcome: str, error_class: ErrorClass | None,
                      attempts: int, duration: float) -> None:  # fmt: skip
        self.finished.append((outcome, error_class, attempts))

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self.retry_reasons.append(reason)

    def call_rejected(self, service: str, client: str, retry_after: float) -> None:
        self.rejected += 1


class TrackedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that remembers whether it was closed (a connection given back)."""

    def __init__(self, data: bytes = b"late") -> None:
        self.data = data
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.data

    async def __aiter__(self) -> Any:
        yield self.data

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def _policy(max_attempts: int, *, call_timeout: float | None = 1.0, **retry: Any) -> Policy:
    return Policy(
        service="overrun",
        breaker=BreakerConfig(failure_threshold=100, call_timeout=call_timeout),
        retry=RetryConfig(
            max_attempts=max_attempts, base_delay=0.1, jitter=Jitter.NONE, budget=None, **retry
        ),
        telemetry=False,
    )


class Script:
    """An upstream for MockTransport: each request takes (seconds on the fake clock, status)."""

    def __init__(self, clock: FakeClock, *steps: tuple[float, int]) -> None:
        self.clock = clock
        self.steps = list(steps)
        self.bodies: list[TrackedBody] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        seconds, status = self.steps.pop(0)
        self.clock.advance(seconds)
        body = TrackedBody(f"attempt {len(self.bodies) + 1}".encode())
        self.bodies.append(body)
        return httpx.Response(status, stream=body)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        return self(request)


def _sync(script: Script, policy: Policy, **options: Any) -> ResilientTransport:
    return ResilientTransport(
        httpx.MockTransport(script), policy=policy, clock=script.clock, **options
    )


def _async(script: Script, policy: Policy, **options: Any) -> AsyncResilientTransport:
    return AsyncResilientTransport(
        httpx.MockTransport(script.handle), policy=policy, clock=script.clock, **options
    )


# -- rule: an attempt that returned after its timeout is a timeout ---------------------------
def test_sync_late_response_is_a_read_timeout_not_a_success() -> None:
    """A 200 arriving 2 s into a 1 s call_timeout fails as httpx.ReadTimeout and counts."""
    script = Script(FakeClock(), (2.0, 200))
    recorder = Recorder()
    transport = _sync(script, _policy(1), observers=[recorder])
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ReadTimeout) as caught:
        client.get(URL)
    assert "call_timeout" in str(caught.value)
    assert caught.value.request.url == URL
    assert transport.breaker.snapshot().failures == 1
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert script.bodies[0].closed


@pytest.mark.anyio
async def test_async_late_response_is_a_read_timeout_not_a_success() -> None:
    """The async twin: a late 200 is httpx.ReadTimeout, a breaker failure, and closed."""
    script = Script(FakeClock(), (2.0, 200))
    recorder = Recorder()
    transport = _async(script, _policy(1), observers=[recorder])
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get(URL)
    assert "call_timeout" in str(caught.value)
    assert transport.breaker.snapshot().failures == 1
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert script.bodies[0].closed


def test_sync_late_response_is_retried_as_a_timeout() -> None:
    """A late first response is discarded and retried with reason timeout; the retry's wins."""
    script = Script(FakeClock(), (2.0, 200), (0.1, 200))
    recorder = Recorder()
    transport = _sync(script, _policy(3), observers=[recorder])
    with httpx.Client(transport=transport) as client:
        response = client.get(URL)
    assert response.text == "attempt 2"
    assert recorder.retry_reasons == [FailureKind.TIMEOUT]
    assert recorder.finished == [("success", None, 2)]
    assert transport.breaker.snapshot().failures == 1


def test_sync_late_retry_is_a_timeout_and_exhausts_the_retries() -> None:
    """A late response on a retry (the flow's driver) ends as RetriesExhaustedError/ReadTimeout."""
    script = Script(FakeClock(), (0.0, 503), (5.0, 200))
    recorder = Recorder()
    transport = _sync(script, _policy(2), observers=[recorder])
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ReadTimeout) as caught:
        client.get(URL)
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 2
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 2)]
    assert all(body.closed for body in script.bodies)


@pytest.mark.anyio
async def test_async_late_retry_is_a_timeout_and_exhausts_the_retries() -> None:
    """The async driver treats a late retry the same way as the sync one."""
    script = Script(FakeClock(), (0.0, 503), (5.0, 200))
    transport = _async(script, _policy(2))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get(URL)
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 2
    assert transport.breaker.snapshot().failures == 2


def test_total_timeout_left_for_a_retry_bounds_that_retry() -> None:
    """With total_timeout 3 s, a retry starting at 0.1 s that takes 2.95 s overran its 2.9 s."""
    script = Script(FakeClock(), (0.0, 503), (2.95, 200))
    transport = _sync(script, _policy(2, call_timeout=None, total_timeout=3.0))
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ReadTimeout):
        client.get(URL)


def test_response_within_its_timeout_is_a_success() -> None:
    """Just under call_timeout is still a success on the first attempt."""
    script = Script(FakeClock(), (0.99, 200))
    transport = _sync(script, _policy(1))
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
    assert transport.breaker.snapshot().failures == 0


def _db_engine(clock: FakeClock, timed_out: Any, recorder: Recorder) -> Engine:
    def classify(value: object, error: Exception | None) -> Failure | None:
        if error is None:
            return None
        return Failure(ErrorClass.TRANSIENT, FailureKind.TIMEOUT, error_type=type(error).__name__)

    return Engine(
        _policy(2),
        client="redis",
        classify=classify,
        clock=clock,
        observers=[recorder],
        classify_values=False,
        timed_out=timed_out,
    )


class ShellTimeout(Exception):
    """The timeout type a shell hands the engine for overrun attempts."""


def test_database_value_after_its_timeout_fails_with_the_shell_error() -> None:
    """Values are never failures for DB shells, but a late one fails with the shell's error."""
    clock = FakeClock()
    recorder = Recorder()
    engine = _db_engine(clock, lambda step: ShellTimeout(f"attempt {step.number}"), recorder)
    discarded: list[object] = []

    def attempt(step: Attempt) -> str:
        clock.advance(1.5)
        return "value"

    with pytest.raises(ShellTimeout) as caught:
        engine.call(
            engine.new_breaker("db"), attempt, discarded.append, replayable=True,
            describe=lambda: CallDescription("GET"),
        )  # fmt: skip
    assert isinstance(caught.value, RetriesExhaustedError)
    assert str(caught.value) == "attempt 2"
    assert discarded == ["value", "value"]
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 2)]


# -- defect: the breaker opens during the backoff after a failed attempt ---------------------
class OpeningClock(FakeClock):
    """A fake clock whose first sleep opens the breaker of ``transport`` (another caller)."""

    transport: ResilientTransport | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        assert self.transport is not None
        self.transport.breaker.force_open()


def _opening(
    handler: Any, recorder: Recorder, *, read_body: bool = True
) -> tuple[ResilientTransport, OpeningClock, InMemoryDeadLetterQueue]:
    clock = OpeningClock()
    letters = InMemoryDeadLetterQueue()
    transport = ResilientTransport(
        httpx.MockTransport(handler), policy=_policy(3, call_timeout=None), clock=clock,
        dead_letters=letters, observers=[recorder], read_body=read_body,
    )  # fmt: skip
    clock.transport = transport
    return transport, clock, letters


def test_503_then_breaker_opens_during_the_wait_returns_the_503_as_a_failure() -> None:
    """The call counts one failed attempt, dead-letters retries_exhausted and returns the 503."""
    recorder = Recorder()
    transport, clock, letters = _opening(lambda request: httpx.Response(503, text="busy"), recorder)
    with httpx.Client(transport=transport) as client:
        response = client.get(URL)
    assert response.status_code == 503
    assert response.text == "busy"
    assert clock.sleeps == [0.1]
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert recorder.rejected == 0
    (letter,) = letters.entries()
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.attempts == 1
    assert letter.error_type == "503"
    assert letter.message.startswith("HTTP 503")


def test_streamed_503_is_closed_before_the_wait_and_still_counts_as_a_failure() -> None:
    """An unread streamed 503 holds a connection: it is closed before the wait; when the
    breaker then refuses the retry, the refusal is raised but the call counts as a failure."""
    recorder = Recorder()
    bodies: list[TrackedBody] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(TrackedBody())
        return httpx.Response(503, stream=bodies[-1])

    transport, _, letters = _opening(handler, recorder, read_body=False)
    with httpx.Client(transport=transport) as client, pytest.raises(CircuitOpenError):
        client.get(URL)
    assert bodies[0].closed
    assert recorder.finished == [("failure", ErrorClass.TRANSIENT, 1)]
    assert recorder.rejected == 0
    (letter,) = letters.entries()
    assert letter.reason is DeadLetterReason.RETRIES_EXHAUSTED
    assert letter.attempts == 1


def test_kept_503_is_closed_once_the_retry_is_admitted() -> None:
    """A buffered 503 kept through the wait is closed before the retry runs (never leaked)."""
    responses: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        responses.append(httpx.Response(503 if not responses else 200, content=b"x"))
        return responses[-1]

    transport = ResilientTransport(
        httpx.MockTransport(handler), policy=_policy(3, call_timeout=None), clock=FakeClock()
    )
    with httpx.Client(transport=transport) as client:
        assert client.get(URL).status_code == 200
    assert len(responses) == 2
    assert responses[0].is_closed
