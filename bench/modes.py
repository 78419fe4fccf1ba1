"""The benchmark modes: what each builds, how it times it, and what it reports."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pybreaker

from resilience_otel import CircuitOpenError
from resilience_otel.testing import FakeClock

from .contenders import (
    CONTENDERS,
    AsyncContenders,
    SyncContenders,
    build_async,
    build_sync,
    ok_response,
)
from .report import Row, paired_median, summarise
from .timing import (
    Block,
    Timing,
    async_block,
    concurrent_block,
    expect_error,
    run_rounds,
    sync_block,
)

__all__ = ["MOCK_URL", "POOL", "TASKS", "ModeResult", "Settings", "run_mode"]

# Never resolved or connected to: MockTransport answers in-process.
MOCK_URL = "http://bench.invalid/ping"
TASKS = 200

# A contender's connections idle while the others run their blocks; httpx's default 5 s
# keep-alive expiry would make some rounds reconnect, timing connects instead of requests.
_KEEP = httpx.Limits(keepalive_expiry=3600.0)
# httpcore's pool rescans all its connections on every request, once per idle connection and
# once per queued request, so its bookkeeping grows with the square of the pool: with one
# connection per task it costs far more than the request itself. Counted per request, about
# ten connections cost least for 200 tasks, so the tasks share POOL keep-alive connections.
POOL = 10
_KEEP_POOL = httpx.Limits(
    max_connections=POOL, max_keepalive_connections=POOL, keepalive_expiry=3600.0
)


def _loopback() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(limits=_KEEP)


def _async_loopback() -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(limits=_KEEP)


def _async_loopback_pool() -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(limits=_KEEP_POOL)


@dataclass(frozen=True)
class Settings:
    """How much to run: rounds, calls per block and warm-up calls per contender."""

    rounds: int
    requests: int
    warmup: int
    seed: int
    url: str  # the loopback server's URL (unused by mock-only modes)
    progress: Callable[[str], None]


@dataclass
class ModeResult:
    """A mode's rows (and, for ``failure``, its second table's rows)."""

    mode: str
    rows: list[Row]
    settings: dict[str, Any]
    retry_rows: list[RetryRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "rows": [row.as_dict() for row in self.rows],
            "retry_rows": [row.__dict__ for row in self.retry_rows],
        }


@dataclass(frozen=True)
class RetryRow:
    """Cost of one retry: a 503-then-200 call minus a first-time success (µs, paired)."""

    name: str
    ok_us: float
    retried_us: float
    retry_cost_us: float
    retry_cost_cpu_us: float


def _rounds(
    settings: Settings, blocks: dict[str, Block], mode: str, *, requests: int | None = None
) -> dict[str, list[Timing]]:
    requests = requests or settings.requests
    return run_rounds(
        blocks,
        rounds=settings.rounds,
        requests=requests,
        # Concurrent blocks must first open every pooled connection.
        warmup=max(settings.warmup, requests if mode == "concurrent" else 0),
        rng=random.Random(f"{settings.seed}:{mode}"),
        progress=lambda text: settings.progress(f"{mode}: {text}"),
    )


def _settings(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "rounds": settings.rounds,
        "requests": settings.requests,
        "warmup": settings.warmup,
        "seed": settings.seed,
        **extra,
    }


def _run_sync(settings: Settings, mode: str, contenders: SyncContenders) -> ModeResult:
    try:
        blocks = {name: sync_block(call) for name, call in contenders.calls.items()}
        samples = _rounds(settings, blocks, mode)
    finally:
        contenders.close()
    return ModeResult(mode, summarise(samples), _settings(settings))


def mock_mode(settings: Settings) -> ModeResult:
    """Pure overhead: every contender over an in-process ``httpx.MockTransport``."""
    return _run_sync(
        settings, "mock", build_sync(MOCK_URL, lambda: httpx.MockTransport(ok_response))
    )


def sync_mode(settings: Settings) -> ModeResult:
    """Sequential sync requests to the loopback server over keep-alive connections."""
    return _run_sync(settings, "sync", build_sync(settings.url, _loopback))


def _run_async(
    settings: Settings,
    mode: str,
    inner: Callable[[], httpx.AsyncBaseTransport],
    make_block: Callable[[asyncio.Runner, Callable[[], Any]], Block],
    requests: int,
) -> ModeResult:
    async def build() -> AsyncContenders:
        return build_async(settings.url, inner)

    with asyncio.Runner() as runner:
        contenders = runner.run(build())
        try:
            blocks = {name: make_block(runner, call) for name, call in contenders.calls.items()}
            samples = _rounds(settings, blocks, mode, requests=requests)
        finally:
            runner.run(contenders.aclose())
    extra = {"tasks": TASKS, "pool": POOL} if mode == "concurrent" else {}
    return ModeResult(mode, summarise(samples), _settings(settings, requests=requests, **extra))


def async_mode(settings: Settings) -> ModeResult:
    """Sequential requests from one asyncio task to the loopback server."""
    return _run_async(settings, "async", _async_loopback, async_block, settings.requests)


def concurrent_mode(settings: Settings) -> ModeResult:
    """:data:`TASKS` concurrent tasks sharing one client per contender; throughput."""
    requests = max(TASKS, -(-settings.requests // TASKS) * TASKS)
    return _run_async(
        settings,
        "concurrent",
        _async_loopback_pool,
        lambda runner, call: concurrent_block(runner, call, TASKS),
        requests,
    )


class _Flaky:
    """A mock upstream answering 503 then 200, alternately; counts what it served."""

    def __init__(self) -> None:
        self.served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.served += 1
        if self.served % 2:
            return httpx.Response(503, content=b"busy")
        return httpx.Response(200, content=b"ok")


def _rejection_blocks(settings: Settings) -> tuple[dict[str, Block], list[Callable[[], None]]]:
    """A raw loopback GET against calls rejected by an open breaker."""
    contenders = build_sync(settings.url, _loopback)
    for transport in contenders.ours.values():
        transport.breaker.force_open()
    contenders.hand_breaker.open()
    request = contenders.clients["ours-off"].build_request("GET", settings.url)
    at_transport = contenders.ours["ours-off"].handle_request
    blocks: dict[str, Block] = {
        "raw loopback GET": sync_block(contenders.calls["raw"]),
        "ours-off rejected": expect_error(contenders.calls["ours-off"], CircuitOpenError),
        "ours-full rejected": expect_error(contenders.calls["ours-full"], CircuitOpenError),
        "ours-off rejected, transport only": expect_error(
            lambda: at_transport(request), CircuitOpenError
        ),
        "hand-built rejected": expect_error(
            contenders.calls["hand-built"], pybreaker.CircuitBreakerError
        ),
    }
    return blocks, [contenders.close]


def _retry_blocks() -> tuple[dict[str, Block], list[Callable[[], None]], list[_Flaky]]:
    """Per contender: a call that succeeds at once, and one whose first attempt gets a 503."""
    clock = FakeClock()  # our waits are instant; tenacity gets a no-op sleep instead
    ok = build_sync(
        MOCK_URL,
        lambda: httpx.MockTransport(ok_response),
        clock=clock,
        never_trip=True,
        instant_waits=True,
    )
    flaky_handlers: list[_Flaky] = []

    def flaky_transport() -> httpx.MockTransport:
        flaky_handlers.append(_Flaky())
        return httpx.MockTransport(flaky_handlers[-1])

    flaky = build_sync(MOCK_URL, flaky_transport, clock=clock, never_trip=True, instant_waits=True)
    blocks: dict[str, Block] = {}
    for name in CONTENDERS[1:]:
        blocks[f"{name} ok"] = sync_block(ok.calls[name])
        blocks[f"{name} 503→200"] = sync_block(flaky.calls[name])
    return blocks, [ok.close, flaky.close], flaky_handlers


def _check_retried(handlers: list[_Flaky], calls: int) -> None:
    # Every call must have made exactly two attempts (503, then 200); otherwise a retry was
    # refused (breaker, budget) and the block timed something else. The raw client's
    # upstream is built but never called.
    served = sorted(h.served for h in handlers)
    if served != [0] + [2 * calls] * (len(served) - 1):
        raise RuntimeError(f"retry benchmark: expected {calls} calls of 2 attempts, saw {served}")


def failure_mode(settings: Settings) -> ModeResult:
    """(a) open-breaker rejections against a loopback request; (b) the cost of one retry."""
    rejection, closers = _rejection_blocks(settings)
    try:
        rejected = _rounds(settings, rejection, "failure/rejection")
    finally:
        for close in closers:
            close()
    retry, closers, handlers = _retry_blocks()
    try:
        retried = _rounds(settings, retry, "failure/retry")
        _check_retried(handlers, settings.warmup + settings.rounds * settings.requests)
    finally:
        for close in closers:
            close()
    rows = summarise(rejected, baseline="raw loopback GET")
    retry_rows = []
    for name in CONTENDERS[1:]:
        ok, twice = retried[f"{name} ok"], retried[f"{name} 503→200"]
        retry_rows.append(
            RetryRow(
                name=name,
                ok_us=statistics.median(t.wall for t in ok) * 1e6,
                retried_us=statistics.median(t.wall for t in twice) * 1e6,
                retry_cost_us=paired_median([t.wall for t in twice], [t.wall for t in ok]),
                retry_cost_cpu_us=paired_median([t.cpu for t in twice], [t.cpu for t in ok]),
            )
        )
    return ModeResult("failure", rows, _settings(settings), retry_rows)


MODES: dict[str, Callable[[Settings], ModeResult]] = {
    "mock": mock_mode,
    "sync": sync_mode,
    "async": async_mode,
    "concurrent": concurrent_mode,
    "failure": failure_mode,
}


def run_mode(mode: str, settings: Settings) -> ModeResult:
    """Run one mode (a key of :data:`MODES`)."""
    return MODES[mode](settings)
