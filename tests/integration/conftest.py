"""Fixtures for integration tests: a fault-injecting HTTP server on loopback and fast policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pytest

from resilience_otel import BreakerConfig, Policy, RetryConfig

from .faultserver import FaultServer


class PolicyFactory(Protocol):
    """Builds a policy with short delays; keyword arguments override the defaults."""

    def __call__(
        self,
        *,
        max_attempts: int = ...,
        failure_threshold: int = ...,
        reset_timeout: float = ...,
        call_timeout: float | None = ...,
        half_open_max_calls: int = ...,
    ) -> Policy: ...


def fast_policy(
    *,
    max_attempts: int = 3,
    failure_threshold: int = 100,
    reset_timeout: float = 60.0,
    call_timeout: float | None = 0.3,
    half_open_max_calls: int = 1,
) -> Policy:
    """A policy with 10 ms fixed backoff, no retry budget and a breaker that rarely trips."""
    return Policy(
        service="faults",
        breaker=BreakerConfig(
            failure_threshold=failure_threshold,
            monitoring_period=60.0,
            reset_timeout=reset_timeout,
            call_timeout=call_timeout,
            half_open_max_calls=half_open_max_calls,
        ),
        retry=RetryConfig(
            max_attempts=max_attempts,
            base_delay=0.01,
            max_delay=0.05,
            jitter="none",  # type: ignore[arg-type]  # coerced to Jitter.NONE
            budget=None,
        ),
    )


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A started fault server answering 200 unless scripted; stopped after the test."""
    with FaultServer() as server:
        yield server


@pytest.fixture
def make_policy() -> PolicyFactory:
    """The :func:`fast_policy` factory."""
    return fast_policy
