"""``python -m bench.db``: overhead of the resilient redis-py and asyncpg clients.

Redis ``GET``/``SET`` (sync) and asyncpg ``fetchval('SELECT 1')`` against the machine's Redis
(127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, db ``test``), contenders interleaved in rounds
in one process, as in ``python -m bench``:

- ``raw``: the plain client;
- ``ours-off``: instrumented with ``Policy(telemetry=False)`` (breaker + retry);
- ``ours-full``: breaker + retry + span + metrics on SDK providers whose exports go nowhere;
- ``otel-redis``: the plain client with opentelemetry-instrumentation-redis on the same kind
  of SDK providers (the reference for "what tracing alone costs");
- ``bookkeeping``: the plain client plus nothing but a closed breaker's admission and
  success record and the retry budget's deposit (no classification, retry loop, timeout or
  dead-letter path): the least a breaker with a retry budget costs in Python;
- ``sdk-floor``: the plain client plus only the SDK work our telemetry contract asks for (one
  span with our attributes, made current, and the two histogram records in its context, where
  the SDK's default exemplar filter samples them), with no breaker or retry: the least any
  implementation of the contract pays the SDK.

A second Redis table replaces redis-py's socket with a connection that answers at once
(``connection_class``), so it shows the Python cost alone, without loopback noise.

opentelemetry-instrumentation-asyncpg cannot be installed next to the other contrib packages
(it pins an older semantic-conventions release), so the asyncpg target is judged against the
reference overhead stated for it (50-60 µs; the lower bound is used).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import redis
from opentelemetry import context, trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from resilience_otel import CircuitBreaker, Policy
from resilience_otel import asyncpg as resilient_pg
from resilience_otel import redis as resilient_redis
from resilience_otel._core.retry import RetryBudget

from .report import Row, fmt, latency_table, summarise
from .timing import Block, async_block, run_rounds, sync_block

DSN = "postgresql://postgres@127.0.0.1:5432/test"
ASYNCPG_INSTRUMENTATION_US = 50.0  # the stated reference (50-60 µs): judged on the low end


class _Drop(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _providers() -> dict[str, Any]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(_Drop()))
    return {
        "tracer_provider": tracer_provider,
        "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
    }


class InstantConnection(redis.Connection):
    """A redis-py connection that answers every command at once, without a socket."""

    def connect(self) -> None:
        pass

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        pass

    def can_read(self, timeout: float = 0) -> bool:
        return False

    def read_response(self, disable_decoding: bool = False, **kwargs: Any) -> object:
        return b"value"

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        pass


def _sdk_floor(call: Callable[[], object]) -> Callable[[], object]:
    """``call`` with only the SDK work of our telemetry contract around it."""
    providers = _providers()
    tracer = providers["tracer_provider"].get_tracer("bench")
    meter = providers["meter_provider"].get_meter("bench")
    db_duration = meter.create_histogram("db.client.operation.duration", unit="s")
    call_duration = meter.create_histogram("resilience.call.duration", unit="s")
    span_attributes = {"db.system.name": "redis", "server.address": "127.0.0.1",
                       "db.namespace": "0", "db.operation.name": "GET",
                       "resilience.service": "bench"}  # fmt: skip
    db_attributes = {"db.system.name": "redis", "server.address": "127.0.0.1",
                     "db.operation.name": "GET"}  # fmt: skip
    call_attributes = {"service": "bench", "client": "redis", "outcome": "success"}

    def floor() -> object:
        span = tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=span_attributes)
        token = context.attach(trace.set_span_in_context(span))
        begin = time.monotonic()
        try:
            return call()
        finally:
            duration = time.monotonic() - begin
            # In the span's context, as ours: the SDK's default filter then takes exemplars.
            db_duration.record(duration, db_attributes)
            call_duration.record(duration, call_attributes)
            context.detach(token)
            span.end()

    return floor


class _Bookkeeping:
    """A closed breaker's admission and success record plus a budget deposit, and no more."""

    def __init__(self) -> None:
        policy = Policy(service="bench-bookkeeping")
        self.breaker = CircuitBreaker(policy.breaker, name=policy.service)
        assert policy.retry.budget is not None
        self.budget = RetryBudget(policy.retry.budget)

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        breaker, budget, monotonic = self.breaker, self.budget, time.monotonic

        def guarded(*args: Any, **kwargs: Any) -> Any:
            started = monotonic()
            budget.deposit(started)
            permit = breaker.acquire(started)
            value = call(*args, **kwargs)
            now = monotonic()
            breaker.record(permit, failure=False, duration=now - started, now=now)
            return value

        return guarded

    def wrap_async(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        breaker, budget, monotonic = self.breaker, self.budget, time.monotonic

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            started = monotonic()
            budget.deposit(started)
            permit = breaker.acquire(started)
            value = await call(*args, **kwargs)
            now = monotonic()
            breaker.record(permit, failure=False, duration=now - started, now=now)
            return value

        return guarded


def _redis_blocks(**connection: Any) -> dict[str, Block]:
    def client() -> redis.Redis:
        pool = redis.ConnectionPool(host="127.0.0.1", port=6379, **connection)
        return redis.Redis(connection_pool=pool)

    off = resilient_redis.instrument(client(), policy=Policy(service="bench-off", telemetry=False))
    full = resilient_redis.instrument(client(), policy=Policy(service="bench"), **_providers())
    traced = client()
    RedisInstrumentor().instrument_client(traced, tracer_provider=_providers()["tracer_provider"])
    raw = client()
    raw.set("bench:key", "value")
    floor_client = client()
    kept = client()
    kept.execute_command = _Bookkeeping().wrap(kept.execute_command)  # type: ignore[method-assign]

    def get_set(c: redis.Redis) -> Callable[[], object]:
        def call() -> object:
            c.set("bench:key", "value")
            return c.get("bench:key")

        return call

    floor_set = _sdk_floor(lambda: floor_client.set("bench:key", "value"))
    floor_get = _sdk_floor(lambda: floor_client.get("bench:key"))
    return {
        "raw": sync_block(get_set(raw)),
        "ours-off": sync_block(get_set(off)),
        "ours-full": sync_block(get_set(full)),
        "otel-redis": sync_block(get_set(traced)),
        "bookkeeping": sync_block(get_set(kept)),
        "sdk-floor": sync_block(lambda: (floor_set(), floor_get())),
    }


def _postgres_blocks(runner: asyncio.Runner) -> dict[str, Block]:
    connections = [runner.run(asyncpg.connect(DSN)) for _ in range(4)]
    off = resilient_pg.wrap(connections[1], policy=Policy(service="bench-off", telemetry=False))
    full = resilient_pg.wrap(connections[2], policy=Policy(service="bench"), **_providers())
    kept = _Bookkeeping().wrap_async(connections[3].fetchval)
    return {
        "raw": async_block(runner, lambda: connections[0].fetchval("SELECT 1")),
        "ours-off": async_block(runner, lambda: off.fetchval("SELECT 1")),
        "ours-full": async_block(runner, lambda: full.fetchval("SELECT 1")),
        "bookkeeping": async_block(runner, lambda: kept("SELECT 1")),
    }


def _show(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}\n")
    print(latency_table(rows))


def _overhead(rows: list[Row], name: str) -> float:
    return next(r.wall.overhead_us for r in rows if r.name == name) or 0.0


def _targets(redis_rows: list[Row], pg_rows: list[Row]) -> list[tuple[str, bool, str]]:
    # Each operation is two commands in the redis block (SET then GET): per-command figures.
    redis_raw = next(r.wall.median_us for r in redis_rows if r.name == "raw")
    instr = _overhead(redis_rows, "otel-redis")
    results = []
    full = _overhead(redis_rows, "ours-full")
    floor = _overhead(redis_rows, "sdk-floor")
    results.append(
        (
            "redis: full path <= 0.5x instrumentation overhead",
            full <= 0.5 * instr,
            f"{fmt(full / 2)} µs vs {fmt(instr / 2)} µs per command ({fmt(full / instr, 2)}x); "
            f"the SDK work of the contract alone: {fmt(floor / 2)} µs ({fmt(floor / instr, 2)}x)",
        )
    )
    off = _overhead(redis_rows, "ours-off")
    kept = _overhead(redis_rows, "bookkeeping")
    results.append(
        (
            "redis: telemetry off within 5% of raw",
            off <= 0.05 * redis_raw,
            f"+{fmt(off / 2)} µs per command = {fmt(100 * off / redis_raw)}%; bare bookkeeping "
            f"+{fmt(kept / 2)} µs = {fmt(100 * kept / redis_raw)}%",
        )
    )
    pg_raw = next(r.wall.median_us for r in pg_rows if r.name == "raw")
    pg_full = _overhead(pg_rows, "ours-full")
    results.append(
        (
            "asyncpg: full path <= 0.5x instrumentation overhead (50 µs reference)",
            pg_full <= 0.5 * ASYNCPG_INSTRUMENTATION_US,
            f"{fmt(pg_full)} µs",
        )
    )
    pg_off = _overhead(pg_rows, "ours-off")
    pg_kept = _overhead(pg_rows, "bookkeeping")
    results.append(
        (
            "asyncpg: telemetry off within 5% of raw",
            pg_off <= 0.05 * pg_raw,
            f"+{fmt(pg_off)} µs = {fmt(100 * pg_off / pg_raw)}%; bare bookkeeping "
            f"+{fmt(pg_kept)} µs = {fmt(100 * pg_kept / pg_raw)}%",
        )
    )
    return results  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.db", description=__doc__)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    rng = random.Random(0)

    def rounds(blocks: dict[str, Block]) -> list[Row]:
        return summarise(run_rounds(blocks, rounds=args.rounds, requests=args.requests,
                                    warmup=200, rng=rng))  # fmt: skip

    _show("redis: SET + GET per request, no I/O (instant replies)",
          rounds(_redis_blocks(connection_class=InstantConnection)))  # fmt: skip
    redis_rows = rounds(_redis_blocks())
    _show("redis: SET + GET per request (sync, loopback)", redis_rows)
    with asyncio.Runner() as runner:
        pg_rows = rounds(_postgres_blocks(runner))
    _show("asyncpg: fetchval('SELECT 1') per request (async, loopback)", pg_rows)
    print("\n### Targets\n")
    for name, passed, detail in _targets(redis_rows, pg_rows):
        print(f"- {'PASS' if passed else 'FAIL'} {name}: {detail}")
    print(f"\n(medians over {args.rounds} rounds; CPU columns leave out time spent descheduled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
