"""The full demo's clients: one policy per service, the resilient clients built from them,
the worker loops that call the upstreams, and the replay of dead letters in the recovery.

Services: ``trading-quotes`` and ``trading-orders`` (HTTP, orders POSTed with an
``Idempotency-Key``), ``ai`` (HTTP, slow, rate-limited), ``cache`` (Redis) and ``orders-db``
(PostgreSQL) when those were found.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .. import (
    AsyncResilientTransport,
    BreakerConfig,
    BreakerState,
    FailureKind,
    Policy,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
)
from .._deadletters.base import DeadLetterQueue, DeadLetterReason, InMemoryDeadLetterQueue
from .phases import FAILOVER, RECOVERY, Timeline
from .upstreams import QUOTES

if TYPE_CHECKING:
    from .. import CircuitBreaker, DeadLetter, Observer, ReplayResult
    from .backends import PostgresSide, RedisSide
    from .failover import Failover
    from .stats import EventLog, Recorder

__all__ = [
    "Letters",
    "Service",
    "Sinks",
    "cache_service",
    "db_service",
    "http_services",
    "policies",
    "start",
]

SYMBOLS = tuple(QUOTES)
CALL_TIMEOUTS = {"trading-quotes": 0.5, "trading-orders": 0.5, "ai": 1.5, "cache": 0.25,
                 "orders-db": 0.5}  # fmt: skip
Operation = Callable[[int], Awaitable[object]]
Resend = Callable[["DeadLetter"], Awaitable[object]]


class Letters(DeadLetterQueue, Protocol):
    """A dead-letter queue that can replay asynchronously (in memory or a Redis stream)."""

    async def areplay(self, handler: Resend) -> ReplayResult:
        """Run ``handler`` on each letter; remove those it handled."""


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where every client reports: observers (recorder, health monitor) and metrics."""

    observers: tuple[Observer, ...]
    meter_provider: Any


@dataclass(frozen=True, slots=True)
class Service:
    """One service of the demo: how to call it, how often, and its breaker and queue."""

    name: str
    client: str
    operation: Operation
    workers: int
    pause: float
    breaker: CircuitBreaker
    dead_letters: Letters | None = None
    resend: Resend | None = None


def policies(phase_length: float) -> dict[str, Policy]:
    """A policy per service, sized so every phase of the run shows its effect.

    The breakers judge the failure *rate* over a window of about half a phase: with a few
    failures the retries cope and they stay closed; once nearly everything fails they open.
    The reset timeout is a quarter phase, so the recovery sees half-open probes close them.
    """
    window, reset = min(2.0, phase_length / 2), min(5.0, phase_length / 4)

    def breaker(name: str, minimum_calls: int) -> BreakerConfig:
        return BreakerConfig(
            failure_rate_threshold=0.75, minimum_calls=minimum_calls, monitoring_period=window,
            reset_timeout=reset, call_timeout=CALL_TIMEOUTS[name],
        )  # fmt: skip

    fast = RetryConfig(max_attempts=3, base_delay=0.05, max_delay=0.2,
                       budget=RetryBudgetConfig(ratio=0.5, min_retries_per_second=2))  # fmt: skip
    ai_retry = RetryConfig(
        max_attempts=3, base_delay=0.1, max_delay=1.0, max_retry_after=5.0,
        budget=RetryBudgetConfig(ratio=0.2, min_retries_per_second=1),
        by_kind={FailureKind.RATE_LIMITED: RetryOverride(max_attempts=4)},
    )  # fmt: skip
    retries = {
        "trading-quotes": fast,
        "trading-orders": dataclasses.replace(fast, max_attempts=4),
        "ai": ai_retry,
        "cache": dataclasses.replace(fast, max_attempts=2, base_delay=0.02),
        "orders-db": fast,
    }
    minimum_calls = {"trading-orders": 4, "ai": 4}  # the slower services judge sooner
    found = {
        name: Policy(service=name, breaker=breaker(name, minimum_calls.get(name, 10)), retry=retry)
        for name, retry in retries.items()
    }
    # An AI call the open breaker rejects falls back at once; only calls that used up their
    # retries are kept for later.
    only_exhausted = frozenset({DeadLetterReason.RETRIES_EXHAUSTED})
    found["ai"] = dataclasses.replace(found["ai"], dead_letter_on=only_exhausted)
    return found


# -- HTTP ------------------------------------------------------------------------------------------
def _client(
    stack: contextlib.AsyncExitStack, url: str, transport: AsyncResilientTransport
) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=transport, base_url=url)
    stack.push_async_callback(client.aclose)
    return client


def _replay_client(
    stack: contextlib.AsyncExitStack, policy: Policy, breaker: CircuitBreaker
) -> httpx.AsyncClient:
    """A client for replays: same breaker, no dead letters (a failed replay stays queued
    once), and no telemetry or observers of its own (the breaker is reported once)."""
    quiet = dataclasses.replace(policy, telemetry=False)
    return _client(stack, "", AsyncResilientTransport(policy=quiet, breaker=breaker))


def _resender(client: httpx.AsyncClient) -> Resend:
    """Send a dead-lettered request again, with the idempotency key its body carries."""

    async def resend(letter: DeadLetter) -> None:
        method, _, url = letter.operation.partition(" ")
        headers: dict[str, str] = {}
        if letter.payload:
            body = json.loads(letter.payload)
            key = body.get("client_order_id") or body.get("request_id")
            if key:
                headers["Idempotency-Key"] = str(key)
        response = await client.request(method, url, content=letter.payload, headers=headers)
        response.raise_for_status()

    return resend


def _operations(
    quotes: httpx.AsyncClient, orders: httpx.AsyncClient, ai: httpx.AsyncClient
) -> dict[str, tuple[Operation, int, float]]:
    """Each HTTP service's call, with its number of workers and pause between calls."""
    run = os.getpid()

    async def quote(n: int) -> object:
        return await quotes.get(f"/v2/quotes/{SYMBOLS[n % len(SYMBOLS)]}")

    async def order(n: int) -> object:
        key = f"demo-{run}-{n}"
        body = {"client_order_id": key, "symbol": SYMBOLS[n % len(SYMBOLS)], "qty": 1 + n % 5,
                "side": "buy" if n % 2 else "sell", "type": "market"}  # fmt: skip
        return await orders.post("/v2/orders", json=body, headers={"Idempotency-Key": key})

    async def complete(n: int) -> object:
        key = f"demo-{run}-ai-{n}"
        body = {"model": "demo-1", "request_id": key,
                "messages": [{"role": "user", "content": "Summarise today's market."}]}  # fmt: skip
        return await ai.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": key})

    return {
        "trading-quotes": (quote, 2, 0.05),
        "trading-orders": (order, 1, 0.1),
        "ai": (complete, 2, 0.2),  # expensive calls: fewer of them
    }


def http_services(
    stack: contextlib.AsyncExitStack,
    *,
    trading_url: str,
    ai_url: str,
    policy: dict[str, Policy],
    sinks: Sinks,
    order_letters: Letters,
) -> list[Service]:
    """The three HTTP services; orders' dead letters go to ``order_letters``."""
    queues: dict[str, Letters] = {
        "trading-quotes": InMemoryDeadLetterQueue(maxlen=5000),
        "trading-orders": order_letters,
        "ai": InMemoryDeadLetterQueue(maxlen=5000),
    }
    transports = {
        name: AsyncResilientTransport(
            policy=policy[name],
            dead_letters=queue,
            keep_payload=True,
            observers=sinks.observers,
            meter_provider=sinks.meter_provider,
        )
        for name, queue in queues.items()
    }
    clients = {
        name: _client(stack, ai_url if name == "ai" else trading_url, transport)
        for name, transport in transports.items()
    }
    operations = _operations(clients["trading-quotes"], clients["trading-orders"], clients["ai"])
    services = []
    for name, (operation, workers, pause) in operations.items():
        breaker = transports[name].breaker
        resend = _resender(_replay_client(stack, policy[name], breaker))
        services.append(Service(name, "http", operation, workers, pause, breaker, queues[name],
                                resend))  # fmt: skip
    return services


# -- Redis and PostgreSQL --------------------------------------------------------------------
def cache_service(
    side: RedisSide,
    policy: Policy,
    sinks: Sinks,
    timeline: Timeline | None = None,
    failover: Failover | None = None,
) -> Service:
    """Cache-aside quotes in Redis: reads, and a SET (marked idempotent) every third call; in
    the failover phase every other call is an RPUSH (not idempotent), counted."""
    from .._clients.redis.instrument import breaker_of, instrument

    cache = instrument(
        side.client, policy=policy, idempotent_commands={"SET"}, observers=sinks.observers,
        meter_provider=sinks.meter_provider,
    )  # fmt: skip

    tally = None if failover is None else failover.cache

    async def operation(n: int) -> object:
        key = f"{side.prefix}quote:{SYMBOLS[n % len(SYMBOLS)]}"
        if tally is not None and timeline is not None and timeline.phase() == FAILOVER:
            if n % 2 == 0:
                written = await cache.rpush(tally.key, str(n))
                tally.acked(str(n))
                return written
            return await cache.get(key)
        if n % 3 == 0:
            return await cache.set(key, json.dumps(QUOTES[SYMBOLS[n % len(SYMBOLS)]]), ex=300)
        return await cache.get(key)

    return Service("cache", "redis", operation, 1, 0.05, breaker_of(cache))


def db_service(
    side: PostgresSide,
    policy: Policy,
    sinks: Sinks,
    timeline: Timeline | None = None,
    failover: Failover | None = None,
) -> Service:
    """An orders repository in PostgreSQL: counts, and an idempotent insert every third call;
    in the failover phase every other call is a plain INSERT (not idempotent), counted."""
    from .._clients.postgres.client import wrap

    pool = wrap(side.pool, policy=policy, observers=sinks.observers,
                meter_provider=sinks.meter_provider)  # fmt: skip
    insert = (
        f"INSERT INTO {side.table} (client_order_id, symbol, qty) "  # noqa: S608 (our own name)
        "VALUES ($1, $2, $3) ON CONFLICT (client_order_id) DO NOTHING"
    )
    count = f"SELECT count(*) FROM {side.table}"  # noqa: S608 (our own table name)
    plain = f"INSERT INTO {side.table} (client_order_id, symbol, qty) VALUES ($1, $2, $3)"  # noqa: S608
    tally = None if failover is None else failover.orders

    async def operation(n: int) -> object:
        if tally is not None and timeline is not None and timeline.phase() == FAILOVER:
            if n % 2 == 0:
                order_id = f"{tally.key}{n}"
                written = await pool.execute(plain, order_id, SYMBOLS[n % len(SYMBOLS)], 1)
                tally.acked(order_id)
                return written
            return await pool.fetchval(count)
        if n % 3 == 0:
            symbol = SYMBOLS[n % len(SYMBOLS)]
            return await pool.execute(insert, f"fill-{n}", symbol, 1, idempotent=True)
        return await pool.fetchval(count)

    return Service("orders-db", "postgresql", operation, 1, 0.05, pool.breaker)


# -- running ---------------------------------------------------------------------------------
async def _work(service: Service, first: int, stop: asyncio.Event) -> None:
    """Call ``service`` in a loop until ``stop`` is set (or the task is cancelled: a client
    library may swallow a cancellation, the flag is what ends the loop for sure)."""
    n = first
    while not stop.is_set():
        with contextlib.suppress(Exception):  # failures are what the demo is about
            await service.operation(n)
        n += service.workers
        await asyncio.sleep(service.pause)


async def replay_pending(service: Service, recorder: Recorder, events: EventLog) -> None:
    """Replay ``service``'s dead letters through its breaker, if it has any pending."""
    queue, resend = service.dead_letters, service.resend
    if queue is None or resend is None or recorder.snapshot(service.name).pending <= 0:
        return
    try:
        result = await queue.areplay(resend)
    except Exception as exc:  # the store itself failed: say so, try again later
        events.add(f"{service.name}: replay failed ({type(exc).__name__}: {exc})")
        return
    recorder.replayed(service.name, result)
    events.add(f"{service.name}: replayed {result.succeeded} dead letters "
               f"({result.failed} failed again and stay queued)")  # fmt: skip


async def _replay(
    service: Service, timeline: Timeline, recorder: Recorder, events: EventLog, stop: asyncio.Event
) -> None:
    """In the recovery, whenever the breaker is closed, replay the service's dead letters."""
    while not stop.is_set():
        await asyncio.sleep(min(0.5, timeline.phase_length / 8))
        if timeline.phase() == RECOVERY and service.breaker.state is BreakerState.CLOSED:
            await replay_pending(service, recorder, events)


async def replay_leftovers(
    services: Sequence[Service], recorder: Recorder, events: EventLog
) -> None:
    """After the run, a last few passes for letters that came late or failed again (the
    upstreams stay healthy); a breaker still open is given its reset timeout first."""

    async def one(service: Service) -> None:
        # A few passes: a letter whose resend failed once (a slow upstream on a busy machine)
        # gets another chance once the breaker admits calls again.
        for _ in range(3):
            if service.breaker.state is BreakerState.OPEN:
                await asyncio.sleep(service.breaker.snapshot().retry_after + 0.01)
            await replay_pending(service, recorder, events)
            if recorder.snapshot(service.name).pending <= 0:
                return

    await asyncio.gather(*(one(service) for service in services))


def start(
    services: Sequence[Service],
    timeline: Timeline,
    recorder: Recorder,
    events: EventLog,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """Start every worker and replayer; they end once ``stop`` is set (see :func:`halt`)."""
    tasks = []
    for service in services:
        for worker in range(service.workers):
            tasks.append(asyncio.create_task(_work(service, worker, stop)))
        tasks.append(asyncio.create_task(_replay(service, timeline, recorder, events, stop)))
    return tasks


async def halt(tasks: Sequence[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Set ``stop``, cancel ``tasks`` and wait for them; a task whose cancellation a client
    library swallowed ends at its next loop turn, thanks to the flag."""
    stop.set()
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
