"""The async transport on trio, which httpx supports through anyio: timeouts, retries and
backoff work there as on asyncio, against a real loopback server."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from resilience_otel import AsyncResilientTransport, BreakerConfig, Policy, RetryConfig
from resilience_otel._core.deadline import Deadlines

from .faultserver import FaultServer, hang, status

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def policy(**retry: object) -> Policy:
    return Policy(
        service="trio-upstream",
        breaker=BreakerConfig(call_timeout=0.3, failure_threshold=100),
        retry=RetryConfig(base_delay=0.01, max_delay=0.02, **retry),  # type: ignore[arg-type]
    )


async def test_a_deadline_scope_cancels_an_overdue_await_on_trio() -> None:
    """A scope still open at its deadline ends with TimeoutError and says it expired."""
    begin = time.monotonic()
    with pytest.raises(TimeoutError), Deadlines().scope(0.05) as scope:
        await anyio.sleep(10)
    assert scope.expired
    assert 0.045 <= time.monotonic() - begin < 1.0


async def test_a_scope_left_in_time_does_not_expire_on_trio() -> None:
    """Leaving a scope before its deadline leaves the task alone."""
    with Deadlines().scope(0.5) as scope:
        await anyio.sleep(0.01)
    assert not scope.expired
    await anyio.sleep(0.01)  # no stray cancellation arrives later


async def test_retries_with_backoff_on_trio(fault_server: FaultServer) -> None:
    """Two 503s then a 200: the call succeeds after backing off on trio's clock."""
    fault_server.script("/q", [status(503), status(503), status(200, body=b"ok")])
    transport = AsyncResilientTransport(policy=policy(max_attempts=3))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(fault_server.url("/q"))
    assert response.status_code == 200
    assert fault_server.count("/q", "GET") == 3


async def test_call_timeout_cuts_a_hanging_server_on_trio(fault_server: FaultServer) -> None:
    """A server that never answers is cut at call_timeout with httpx's ReadTimeout."""
    fault_server.script("/hang", [hang()])
    transport = AsyncResilientTransport(policy=policy(max_attempts=1))
    begin = time.monotonic()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(fault_server.url("/hang"))
    assert time.monotonic() - begin < 0.3 + 0.05
