"""The contenders: one httpx client each, all sending ``GET url``.

- ``raw``: plain httpx.
- ``ours-off``: our transport, breaker and retry on, telemetry off.
- ``ours-full``: our transport with spans and metrics into SDK providers of its own.
- ``httpx-retries``: ``httpx_retries.RetryTransport`` with its default ``Retry``.
- ``hand-built``: tenacity retry + pybreaker breaker + opentelemetry-instrumentation-httpx's
  transport, the stack users assemble by hand today (semantic-convention mode left at the
  instrumentation's default, as users get it).

Providers are passed explicitly, never set globally, so one contender's telemetry cannot leak
into another's measurements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import httpx
import pybreaker
import tenacity
from httpx_retries import RetryTransport
from opentelemetry.instrumentation.httpx import (
    AsyncOpenTelemetryTransport,
    SyncOpenTelemetryTransport,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    Clock,
    Policy,
    ResilientTransport,
    SystemClock,
)

__all__ = [
    "CONTENDERS",
    "AsyncContenders",
    "Providers",
    "SyncContenders",
    "build_async",
    "build_sync",
]

CONTENDERS = ("raw", "ours-off", "ours-full", "httpx-retries", "hand-built")

# Generous and the same for everyone: on a loaded machine hundreds of concurrent tasks can
# stall a connect past httpx's 5 s default (ours caps attempts at call_timeout, 30 s, anyway).
TIMEOUT = httpx.Timeout(30.0)

SyncCall = Callable[[], object]
AsyncCall = Callable[[], Awaitable[object]]


class _DropSpans(SpanExporter):
    """Accepts every span and keeps none: spans are built and ended, export costs nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Providers:
    """An SDK tracer provider (spans dropped) and meter provider (never exported)."""

    tracer_provider: TracerProvider = field(default_factory=TracerProvider)
    meter_provider: MeterProvider = field(
        default_factory=lambda: MeterProvider(metric_readers=[InMemoryMetricReader()])
    )

    def __post_init__(self) -> None:
        # Simple (synchronous) processing: no exporter thread competing for the GIL mid-block.
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(_DropSpans()))

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def ok_response(request: httpx.Request) -> httpx.Response:
    """The mock upstream: a fixed small 200."""
    return httpx.Response(200, content=b"ok")


def bench_policy(*, telemetry: bool, never_trip: bool = False) -> Policy:
    """Our policy; ``never_trip`` keeps a long run of retried 503s from opening the breaker."""
    if never_trip:
        return Policy(
            service="bench", telemetry=telemetry, breaker=BreakerConfig(failure_threshold=10**9)
        )
    return Policy(service="bench", telemetry=telemetry)


def _retryable(error: BaseException) -> bool:
    # What a careful hand-written predicate retries: transport errors, 429 and 5xx.
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status == 429 or status >= 500
    return isinstance(error, httpx.TransportError)


def _client_error(error: BaseException) -> bool:
    # 4xx is the caller's fault and must not trip the breaker.
    return isinstance(error, httpx.HTTPStatusError) and error.response.status_code < 500


def _hand_breaker() -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, exclude=[_client_error])


def _no_sleep(seconds: float) -> None:
    return None


@dataclass
class SyncContenders:
    """Sync clients by contender name; ``close`` closes them all."""

    calls: dict[str, SyncCall]
    clients: dict[str, httpx.Client]
    ours: dict[str, ResilientTransport]
    hand_breaker: pybreaker.CircuitBreaker
    _stack: contextlib.ExitStack

    def close(self) -> None:
        self._stack.close()


@dataclass
class AsyncContenders:
    """Async clients by contender name; ``aclose`` closes them all."""

    calls: dict[str, AsyncCall]
    clients: dict[str, httpx.AsyncClient]
    ours: dict[str, AsyncResilientTransport]
    hand_breaker: pybreaker.CircuitBreaker
    _stack: contextlib.AsyncExitStack

    async def aclose(self) -> None:
        await self._stack.aclose()


def build_sync(
    url: str,
    inner: Callable[[], httpx.BaseTransport],
    *,
    clock: Clock | None = None,
    never_trip: bool = False,
    instant_waits: bool = False,
) -> SyncContenders:
    """One sync client per contender, each over its own ``inner()`` transport.

    ``clock`` drives our transports and ``instant_waits`` makes tenacity's waits instant (the
    retry-cost benchmark); httpx-retries' default ``Retry`` waits 0 s anyway.
    """
    stack = contextlib.ExitStack()
    own = Providers()
    theirs = Providers()
    stack.callback(own.shutdown)
    stack.callback(theirs.shutdown)
    clock = clock if clock is not None else SystemClock()
    ours = {
        "ours-off": ResilientTransport(
            inner(), policy=bench_policy(telemetry=False, never_trip=never_trip), clock=clock
        ),
        "ours-full": ResilientTransport(
            inner(),
            policy=bench_policy(telemetry=True, never_trip=never_trip),
            tracer_provider=own.tracer_provider,
            meter_provider=own.meter_provider,
            clock=clock,
        ),
    }
    transports: dict[str, httpx.BaseTransport] = {
        "raw": inner(),
        **ours,
        "httpx-retries": RetryTransport(transport=inner()),
        "hand-built": SyncOpenTelemetryTransport(
            inner(),
            tracer_provider=theirs.tracer_provider,
            meter_provider=theirs.meter_provider,
        ),
    }
    clients = {
        name: stack.enter_context(httpx.Client(transport=transport, timeout=TIMEOUT))
        for name, transport in transports.items()
    }
    calls: dict[str, SyncCall] = {
        name: partial(clients[name].get, url) for name in CONTENDERS if name != "hand-built"
    }
    breaker = _hand_breaker()
    calls["hand-built"] = _hand_built_sync(clients["hand-built"], url, breaker, instant_waits)
    return SyncContenders(calls, clients, ours, breaker, stack)


def _hand_built_sync(
    client: httpx.Client, url: str, breaker: pybreaker.CircuitBreaker, instant_waits: bool
) -> SyncCall:
    def attempt() -> httpx.Response:
        response = client.get(url)
        response.raise_for_status()
        return response

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(),
        retry=tenacity.retry_if_exception(_retryable),
        reraise=True,
        sleep=_no_sleep if instant_waits else tenacity.nap.sleep,
    )
    def send() -> httpx.Response:
        return breaker.call(attempt)

    return send


def build_async(url: str, inner: Callable[[], httpx.AsyncBaseTransport]) -> AsyncContenders:
    """One async client per contender, each over its own ``inner()`` transport.

    Call it inside the event loop that will use the clients.
    """
    stack = contextlib.AsyncExitStack()
    own = Providers()
    theirs = Providers()
    stack.callback(own.shutdown)
    stack.callback(theirs.shutdown)
    ours = {
        "ours-off": AsyncResilientTransport(inner(), policy=bench_policy(telemetry=False)),
        "ours-full": AsyncResilientTransport(
            inner(),
            policy=bench_policy(telemetry=True),
            tracer_provider=own.tracer_provider,
            meter_provider=own.meter_provider,
        ),
    }
    transports: dict[str, httpx.AsyncBaseTransport] = {
        "raw": inner(),
        **ours,
        "httpx-retries": RetryTransport(transport=inner()),
        "hand-built": AsyncOpenTelemetryTransport(
            inner(),
            tracer_provider=theirs.tracer_provider,
            meter_provider=theirs.meter_provider,
        ),
    }
    clients = {
        name: httpx.AsyncClient(transport=t, timeout=TIMEOUT) for name, t in transports.items()
    }
    for client in clients.values():
        stack.push_async_callback(client.aclose)
    calls: dict[str, AsyncCall] = {
        name: partial(clients[name].get, url) for name in CONTENDERS if name != "hand-built"
    }
    breaker = _hand_breaker()
    calls["hand-built"] = _hand_built_async(clients["hand-built"], url, breaker)
    return AsyncContenders(calls, clients, ours, breaker, stack)


def _hand_built_async(
    client: httpx.AsyncClient, url: str, breaker: pybreaker.CircuitBreaker
) -> AsyncCall:
    # pybreaker's call_async needs tornado. Its calling() context manager works across an
    # await instead: the state check (and CircuitBreakerError when open) happens on entry,
    # the outcome is recorded on exit, and its lock is not held while the request runs.
    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(),
        retry=tenacity.retry_if_exception(_retryable),
        reraise=True,
    )
    async def send() -> httpx.Response:
        with breaker.calling():
            response = await client.get(url)
            response.raise_for_status()
            return response

    return send
