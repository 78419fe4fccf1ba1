"""The resilient redis-py shell (sync ``redis.Redis`` and ``redis.asyncio.Redis``) on real Redis.

Normal-path tests use the machine's Redis at 127.0.0.1:6379 under a random key prefix (their
keys are deleted afterwards; the shared server is never flushed). Fault tests start their own
``redis-server`` on a free port, which they may kill and restart, and put
:class:`~tests.support.faultproxy.FaultProxy` between the client and that server. Whether a
write was duplicated is always checked on the server itself, through a separate raw client.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from redis import exceptions as rex

from resilience_otel import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    Jitter,
    Policy,
    RetriesExhaustedError,
    RetryConfig,
    StateChange,
)
from resilience_otel.redis import breaker_of, idempotent, instrument
from tests.support.faultproxy import BLACKHOLE, LATENCY, PASS, RESET, FaultProxy
from tests.support.otel import Otel

from .redis_server import RedisServer

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SHARED_PORT = 6379
SERVICE = "cache"
EVENT_RETRY = "resilience.retry"
EVENT_ATTEMPT_FAILED = "resilience.attempt_failed"
CLIENT_TYPES = [
    pytest.param(redis.Redis, id="sync"),
    pytest.param(redis.asyncio.Redis, id="async"),
]
ClientType = type[redis.Redis] | type[redis.asyncio.Redis]


# -- helpers ---------------------------------------------------------------------------------
def fast_policy(
    *,
    max_attempts: int = 3,
    failure_threshold: int = 100,
    reset_timeout: float = 60.0,
    call_timeout: float | None = 2.0,
    max_delay: float = 0.2,
) -> Policy:
    """A policy with 10 ms doubling backoff, no jitter, no retry budget."""
    return Policy(
        service=SERVICE,
        breaker=BreakerConfig(
            failure_threshold=failure_threshold,
            monitoring_period=60.0,
            reset_timeout=reset_timeout,
            call_timeout=call_timeout,
        ),
        retry=RetryConfig(
            max_attempts=max_attempts,
            base_delay=0.01,
            max_delay=max_delay,
            multiplier=2.0,
            jitter=Jitter.NONE,
            budget=None,
        ),
    )


# Up to 7 retries 10, 20, 40, 80, 200, 200, 200 ms apart: rides out an outage of ~0.7 s.
PATIENT = {"max_attempts": 8}


def event_names(span: ReadableSpan) -> list[str]:
    """The names of ``span``'s events, in order."""
    return [event.name for event in span.events]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 5 ms; fail the test if it stays false for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)


async def await_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """:func:`wait_until` for a task: yields to the event loop while polling."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def later(delay: float, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` in a thread after ``delay`` s; the block's exit waits for it."""
    timer = threading.Timer(delay, action)
    timer.start()
    try:
        yield
    finally:
        timer.join()


@contextlib.contextmanager
def passing_after_a_refusal(proxy: FaultProxy) -> Iterator[None]:
    """Reset every connection now, refuse the next new one, then pass again.

    The client's first reconnect is certainly refused however slow the machine is (a fixed
    delay could let it through), so the call must retry to succeed.
    """
    refused = proxy.refused
    proxy.set_mode(RESET)

    def watch() -> None:
        deadline = time.monotonic() + 5.0
        while proxy.refused == refused and time.monotonic() < deadline:
            time.sleep(0.002)
        proxy.set_mode(PASS)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        watcher.join()


@contextlib.contextmanager
def reply_lost(proxy: FaultProxy, server: redis.Redis, key: str, applied: bytes) -> Iterator[None]:
    """Lose the reply to a command that reached the server.

    Replies are held back (proxy latency) until ``server`` shows ``key == applied``, i.e. the
    command was executed; then every proxied connection is reset and new ones pass again, so
    a resend would reach the server and be seen there.
    """
    proxy.set_mode(LATENCY, latency=0.4)
    finished = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 5.0
        while not finished.is_set() and time.monotonic() < deadline:
            if server.get(key) == applied:
                proxy.set_mode(RESET)
                proxy.set_mode(PASS)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()
        proxy.set_mode(PASS)


def sync_client(port: int, policy: Policy, **kwargs: Any) -> redis.Redis:
    """An instrumented sync client of 127.0.0.1:``port``."""
    options = {k: kwargs.pop(k) for k in ("socket_timeout",) if k in kwargs}
    return instrument(redis.Redis(host=HOST, port=port, **options), policy=policy, **kwargs)


def async_client(port: int, policy: Policy, **kwargs: Any) -> redis.asyncio.Redis:
    """An instrumented ``redis.asyncio`` client of 127.0.0.1:``port``."""
    return instrument(redis.asyncio.Redis(host=HOST, port=port), policy=policy, **kwargs)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def otel() -> Iterator[Otel]:
    """In-memory span and metric exporters for one test."""
    telemetry = Otel()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    """A raw (uninstrumented) client of the shared Redis, to check what the server holds."""
    with redis.Redis(host=HOST, port=SHARED_PORT) as client:
        yield client


@pytest.fixture
def prefix(shared: redis.Redis) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    value = f"resilience-otel-test:{uuid.uuid4().hex[:12]}:"
    yield value
    keys = list(shared.scan_iter(match=f"{value}*"))
    if keys:
        shared.delete(*keys)


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A test-owned redis-server on a free port; the test may stop and restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_raw(own_server: RedisServer) -> Iterator[redis.Redis]:
    """A raw client of the test-owned server, straight to it (no proxy, no shell)."""
    with redis.Redis(host=HOST, port=own_server.port) as client:
        yield client


@pytest.fixture
def proxy(own_server: RedisServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test-owned server, passing traffic."""
    with FaultProxy((HOST, own_server.port)) as fault_proxy:
        yield fault_proxy


# -- instrument() ----------------------------------------------------------------------------
@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_instrument_returns_the_client(client_type: ClientType) -> None:
    """instrument() guards the client in place and returns that same object."""
    client = client_type(host=HOST, port=SHARED_PORT)
    assert instrument(client, policy=fast_policy()) is client


@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_double_instrument_raises_value_error(client_type: ClientType) -> None:
    """Guarding a client twice is refused: retries and spans would stack."""
    client = instrument(client_type(host=HOST, port=SHARED_PORT), policy=fast_policy())
    with pytest.raises(ValueError, match="already instrumented"):
        instrument(client, policy=fast_policy())


@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_redis_py_retry_settings_are_left_as_configured(client_type: ClientType) -> None:
    """Our layer retries, yet the client's Retry is not replaced: it makes one try inside
    our attempts instead (see test_redis_wrapping), so other clients of the pool keep it."""
    client = client_type(host=HOST, port=SHARED_PORT)
    before = client.get_retry()
    instrument(client, policy=fast_policy())
    assert client.get_retry() is before
    assert before is not None
    assert before.get_retries() > 0


@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_keep_client_retry_leaves_redis_py_retry_alone(client_type: ClientType) -> None:
    """keep_client_retry=True keeps redis-py's Retry as configured."""
    client = client_type(host=HOST, port=SHARED_PORT)
    before = client.get_retry().get_retries()
    instrument(client, policy=fast_policy(max_attempts=1), keep_client_retry=True)
    assert client.get_retry().get_retries() == before > 0


@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_breaker_of_returns_the_breaker_in_use(client_type: ClientType) -> None:
    """breaker_of() returns the breaker that was passed in to guard the client."""
    policy = fast_policy()
    breaker = CircuitBreaker(policy.breaker, name=SERVICE)
    client = instrument(client_type(host=HOST, port=SHARED_PORT), policy=policy, breaker=breaker)
    assert breaker_of(client) is breaker


def test_breaker_of_an_unguarded_client_raises_value_error() -> None:
    """breaker_of() refuses a client that was never instrumented."""
    with pytest.raises(ValueError, match="not instrumented"):
        breaker_of(redis.Redis(host=HOST, port=SHARED_PORT))


# -- every wrapped path against real Redis -------------------------------------------------
def test_sync_plain_commands_work_with_one_span_each(prefix: str, otel: Otel) -> None:
    """get/set/incr/hset/hgetall/lpush/lrange/expire/delete/mget work, one span per command."""
    k = prefix
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        assert client.set(f"{k}s", "v") is True
        assert client.get(f"{k}s") == b"v"
        assert client.incr(f"{k}n") == 1
        assert client.hset(f"{k}h", mapping={"a": "1", "b": "2"}) == 2
        assert client.hgetall(f"{k}h") == {b"a": b"1", b"b": b"2"}
        assert client.lpush(f"{k}l", "x", "y") == 2
        assert client.lrange(f"{k}l", 0, -1) == [b"y", b"x"]
        assert client.expire(f"{k}s", 60) is True
        assert client.mget(f"{k}s", f"{k}n", f"{k}missing") == [b"v", b"1", None]
        assert client.delete(f"{k}s", f"{k}n") == 2
    names = [span.name for span in otel.spans()]
    assert names == [
        "SET", "GET", "INCRBY", "HSET", "HGETALL", "LPUSH", "LRANGE", "EXPIRE", "MGET", "DEL",
    ]  # fmt: skip


@pytest.mark.anyio
async def test_async_plain_commands_work_with_one_span_each(prefix: str, otel: Otel) -> None:
    """The same commands through redis.asyncio work, one span per command."""
    k = prefix
    async with async_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        assert await client.set(f"{k}s", "v") is True
        assert await client.get(f"{k}s") == b"v"
        assert await client.incr(f"{k}n") == 1
        assert await client.hset(f"{k}h", mapping={"a": "1"}) == 1
        assert await client.hgetall(f"{k}h") == {b"a": b"1"}
        assert await client.lpush(f"{k}l", "x", "y") == 2
        assert await client.lrange(f"{k}l", 0, -1) == [b"y", b"x"]
        assert await client.expire(f"{k}s", 60) is True
        assert await client.mget(f"{k}s", f"{k}missing") == [b"v", None]
        assert await client.delete(f"{k}s") == 1
    names = [span.name for span in otel.spans()]
    assert names == [
        "SET", "GET", "INCRBY", "HSET", "HGETALL", "LPUSH", "LRANGE", "EXPIRE", "MGET", "DEL",
    ]  # fmt: skip


def test_sync_execute_command_is_guarded(prefix: str, otel: Otel, shared: redis.Redis) -> None:
    """execute_command() called directly runs through the shell; lowercase names upper-cased."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        assert client.execute_command("set", f"{prefix}k", "v") is True
        assert client.execute_command("PING") is True
    assert shared.get(f"{prefix}k") == b"v"
    assert [span.name for span in otel.spans()] == ["SET", "PING"]


@pytest.mark.anyio
async def test_async_execute_command_is_guarded(prefix: str, otel: Otel) -> None:
    """execute_command() on redis.asyncio runs through the shell."""
    async with async_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        assert await client.execute_command("SET", f"{prefix}k", "v") is True
        assert await client.execute_command("get", f"{prefix}k") == b"v"
    assert [span.name for span in otel.spans()] == ["SET", "GET"]


@pytest.mark.parametrize(
    ("transaction", "operation"), [(True, "MULTI"), (False, "PIPELINE")], ids=["multi", "pipeline"]
)
def test_sync_pipeline_is_one_span_named_by_kind(
    prefix: str, otel: Otel, transaction: bool, operation: str
) -> None:
    """A pipeline returns every result and is one span: MULTI for a transaction, else PIPELINE."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        pipe = client.pipeline(transaction=transaction)
        pipe.set(f"{prefix}a", "1").incr(f"{prefix}a").get(f"{prefix}a")
        assert pipe.execute() == [True, 2, b"2"]
    (span,) = otel.spans()
    assert span.name == operation
    assert span.attributes is not None
    assert span.attributes["db.operation.name"] == operation
    assert span.attributes["db.operation.batch.size"] == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("transaction", "operation"), [(True, "MULTI"), (False, "PIPELINE")], ids=["multi", "pipeline"]
)
async def test_async_pipeline_as_context_manager(
    prefix: str, otel: Otel, transaction: bool, operation: str
) -> None:
    """``async with client.pipeline()`` returns every result and is one span."""
    async with (
        async_client(SHARED_PORT, fast_policy(), **otel.providers) as client,
        client.pipeline(transaction=transaction) as pipe,
    ):
        pipe.set(f"{prefix}a", "1").incr(f"{prefix}a").get(f"{prefix}a")
        assert await pipe.execute() == [True, 2, b"2"]
    (span,) = otel.spans()
    assert span.name == operation
    assert span.attributes is not None
    assert span.attributes["db.operation.batch.size"] == 3


def test_sync_transaction_retries_watch_error_in_redis_py_loop(
    prefix: str, otel: Otel, shared: redis.Redis
) -> None:
    """A WatchError is not ours to retry: it reaches redis-py's loop, which reruns the function."""
    key = f"{prefix}balance"
    shared.set(key, 10)
    calls = 0

    def add_five(pipe: Any) -> None:
        nonlocal calls
        calls += 1
        current = int(pipe.get(key))
        if calls == 1:
            shared.incr(key)  # a concurrent writer: EXEC must fail with WatchError
        pipe.multi()
        pipe.set(key, current + 5)

    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        assert client.transaction(add_five, key) == [True]
        assert breaker_of(client).snapshot().failures == 0
    assert calls == 2
    assert shared.get(key) == b"16"
    # WATCH and the GET made while watching are operations of their own (one attempt each)
    spans = otel.spans()
    assert [span.name for span in spans] == ["WATCH", "GET", "MULTI"] * 2
    first, second = spans[2], spans[5]
    assert first.attributes is not None
    assert first.attributes["error.type"] == "WatchError"
    assert EVENT_RETRY not in event_names(first)
    assert second.status.status_code is StatusCode.UNSET


@pytest.mark.anyio
async def test_async_transaction_retries_watch_error_in_redis_py_loop(
    prefix: str, otel: Otel, shared: redis.Redis
) -> None:
    """The async transaction helper also reruns after a WatchError and then completes."""
    key = f"{prefix}balance"
    shared.set(key, 10)
    calls = 0

    async def add_five(pipe: Any) -> None:
        nonlocal calls
        calls += 1
        current = int(await pipe.get(key))
        if calls == 1:
            shared.incr(key)
        pipe.multi()
        pipe.set(key, current + 5)

    async with async_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        assert await client.transaction(add_five, key) == [True]
        assert breaker_of(client).snapshot().failures == 0
    assert calls == 2
    assert shared.get(key) == b"16"
    # WATCH and the GET made while watching are operations of their own (one attempt each)
    assert [span.name for span in otel.spans()] == ["WATCH", "GET", "MULTI"] * 2


# -- spans -----------------------------------------------------------------------------------
def test_command_span_attributes(prefix: str, otel: Otel) -> None:
    """A command's span is a CLIENT span named after it with the DB semconv attributes."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.get(f"{prefix}k")
    (span,) = otel.spans()
    assert span.name == "GET"
    assert span.kind is SpanKind.CLIENT
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "resilience_otel"
    # Redis's default port is left out, as the semantic conventions ask.
    assert dict(span.attributes or {}) == {
        "db.system.name": "redis",
        "db.operation.name": "GET",
        "server.address": HOST,
        "db.namespace": "0",
        "resilience.service": SERVICE,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_command_span_names_a_port_other_than_the_default(
    own_server: RedisServer, otel: Otel
) -> None:
    """A server on another port than 6379 is told apart by ``server.port``."""
    with sync_client(own_server.port, fast_policy(), **otel.providers) as client:
        client.ping()
    (span,) = otel.spans()
    assert (span.attributes or {})["server.port"] == own_server.port


def test_command_lookup_stays_bounded(prefix: str, otel: Otel) -> None:
    """Command spellings are remembered up to a bound; beyond it commands still get their
    own operation name."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        for n in range(1100):
            # Distinct spellings of one command: redis-py sends "EXISTS {n}" as EXISTS with
            # one more key, and the operation is still EXISTS.
            name = f"EXISTS {prefix}{n}"
            assert client.execute_command(name.encode() if n % 2 else name, f"{prefix}k") == 0
        guard = client._resilience_guard  # type: ignore[attr-defined]
        assert len(guard.commands) == guard._MAX_NAMES
    assert {span.name for span in otel.spans()} == {"EXISTS"}


def test_command_arguments_never_reach_spans(prefix: str, otel: Otel) -> None:
    """Keys and values (a secret SET) appear in no span attribute or event."""
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    key = f"{prefix}token"
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.set(key, secret)
        client.get(key)
        client.pipeline().set(key, secret).get(key).execute()
        with pytest.raises(rex.ResponseError):
            client.lpush(key, secret)  # fails: the error is recorded, the arguments are not
    texts: list[str] = []
    for span in otel.spans():
        texts.extend(str(value) for value in (span.attributes or {}).values())
        for event in span.events:
            texts.extend(str(value) for value in (event.attributes or {}).values())
    assert len(otel.spans()) == 4
    assert texts
    assert not [text for text in texts if secret in text or "token" in text]


def test_failed_command_span_has_error_type_and_error_status(prefix: str, otel: Otel) -> None:
    """A failed command's span carries error.type, the error class and status ERROR."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.set(f"{prefix}s", "v")
        with pytest.raises(rex.ResponseError):
            client.lpush(f"{prefix}s", "x")
    span = otel.spans()[-1]
    assert span.name == "LPUSH"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ResponseError"
    assert span.attributes["resilience.error_class"] == "permanent"
    assert span.status.status_code is StatusCode.ERROR


def test_sync_one_span_per_command_with_contrib_instrumentation(prefix: str, otel: Otel) -> None:
    """With RedisInstrumentor enabled, each command still yields exactly one span: ours."""
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
            client.set(f"{prefix}k", "v")
            client.get(f"{prefix}k")
            client.pipeline().incr(f"{prefix}n").get(f"{prefix}n").execute()
    finally:
        instrumentor.uninstrument()
    spans = otel.spans()
    assert [span.name for span in spans] == ["SET", "GET", "MULTI"]
    assert {span.instrumentation_scope.name for span in spans if span.instrumentation_scope} == {
        "resilience_otel"
    }


@pytest.mark.anyio
async def test_async_one_span_per_command_with_contrib_instrumentation(
    prefix: str, otel: Otel
) -> None:
    """With RedisInstrumentor enabled, each async command still yields exactly one span."""
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        async with async_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
            await client.set(f"{prefix}k", "v")
            await client.get(f"{prefix}k")
            async with client.pipeline(transaction=False) as pipe:
                await pipe.incr(f"{prefix}n").get(f"{prefix}n").execute()
    finally:
        instrumentor.uninstrument()
    spans = otel.spans()
    assert [span.name for span in spans] == ["SET", "GET", "PIPELINE"]
    assert {span.instrumentation_scope.name for span in spans if span.instrumentation_scope} == {
        "resilience_otel"
    }


def test_contrib_instrumentation_alone_still_traces(prefix: str, otel: Otel) -> None:
    """Sanity check of the test above: RedisInstrumentor does trace an unguarded client."""
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        with redis.Redis(host=HOST, port=SHARED_PORT) as client:
            client.get(f"{prefix}k")
    finally:
        instrumentor.uninstrument()
    assert [span.name for span in otel.spans()] == ["GET"]


# -- metrics ---------------------------------------------------------------------------------
def test_calls_metric_is_labelled_client_redis(prefix: str, otel: Otel) -> None:
    """resilience.calls counts each command with client="redis" and its outcome."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.set(f"{prefix}k", "v")
        client.get(f"{prefix}k")
        client.get(f"{prefix}k")
    points = otel.points("resilience.calls")
    assert [(attributes, point.value) for attributes, point in points] == [
        ({"service": SERVICE, "client": "redis", "outcome": "success", "error_class": "none"}, 3)
    ]


def test_db_operation_duration_links_to_the_operation_span(prefix: str, otel: Otel) -> None:
    """The duration measurement is taken in the span's context: its exemplar names the span."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.get(f"{prefix}k")
    (span,) = otel.spans()
    [(_, point)] = otel.points("db.client.operation.duration")
    assert span.context is not None
    assert [(e.trace_id, e.span_id) for e in point.exemplars] == [
        (span.context.trace_id, span.context.span_id)
    ]


def test_db_operation_duration_metric_per_command(prefix: str, otel: Otel) -> None:
    """db.client.operation.duration records each command with DB and server attributes."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.get(f"{prefix}k")
        client.get(f"{prefix}k")
        client.set(f"{prefix}k", "v")
    by_operation = {
        attributes["db.operation.name"]: (attributes, point)
        for attributes, point in otel.points("db.client.operation.duration")
    }
    assert set(by_operation) == {"GET", "SET"}
    attributes, point = by_operation["GET"]
    assert point.count == 2
    assert attributes == {
        "db.system.name": "redis",
        "db.operation.name": "GET",
        "server.address": HOST,  # and no server.port: 6379 is Redis's default
    }


# -- classification in practice ------------------------------------------------------------
def test_sync_wrongtype_propagates_unretried_and_uncounted(prefix: str, otel: Otel) -> None:
    """WRONGTYPE is PERMANENT: the ResponseError propagates after one attempt, breaker unaware."""
    with sync_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        client.set(f"{prefix}s", "v")
        with pytest.raises(rex.ResponseError, match="WRONGTYPE") as caught:
            client.lpush(f"{prefix}s", "x")
        assert breaker_of(client).snapshot().failures == 0
    assert not isinstance(caught.value, RetriesExhaustedError)
    assert event_names(otel.spans()[-1]) == [EVENT_ATTEMPT_FAILED, "exception"]


@pytest.mark.anyio
async def test_async_wrongtype_propagates_unretried_and_uncounted(prefix: str, otel: Otel) -> None:
    """The async client treats WRONGTYPE the same way."""
    async with async_client(SHARED_PORT, fast_policy(), **otel.providers) as client:
        await client.set(f"{prefix}s", "v")
        with pytest.raises(rex.ResponseError, match="WRONGTYPE") as caught:
            await client.lpush(f"{prefix}s", "x")
        assert breaker_of(client).snapshot().failures == 0
    assert not isinstance(caught.value, RetriesExhaustedError)
    assert EVENT_RETRY not in event_names(otel.spans()[-1])


# -- faults: a server that goes away -----------------------------------------------------------
def _is_success(outcome: object) -> bool:
    return not isinstance(outcome, BaseException)


def _assert_outage_story(outcomes: list[object], changes: list[StateChange]) -> None:
    """What a client saw across kill and restart: retried, rejected, probed, closed, serving."""
    transitions = [(change.from_state, change.to_state) for change in changes]
    assert transitions[0] == (BreakerState.CLOSED, BreakerState.OPEN)
    assert (BreakerState.OPEN, BreakerState.HALF_OPEN) in transitions
    assert transitions[-1] == (BreakerState.HALF_OPEN, BreakerState.CLOSED)
    exhausted = [o for o in outcomes if isinstance(o, RetriesExhaustedError)]
    assert any(error.attempts > 1 for error in exhausted)  # the first failures were retried
    assert all(isinstance(error, rex.ConnectionError) for error in exhausted)
    rejected = [o for o in outcomes if isinstance(o, CircuitOpenError)]
    assert rejected
    assert all(isinstance(error, rex.ConnectionError) for error in rejected)
    assert all(_is_success(o) for o in outcomes[-3:])


@pytest.mark.slow
def test_sync_kill_and_restart_under_load(own_server: RedisServer) -> None:
    """A GET loop across a server crash: retries, breaker opens, probes, closes, serves again."""
    policy = fast_policy(failure_threshold=3, reset_timeout=0.2)
    outcomes: list[object] = []
    changes: list[StateChange] = []
    stop = threading.Event()
    with sync_client(own_server.port, policy, socket_timeout=1.0) as client:
        breaker = breaker_of(client)
        breaker.add_listener(changes.append)

        def load() -> None:
            while not stop.is_set():
                try:
                    outcomes.append(client.get("k"))
                except Exception as exc:
                    outcomes.append(exc)
                time.sleep(0.005)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            wait_until(lambda: len(outcomes) >= 5)
            own_server.kill()
            wait_until(lambda: any(isinstance(o, CircuitOpenError) for o in outcomes))
            wait_until(lambda: len(changes) >= 3)  # open, half-open, a failed probe: open again
            own_server.start()
            wait_until(lambda: breaker.state is BreakerState.CLOSED)
            seen = len(outcomes)
            wait_until(lambda: len(outcomes) >= seen + 3)
        finally:
            stop.set()
            worker.join()
    _assert_outage_story(outcomes, changes)


@pytest.mark.slow
@pytest.mark.anyio
async def test_async_kill_and_restart_under_load(own_server: RedisServer) -> None:
    """The same crash story for a task running GETs through redis.asyncio."""
    policy = fast_policy(failure_threshold=3, reset_timeout=0.2)
    outcomes: list[object] = []
    changes: list[StateChange] = []
    stop = asyncio.Event()
    async with async_client(own_server.port, policy) as client:
        breaker = breaker_of(client)
        breaker.add_listener(changes.append)

        async def load() -> None:
            while not stop.is_set():
                try:
                    outcomes.append(await client.get("k"))
                except Exception as exc:
                    outcomes.append(exc)
                await asyncio.sleep(0.005)

        worker = asyncio.create_task(load())
        try:
            await await_until(lambda: len(outcomes) >= 5)
            await asyncio.to_thread(own_server.kill)
            await await_until(lambda: any(isinstance(o, CircuitOpenError) for o in outcomes))
            await await_until(lambda: len(changes) >= 3)
            await asyncio.to_thread(own_server.start)
            await await_until(lambda: breaker.state is BreakerState.CLOSED)
            seen = len(outcomes)
            await await_until(lambda: len(outcomes) >= seen + 3)
        finally:
            stop.set()
            await worker
    _assert_outage_story(outcomes, changes)


def test_sync_short_outage_is_ridden_out_by_retries(own_server: RedisServer, otel: Otel) -> None:
    """A server back within the retry delays: the GET succeeds; one span holds the retries."""
    with sync_client(own_server.port, fast_policy(**PATIENT), **otel.providers) as client:
        client.set("k", "v")
        own_server.stop()
        with later(0.05, own_server.start):
            assert client.get("k") is None  # a fresh server: no persistence, but it answers
    span = otel.spans()[-1]
    assert span.name == "GET"
    failed = event_names(span).count(EVENT_ATTEMPT_FAILED)
    assert failed >= 1
    assert event_names(span).count(EVENT_RETRY) == failed
    assert span.status.status_code is StatusCode.UNSET


def test_sync_write_refused_by_a_stopped_server_is_retried(
    own_server: RedisServer, own_raw: redis.Redis
) -> None:
    """INCR on connection refused was never sent, so it is retried, and applied once."""
    with sync_client(own_server.port, fast_policy(**PATIENT)) as client:
        client.ping()
        own_server.stop()
        with later(0.05, own_server.start):
            assert client.incr("counter") == 1
    assert own_raw.get("counter") == b"1"


@pytest.mark.anyio
async def test_async_write_refused_by_a_stopped_server_is_retried(
    own_server: RedisServer, own_raw: redis.Redis
) -> None:
    """The async client also retries a write that was refused, and it is applied once."""
    async with async_client(own_server.port, fast_policy(**PATIENT)) as client:
        # No pooled connection yet: redis.asyncio (RESP3) does not notice a pooled connection
        # closed by the server and would write into it, so the INCR might have been sent.
        own_server.stop()
        with later(0.05, own_server.start):
            assert await client.incr("counter") == 1
    assert own_raw.get("counter") == b"1"


# -- faults: connection resets (FaultProxy) ----------------------------------------------------
def test_sync_write_whose_reply_was_lost_is_not_resent(
    proxy: FaultProxy, own_raw: redis.Redis, otel: Otel
) -> None:
    """INCR executed but its reply reset: the error surfaces, INCR is not sent again."""
    with sync_client(proxy.port, fast_policy(**PATIENT), **otel.providers) as client:
        client.ping()
        with reply_lost(proxy, own_raw, "counter", b"1"), pytest.raises(rex.ConnectionError):
            client.incr("counter")
        assert client.get("counter") == b"1"  # the client works again (and sees one INCR)
    assert own_raw.get("counter") == b"1"
    incr = next(span for span in otel.spans() if span.name == "INCRBY")
    assert EVENT_RETRY not in event_names(incr)


@pytest.mark.anyio
async def test_async_write_whose_reply_was_lost_is_not_resent(
    proxy: FaultProxy, own_raw: redis.Redis
) -> None:
    """The async client does not resend an INCR whose reply was lost either."""
    async with async_client(proxy.port, fast_policy(**PATIENT)) as client:
        await client.ping()
        with reply_lost(proxy, own_raw, "counter", b"1"), pytest.raises(rex.ConnectionError):
            await client.incr("counter")
    assert own_raw.get("counter") == b"1"


def test_sync_write_marked_idempotent_by_block_is_resent(
    proxy: FaultProxy, own_raw: redis.Redis
) -> None:
    """Inside ``with idempotent():`` the same lost reply makes the INCR go again (applied twice).

    This is also the control for the test above: the harness does see a resend.
    """
    with sync_client(proxy.port, fast_policy(**PATIENT)) as client:
        client.ping()
        with reply_lost(proxy, own_raw, "counter", b"1"), idempotent():
            assert client.incr("counter") == 2
    assert own_raw.get("counter") == b"2"


def test_sync_set_marked_idempotent_by_name_is_resent(
    proxy: FaultProxy, own_raw: redis.Redis, otel: Otel
) -> None:
    """With idempotent_commands={"SET"} a SET whose reply was lost is retried and succeeds."""
    policy = fast_policy(**PATIENT)
    with sync_client(proxy.port, policy, idempotent_commands={"SET"}, **otel.providers) as client:
        client.ping()
        with reply_lost(proxy, own_raw, "k", b"v"):
            assert client.set("k", "v") is True
    span = otel.spans()[-1]
    assert span.name == "SET"
    assert EVENT_RETRY in event_names(span)


@pytest.mark.anyio
async def test_async_set_marked_idempotent_by_block_is_resent(
    proxy: FaultProxy, own_raw: redis.Redis, otel: Otel
) -> None:
    """``with idempotent():`` also lets the async client resend a SET whose reply was lost."""
    async with async_client(proxy.port, fast_policy(**PATIENT), **otel.providers) as client:
        await client.ping()
        with reply_lost(proxy, own_raw, "k", b"v"), idempotent():
            assert await client.set("k", "v") is True
    assert EVENT_RETRY in event_names(otel.spans()[-1])


def test_sync_get_after_reset_is_retried_until_proxy_passes(
    proxy: FaultProxy, own_raw: redis.Redis, otel: Otel
) -> None:
    """GET through a resetting proxy is retried; it succeeds once the proxy passes again."""
    own_raw.set("k", "v")
    with sync_client(proxy.port, fast_policy(**PATIENT), **otel.providers) as client:
        client.ping()
        with passing_after_a_refusal(proxy):
            assert client.get("k") == b"v"
    (span,) = [span for span in otel.spans() if span.name == "GET"]
    assert event_names(span).count(EVENT_RETRY) >= 1
    assert event_names(span).count(EVENT_RETRY) == event_names(span).count(EVENT_ATTEMPT_FAILED)


@pytest.mark.anyio
async def test_async_get_after_reset_is_retried_until_proxy_passes(
    proxy: FaultProxy, own_raw: redis.Redis, otel: Otel
) -> None:
    """The async GET is retried through resets too, as one span."""
    own_raw.set("k", "v")
    async with async_client(proxy.port, fast_policy(**PATIENT), **otel.providers) as client:
        await client.ping()
        with passing_after_a_refusal(proxy):
            assert await client.get("k") == b"v"
    (span,) = [span for span in otel.spans() if span.name == "GET"]
    assert event_names(span).count(EVENT_RETRY) >= 1


def test_sync_pipeline_with_a_write_is_not_replayed(
    proxy: FaultProxy, own_raw: redis.Redis
) -> None:
    """A pipeline holding an INCR whose replies were lost is not sent again."""
    with sync_client(proxy.port, fast_policy(**PATIENT)) as client:
        client.ping()
        pipe = client.pipeline(transaction=False).incr("counter").get("other")
        with reply_lost(proxy, own_raw, "counter", b"1"), pytest.raises(rex.ConnectionError):
            pipe.execute()
    assert own_raw.get("counter") == b"1"


@pytest.mark.anyio
async def test_async_transaction_with_a_write_is_not_replayed(
    proxy: FaultProxy, own_raw: redis.Redis
) -> None:
    """A MULTI/EXEC holding an INCR whose reply was lost is not sent again (async)."""
    async with async_client(proxy.port, fast_policy(**PATIENT)) as client:
        await client.ping()
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("counter").get("counter")
            with reply_lost(proxy, own_raw, "counter", b"1"), pytest.raises(rex.ConnectionError):
                await pipe.execute()
    assert own_raw.get("counter") == b"1"


def test_sync_all_read_pipeline_is_replayed(
    proxy: FaultProxy, own_raw: redis.Redis, otel: Otel
) -> None:
    """A pipeline of reads only is replayed after a reset and returns every result."""
    own_raw.mset({"a": "1", "b": "2"})
    with sync_client(proxy.port, fast_policy(**PATIENT), **otel.providers) as client:
        client.ping()
        pipe = client.pipeline(transaction=False).get("a").get("b")
        with passing_after_a_refusal(proxy):
            assert pipe.execute() == [b"1", b"2"]
    span = otel.spans()[-1]
    assert span.name == "PIPELINE"
    assert EVENT_RETRY in event_names(span)


# -- faults: slow and silent servers (FaultProxy) -----------------------------------------------
def test_sync_latency_beyond_socket_timeout_times_out_and_is_retried(
    proxy: FaultProxy, otel: Otel
) -> None:
    """Replies slower than socket_timeout: GET times out, is retried, and every attempt counts."""
    policy = fast_policy(max_attempts=2)
    with sync_client(proxy.port, policy, socket_timeout=0.1, **otel.providers) as client:
        client.ping()
        proxy.set_mode(LATENCY, latency=0.3)
        with pytest.raises(rex.TimeoutError) as caught:
            client.get("k")
        assert breaker_of(client).snapshot().failures == 2
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 2
    retries = otel.points("resilience.retries")
    assert [(a["reason"], p.value) for a, p in retries] == [("timeout", 1)]


@pytest.mark.anyio
async def test_async_latency_beyond_call_timeout_is_cancelled_and_retried(
    proxy: FaultProxy, otel: Otel
) -> None:
    """Replies slower than call_timeout: asyncio.timeout cancels, GET is retried, both count."""
    policy = fast_policy(max_attempts=2, call_timeout=0.3)
    async with async_client(proxy.port, policy, **otel.providers) as client:
        await client.ping()
        # Counted from here: on a loaded machine even the warm-up ping may be slow.
        failures_before = breaker_of(client).snapshot().failures
        retries_before = sum(p.value for _, p in otel.points("resilience.retries"))
        proxy.set_mode(LATENCY, latency=0.8)
        with pytest.raises(TimeoutError) as caught:
            await client.get("k")
        assert breaker_of(client).snapshot().failures - failures_before == 2
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 2
    retries = otel.points("resilience.retries")
    assert {a["reason"] for a, _ in retries} == {"timeout"}
    assert sum(p.value for _, p in retries) - retries_before == 1


def test_sync_write_timing_out_is_not_retried(proxy: FaultProxy, own_raw: redis.Redis) -> None:
    """An INCR that timed out may have been applied: one attempt only, never resent."""
    with sync_client(proxy.port, fast_policy(max_attempts=3), socket_timeout=0.1) as client:
        client.ping()
        proxy.set_mode(LATENCY, latency=0.3)
        with pytest.raises(rex.TimeoutError) as caught:
            client.incr("counter")
        assert breaker_of(client).snapshot().failures == 1
        assert not isinstance(caught.value, RetriesExhaustedError)
        proxy.set_mode(PASS)
        wait_until(lambda: own_raw.get("counter") is not None)  # the late INCR lands...
        time.sleep(0.1)  # ...and no second one follows it
    assert own_raw.get("counter") == b"1"


def test_sync_blackhole_times_out_and_opens_the_breaker(proxy: FaultProxy) -> None:
    """A silent server: GETs time out until the breaker opens, then calls are rejected at once."""
    policy = fast_policy(max_attempts=3, failure_threshold=2)
    with sync_client(proxy.port, policy, socket_timeout=0.1) as client:
        client.ping()
        proxy.set_mode(BLACKHOLE)
        with pytest.raises(rex.TimeoutError):
            client.get("k")
        assert breaker_of(client).state is BreakerState.OPEN
        started = time.monotonic()
        with pytest.raises(rex.ConnectionError) as caught:
            client.get("k")
        assert time.monotonic() - started < 0.05
    assert isinstance(caught.value, CircuitOpenError)
    assert caught.value.service == SERVICE


@pytest.mark.anyio
async def test_async_blackhole_times_out_and_opens_the_breaker(proxy: FaultProxy) -> None:
    """A silent server and redis.asyncio: call_timeout cancels until the breaker opens."""
    policy = fast_policy(max_attempts=3, failure_threshold=2, call_timeout=0.1)
    async with async_client(proxy.port, policy) as client:
        await client.ping()
        proxy.set_mode(BLACKHOLE)
        with pytest.raises(TimeoutError):
            await client.get("k")
        assert breaker_of(client).state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError) as caught:
            await client.get("k")
    assert isinstance(caught.value, rex.ConnectionError)
