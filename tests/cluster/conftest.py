"""Fixtures of the cluster tests: one six-node cluster per test module, in-memory telemetry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience_otel import BreakerConfig, Policy, RetryConfig

from .cluster_server import RedisClusterServers

SERVICE = "cluster"


class Otel:
    """An SDK tracer provider and meter provider with in-memory exporters (never global)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def providers(self) -> dict[str, Any]:
        """The keyword arguments that route a shell's telemetry here."""
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, oldest first."""
        return list(self.exporter.get_finished_spans())

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, data point)`` of every point of ``metric``."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend((dict(p.attributes), p) for p in item.data.data_points)
        return found

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
    otel.tracer_provider.shutdown()
    otel.meter_provider.shutdown()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
