"""Engine edge cases that need another actor to change the breaker mid-call."""

from __future__ import annotations

import httpx
import pytest

from resilience_otel import (
    InMemoryDeadLetterQueue,
    Jitter,
    Observer,
    Policy,
    ResilientTransport,
    RetriesExhaustedError,
    RetryConfig,
)
from resilience_otel.testing import FakeClock


class OpeningClock(FakeClock):
    """A fake clock whose first sleep lets another actor open the breaker."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: ResilientTransport | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        assert self.transport is not None
        self.transport.breaker.force_open()


def _transport(handler: httpx.MockTransport, clock: OpeningClock) -> ResilientTransport:
    policy = Policy(
        service="edge",
        retry=RetryConfig(max_attempts=3, base_delay=0.1, jitter=Jitter.NONE, budget=None),
    )
    transport = ResilientTransport(
        handler, policy=policy, clock=clock, dead_letters=InMemoryDeadLetterQueue()
    )
    clock.transport = transport
    return transport


def test_breaker_opening_during_the_wait_returns_the_kept_503_not_a_rejection() -> None:
    """A buffered 503 kept through the wait is handed back once the breaker opened meanwhile."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, text="busy")

    clock = OpeningClock()
    client = httpx.Client(transport=_transport(httpx.MockTransport(handler), clock))
    with client:
        response = client.get("http://edge.test/")
    assert response.status_code == 503
    assert response.text == "busy"
    assert len(calls) == 1
    assert clock.sleeps == [0.1]


def test_breaker_opening_during_the_wait_ends_with_the_original_error() -> None:
    """After an exception and no resend (the breaker opened in the wait), that error is raised."""
    raised: list[httpx.ConnectError] = []

    def handler(request: httpx.Request) -> httpx.Response:
        raised.append(httpx.ConnectError("refused", request=request))
        raise raised[-1]

    clock = OpeningClock()
    transport = _transport(httpx.MockTransport(handler), clock)
    client = httpx.Client(transport=transport)
    with client, pytest.raises(httpx.ConnectError) as caught:
        client.get("http://edge.test/")
    assert caught.value is raised[0]
    assert not isinstance(caught.value, RetriesExhaustedError)
    assert len(raised) == 1


def test_a_call_that_may_not_retry_fails_with_its_own_error_not_exhausted() -> None:
    """With allow_retry=False (a statement in a transaction) the error is not 'exhausted'."""
    from resilience_otel._core.engine import CallDescription, Engine
    from resilience_otel._core.steps import run_sync
    from resilience_otel.httpx import classify_http

    class Counting(Observer):
        exhausted = 0

        def retries_exhausted(self, service: str, client: str, attempts: int) -> None:
            self.exhausted += 1

    observer = Counting()
    engine = Engine(
        Policy(service="tx", telemetry=False),
        client="postgresql",
        classify=classify_http,
        clock=FakeClock(),
        observers=[observer],
    )
    flow = engine.flow(
        engine.new_breaker("tx"),
        replayable=True,
        describe=lambda: CallDescription("statement"),
        allow_retry=False,
    )
    refused = httpx.ConnectError("refused")

    def attempt(step: object) -> object:
        raise refused

    with pytest.raises(httpx.ConnectError) as caught:
        run_sync(flow, attempt, lambda value: None, engine.clock)
    assert caught.value is refused
    assert not isinstance(caught.value, RetriesExhaustedError)
    assert observer.exhausted == 0
