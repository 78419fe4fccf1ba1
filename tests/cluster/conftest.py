"""Fixtures of the cluster tests: one six-node cluster per test module, in-memory telemetry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience_otel import BreakerConfig, Policy, RetryConfig
from tests.support.otel import Otel as BaseOtel

from .cluster_server import RedisClusterServers

SERVICE = "cluster"


class Otel(BaseOtel):
    """In-memory telemetry, with the calls counter by outcome and error class."""

    def outcomes(self) -> dict[tuple[str, str], int]:
        """``resilience.calls`` by ``(outcome, error_class)``."""
        return {
            (attributes["outcome"], attributes["error_class"]): point.value
            for attributes, point in self.points("resilience.calls")
        }


def policy(*, max_attempts: int = 3, call_timeout: float = 5.0) -> Policy:
    """Fast retries, a breaker that does not trip in these tests."""
    return Policy(
        service=SERVICE,
        breaker=BreakerConfig(failure_threshold=1000, call_timeout=call_timeout),
        retry=RetryConfig(max_attempts=max_attempts, base_delay=0.01, max_delay=0.05, budget=None),
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """Six test-owned nodes joined into one cluster, for the whole module."""
    with RedisClusterServers() as servers:
        yield servers


@pytest.fixture
def otel() -> Iterator[Otel]:
    """In-memory telemetry for one test."""
    otel = Otel()
    yield otel
    otel.shutdown()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
