"""The health monitor against real servers: a passive feed through a real transport, active
checks (HTTP, Redis, PostgreSQL, callables), background scheduling, and the endpoints over
real HTTP and as an ASGI app."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio
from opentelemetry.metrics import NoOpMeterProvider
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience_otel import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    HealthConfig,
    HealthMonitor,
    Policy,
    ResilientTransport,
    RetryConfig,
)
from resilience_otel.asyncpg import wrap
from resilience_otel.health import (
    health_app,
    http_check,
    postgres_check,
    redis_check,
    serve_health,
)
from resilience_otel.prometheus import PrometheusSetup, setup_prometheus
from resilience_otel.testing import FakeClock

from .faultserver import FaultServer, hang

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_PORT = 6379


@pytest.fixture
def monitor() -> Iterator[HealthMonitor]:
    """A monitor with default thresholds whose gauges go nowhere; stopped afterwards."""
    health = HealthMonitor(HealthConfig(), meter_provider=NoOpMeterProvider())
    yield health
    health.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- passive feed through a real transport ---------------------------------------------------------
PASSIVE = HealthConfig(window=0.5, window_buckets=5, minimum_calls=5)


def passive_policy() -> Policy:
    """One attempt per call; the breaker opens after 3 failures and half-opens after 0.2 s."""
    return Policy(
        service="faults",
        breaker=BreakerConfig(failure_threshold=3, reset_timeout=0.2, call_timeout=1.0),
        retry=RetryConfig(max_attempts=1, budget=None),
    )


def open_the_breaker(client: httpx.Client) -> None:
    """Send calls to a failing upstream until the breaker rejects one."""
    for _ in range(3):
        assert client.get("/quotes").status_code == 503
    with pytest.raises(CircuitOpenError):
        client.get("/quotes")


def test_failing_upstream_makes_service_unhealthy(fault_server: FaultServer) -> None:
    """503s through a ResilientTransport open the breaker: the service reads unhealthy."""
    monitor = HealthMonitor(PASSIVE, meter_provider=NoOpMeterProvider())
    fault_server.set_default("503")
    transport = ResilientTransport(policy=passive_policy(), observers=[monitor])
    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        open_the_breaker(client)
    health = monitor.status("faults")
    assert (health.status, health.breaker_state, health.error_rate) == (
        "unhealthy",
        "open",
        1.0,
    )
    assert "circuit breaker open" in health.reasons


def test_recovered_upstream_makes_service_healthy_again(fault_server: FaultServer) -> None:
    """After the upstream recovers, a probe closes the breaker and the failures age out."""
    monitor = HealthMonitor(PASSIVE, meter_provider=NoOpMeterProvider())
    fault_server.set_default("503")
    transport = ResilientTransport(policy=passive_policy(), observers=[monitor])
    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        open_the_breaker(client)
        fault_server.set_default("200")
        time.sleep(PASSIVE.window + 0.05)  # past the reset timeout and the health window
        for _ in range(5):
            assert client.get("/quotes").status_code == 200
    health = monitor.status("faults")
    assert (health.status, health.breaker_state, health.availability) == (
        "healthy",
        "closed",
        1.0,
    )


def test_passive_feed_measures_response_time(fault_server: FaultServer) -> None:
    """Calls answered after 0.05 s give a p50 of at least 0.05 s."""
    monitor = HealthMonitor(PASSIVE, meter_provider=NoOpMeterProvider())
    fault_server.set_default("slow:0.05")
    transport = ResilientTransport(policy=passive_policy(), observers=[monitor])
    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        for _ in range(3):
            client.get("/quotes")
    p50 = monitor.status("faults").response_time.p50
    assert p50 is not None
    assert 0.05 <= p50 < 0.5


def test_passive_feed_counts_client_errors_as_available(fault_server: FaultServer) -> None:
    """Real 404s (PERMANENT) keep availability at 1: the upstream answered."""
    monitor = HealthMonitor(PASSIVE, meter_provider=NoOpMeterProvider())
    fault_server.set_default("404")
    transport = ResilientTransport(policy=passive_policy(), observers=[monitor])
    with httpx.Client(transport=transport, base_url=fault_server.base_url) as client:
        for _ in range(6):
            assert client.get("/missing").status_code == 404
    health = monitor.status("faults")
    assert (health.status, health.availability) == ("healthy", 1.0)


# -- active checks ---------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_http_check_passes_on_200(monitor: HealthMonitor, fault_server: FaultServer) -> None:
    """A 200 from the health URL passes and marks the service checked."""
    monitor.add_check("quotes", http_check(fault_server.url("/health")))
    assert await monitor.run_checks() == {"quotes": True}
    health = monitor.status("quotes")
    assert (health.status, health.consecutive_failures) == ("healthy", 0)
    assert health.last_checked is not None
    assert abs(health.last_checked - time.time()) < 5


@pytest.mark.anyio
async def test_http_check_fails_on_503(monitor: HealthMonitor, fault_server: FaultServer) -> None:
    """A 503 fails the check and degrades the service."""
    fault_server.set_default("503")
    monitor.add_check("quotes", http_check(fault_server.url("/health")))
    assert await monitor.run_checks() == {"quotes": False}
    health = monitor.status("quotes")
    assert (health.status, health.consecutive_failures) == ("degraded", 1)


async def loop_stall(work: Awaitable[object]) -> float:
    """The longest gap seen by a task ticking every 5 ms while ``work`` runs, seconds."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        await work
        await asyncio.sleep(0.02)
    finally:
        task.cancel()
    return max(gaps)


@pytest.mark.anyio
async def test_http_check_does_not_stall_the_loop(
    monitor: HealthMonitor, fault_server: FaultServer
) -> None:
    """Running an HTTP check leaves the loop responsive (best of three runs: < 40 ms stall)."""
    monitor.add_check("quotes", http_check(fault_server.url("/health")))
    stalls = [await loop_stall(monitor.run_checks()) for _ in range(3)]
    assert min(stalls) < 0.04, stalls


@pytest.mark.anyio
async def test_http_check_accepts_expected_statuses(
    monitor: HealthMonitor, fault_server: FaultServer
) -> None:
    """``expect`` decides which statuses pass."""
    fault_server.set_default("503")
    monitor.add_check("quotes", http_check(fault_server.url("/health"), expect={503}))
    assert await monitor.run_checks() == {"quotes": True}


@pytest.mark.anyio
async def test_http_check_on_hanging_server_fails_within_timeout(
    monitor: HealthMonitor, fault_server: FaultServer
) -> None:
    """A response that never comes fails the check once its timeout (0.2 s) passes."""
    fault_server.set_default(hang())
    monitor.add_check("quotes", http_check(fault_server.url("/health")), timeout=0.2)
    started = time.monotonic()
    assert await monitor.run_checks() == {"quotes": False}
    assert 0.2 <= time.monotonic() - started < 0.6  # httpx alone would wait 5 s
    assert monitor.status("quotes").consecutive_failures == 1


@pytest.mark.anyio
async def test_http_check_fails_when_connection_refused(
    monitor: HealthMonitor, closed_port: int
) -> None:
    """Nothing listening fails the check."""
    monitor.add_check("quotes", http_check(f"http://127.0.0.1:{closed_port}/health"))
    assert await monitor.run_checks() == {"quotes": False}


@pytest.mark.anyio
async def test_redis_check_sync_client_passes(monitor: HealthMonitor) -> None:
    """PING through a sync redis.Redis client passes."""
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    try:
        monitor.add_check("cache", redis_check(client))
        assert await monitor.run_checks() == {"cache": True}
    finally:
        client.close()


@pytest.mark.anyio
async def test_redis_check_async_client_passes(monitor: HealthMonitor) -> None:
    """PING through a redis.asyncio client passes."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=REDIS_PORT)
    try:
        monitor.add_check("cache", redis_check(client))
        assert await monitor.run_checks() == {"cache": True}
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_redis_check_sync_client_fails_on_closed_port(
    monitor: HealthMonitor, closed_port: int
) -> None:
    """A sync client whose server is down fails the check."""
    client = redis.Redis(host="127.0.0.1", port=closed_port, retry=Retry(NoBackoff(), 0))
    try:
        monitor.add_check("cache", redis_check(client))
        assert await monitor.run_checks() == {"cache": False}
    finally:
        client.close()


@pytest.mark.anyio
async def test_redis_check_async_client_fails_on_closed_port(
    monitor: HealthMonitor, closed_port: int
) -> None:
    """An async client whose server is down fails the check (the PING is awaited)."""
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=closed_port, retry=AsyncRetry(NoBackoff(), 0)
    )
    try:
        monitor.add_check("cache", redis_check(client))
        assert await monitor.run_checks() == {"cache": False}
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_postgres_check_with_dsn_passes(monitor: HealthMonitor) -> None:
    """SELECT 1 over a fresh connection from a DSN passes."""
    monitor.add_check("db", postgres_check(DSN))
    assert await monitor.run_checks() == {"db": True}


@pytest.mark.anyio
async def test_postgres_check_with_pool_passes(monitor: HealthMonitor) -> None:
    """SELECT 1 on an asyncpg pool passes."""
    async with asyncpg.create_pool(DSN, min_size=1, max_size=1) as pool:
        monitor.add_check("db", postgres_check(pool))
        assert await monitor.run_checks() == {"db": True}


@pytest.mark.anyio
async def test_postgres_check_with_wrapped_pool_passes(monitor: HealthMonitor) -> None:
    """SELECT 1 on a resilient (wrapped) pool passes."""
    async with asyncpg.create_pool(DSN, min_size=1, max_size=1) as pool:
        resilient = wrap(pool, policy=Policy(service="db", telemetry=False))
        monitor.add_check("db", postgres_check(resilient))
        assert await monitor.run_checks() == {"db": True}


@pytest.mark.anyio
async def test_postgres_check_with_dsn_fails_on_closed_port(
    monitor: HealthMonitor, closed_port: int
) -> None:
    """A DSN pointing at a closed port fails the check."""
    monitor.add_check("db", postgres_check(f"postgresql://postgres@127.0.0.1:{closed_port}/test"))
    assert await monitor.run_checks() == {"db": False}


@pytest.mark.anyio
async def test_postgres_check_with_pool_fails_on_closed_port(
    monitor: HealthMonitor, closed_port: int
) -> None:
    """A pool whose server is down fails the check."""
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port}/test"
    async with asyncpg.create_pool(dsn, min_size=0, max_size=1) as pool:
        monitor.add_check("db", postgres_check(pool))
        assert await monitor.run_checks() == {"db": False}


async def _async_true() -> bool:
    return True


async def _async_false() -> bool:
    return False


async def _async_slow() -> None:
    await asyncio.sleep(5.0)


def _raises() -> None:
    raise RuntimeError("upstream said no")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (lambda: True, True),
        (lambda: None, True),  # anything but False passes
        (lambda: "ok", True),
        (lambda: False, False),
        (_raises, False),
        (_async_true, True),
        (_async_false, False),
    ],
    ids=["sync-true", "sync-none", "sync-str", "sync-false", "sync-raises", "async", "async-false"],
)
async def test_callable_check_result(
    monitor: HealthMonitor, check: Callable[[], object], expected: bool
) -> None:
    """A callable passes unless it returns False or raises."""
    monitor.add_check("svc", check)
    assert await monitor.run_checks() == {"svc": expected}


@pytest.mark.anyio
async def test_async_check_past_timeout_fails_within_timeout(monitor: HealthMonitor) -> None:
    """An async check still running at its timeout is cancelled and fails."""
    monitor.add_check("svc", _async_slow, timeout=0.1)
    started = time.monotonic()
    assert await monitor.run_checks() == {"svc": False}
    assert time.monotonic() - started < 0.4


@pytest.mark.anyio
async def test_sync_check_past_timeout_does_not_block_the_loop(monitor: HealthMonitor) -> None:
    """A sync check sleeping 0.5 s fails at its 0.1 s timeout; a 10 ms ticker keeps ticking."""
    monitor.add_check("svc", lambda: time.sleep(0.5), timeout=0.1)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        result = await monitor.run_checks()
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    assert result == {"svc": False}
    assert elapsed < 0.4
    assert len(gaps) >= 5
    assert max(gaps) < 0.2  # a blocked loop would show one gap of 0.5 s


@pytest.mark.anyio
async def test_checks_of_one_service_all_must_pass(monitor: HealthMonitor) -> None:
    """Two checks of one service: one failing fails the service."""
    monitor.add_check("svc", _async_true)
    monitor.add_check("svc", _async_false)
    monitor.add_check("other", _async_true)
    assert await monitor.run_checks() == {"svc": False, "other": True}


# -- background scheduling -------------------------------------------------------------------------
class Counter:
    """A check that records when it ran."""

    def __init__(self, result: bool = True) -> None:
        self.result = result
        self.runs: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            self.runs.append(time.monotonic())
        return self.result


def assert_ran_on_interval(runs: list[float], seconds: float, interval: float) -> None:
    """About ``seconds / interval`` runs, never two closer than the interval."""
    assert seconds / interval - 2 <= len(runs) <= seconds / interval + 1, runs
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert min(gaps) >= interval * 0.9, gaps


def test_start_runs_checks_on_their_interval(monitor: HealthMonitor) -> None:
    """start(): a check with interval=0.1 runs about every 0.1 s in the background."""
    check = Counter()
    monitor.add_check("svc", check, interval=0.1)
    monitor.start()
    time.sleep(0.55)
    monitor.stop()
    assert_ran_on_interval(check.runs, 0.55, 0.1)


def test_start_uses_config_check_interval_by_default() -> None:
    """start(): without interval=, HealthConfig.check_interval (0.1 s) applies."""
    monitor = HealthMonitor(HealthConfig(check_interval=0.1), meter_provider=NoOpMeterProvider())
    check = Counter()
    monitor.add_check("svc", check)
    monitor.start()
    try:
        time.sleep(0.55)
    finally:
        monitor.stop()
    assert_ran_on_interval(check.runs, 0.55, 0.1)


def test_stop_stops_background_checks(monitor: HealthMonitor) -> None:
    """After stop() returns no further check runs."""
    check = Counter()
    monitor.add_check("svc", check, interval=0.1)
    monitor.start()
    time.sleep(0.25)
    monitor.stop()
    ran = len(check.runs)
    time.sleep(0.3)
    assert ran >= 1
    assert len(check.runs) == ran


def test_background_failures_make_service_unhealthy(monitor: HealthMonitor) -> None:
    """Three failing runs in a row make the service unhealthy."""
    check = Counter(result=False)
    monitor.add_check("svc", check, interval=0.1)
    monitor.start()
    deadline = time.monotonic() + 2.0
    while monitor.status("svc").status != "unhealthy" and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.stop()
    health = monitor.status("svc")
    assert health.status == "unhealthy"
    assert health.consecutive_failures >= 3


def test_one_callable_checks_two_services(monitor: HealthMonitor) -> None:
    """The same callable added for two services is run for each of them."""
    check = Counter()
    monitor.add_check("a", check, interval=0.1)
    monitor.add_check("b", check, interval=0.1)
    monitor.start()
    time.sleep(0.35)
    monitor.stop()
    assert monitor.status("a").last_checked is not None
    assert monitor.status("b").last_checked is not None


@pytest.mark.anyio
async def test_astart_runs_checks_on_their_interval(monitor: HealthMonitor) -> None:
    """astart(): the checks run as a task of the running loop, every 0.1 s."""
    check = Counter()
    monitor.add_check("svc", check, interval=0.1)
    await monitor.astart()
    await asyncio.sleep(0.55)
    monitor.stop()
    assert_ran_on_interval(check.runs, 0.55, 0.1)


@pytest.mark.anyio
async def test_astart_stop_stops_the_task(monitor: HealthMonitor) -> None:
    """After stop() the task runs no more checks."""
    check = Counter()
    monitor.add_check("svc", check, interval=0.1)
    await monitor.astart()
    await asyncio.sleep(0.25)
    monitor.stop()
    await asyncio.sleep(0)  # let the cancellation land
    ran = len(check.runs)
    await asyncio.sleep(0.3)
    assert ran >= 1
    assert len(check.runs) == ran


# -- endpoints -------------------------------------------------------------------------------------
SERVICE_KEYS = {
    "service",
    "status",
    "score",
    "availability",
    "error_rate",
    "response_time",
    "breaker_state",
    "consecutive_failures",
    "last_checked",
    "reasons",
}
BREAKER_KEYS = {
    "name",
    "state",
    "calls",
    "failures",
    "slow_calls",
    "half_open_in_flight",
    "retry_after",
}
STATUSES = {"healthy", "degraded", "unhealthy"}


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        assert self.content_type == "application/json"
        return json.loads(self.body)


Get = Callable[[str], Awaitable[Answer]]


@dataclass
class Site:
    """A monitor on a fake clock, a breaker it watches, and a way to GET its routes."""

    monitor: HealthMonitor
    clock: FakeClock
    breaker: CircuitBreaker
    prom: PrometheusSetup
    get: Get

    def feed(self, service: str, *, ok: int = 0, failed: int = 0) -> None:
        """Report calls of ``service``."""
        for _ in range(ok):
            self.monitor.call_finished(service, "http", "success", None, 1, 0.02)
        for _ in range(failed):
            self.monitor.call_finished(service, "http", "failure", None, 1, 0.02)

    def trip(self) -> None:
        """Open the watched breaker with one failure."""
        now = self.clock.monotonic()
        self.breaker.record(self.breaker.acquire(now), failure=True, duration=0.01, now=now)


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def call_asgi(
    app: Callable[..., Awaitable[None]], scope: dict[str, Any], messages: list[dict[str, Any]]
) -> list[MutableMapping[str, Any]]:
    """Run ``app`` on ``scope``, feeding ``messages`` to receive(); returns what it sent."""
    pending = list(messages)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # nothing more will come (like a real server)
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 2.0)
    return sent


def http_scope(path: str, method: str = "GET") -> dict[str, Any]:
    """A minimal ASGI HTTP scope."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.split("?", 1)[0],
        "raw_path": path.encode(),
        "query_string": path.partition("?")[2].encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 12345),
        "server": ("127.0.0.1", 80),
    }


def asgi_answer(sent: list[MutableMapping[str, Any]]) -> tuple[Answer, dict[bytes, bytes]]:
    """The answer and headers an ASGI app sent."""
    start, body = sent
    assert (start["type"], body["type"]) == ("http.response.start", "http.response.body")
    headers = dict(start["headers"])
    return Answer(start["status"], headers[b"content-type"].decode(), body["body"]), headers


class Switch:
    """Forwards attribute reads to ``target``, so one server can serve each test's objects."""

    def __init__(self) -> None:
        self.target: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@dataclass
class Served:
    """One standalone health server for the module, serving whatever the switches point at."""

    monitor: Switch
    registry: Switch
    port: int


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """serve_health on a free port (stopping it takes up to 0.5 s, so once per module)."""
    monitor, registry = Switch(), Switch()
    server = serve_health(monitor, port=0, registry=registry)  # type: ignore[arg-type]
    try:
        yield Served(monitor, registry, server.port)
    finally:
        server.shutdown()


@pytest.fixture(params=["server", "asgi"])
async def site(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    """The routes served by serve_health over real HTTP, or by health_app called directly."""
    clock = FakeClock()
    prom = setup_prometheus(set_global=False)
    monitor = HealthMonitor(
        HealthConfig(window=60.0, window_buckets=6),
        clock=clock,
        meter_provider=prom.meter_provider,
    )
    cb = CircuitBreaker(
        BreakerConfig(failure_threshold=1, reset_timeout=30.0), name="quotes", clock=clock
    )
    monitor.breaker_added("quotes", cb)
    if request.param == "server":
        served: Served = request.getfixturevalue("served")
        served.monitor.target, served.registry.target = monitor, prom.registry
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}")

        async def get_http(path: str) -> Answer:
            response = await client.get(path)
            return Answer(response.status_code, response.headers["content-type"], response.content)

        try:
            yield Site(monitor, clock, cb, prom, get_http)
        finally:
            await client.aclose()
            served.monitor.target = served.registry.target = None
            prom.shutdown()
    else:
        app = health_app(monitor, registry=prom.registry)

        async def get_asgi(path: str) -> Answer:
            sent = await call_asgi(app, http_scope(path), [{"type": "http.request"}])
            return asgi_answer(sent)[0]

        try:
            yield Site(monitor, clock, cb, prom, get_asgi)
        finally:
            prom.shutdown()


def assert_service_schema(data: Any) -> None:
    """One service's JSON: exactly the documented keys, with their types."""
    assert set(data) == SERVICE_KEYS
    assert isinstance(data["service"], str)
    assert data["status"] in STATUSES
    for key in ("score", "availability", "error_rate"):
        assert isinstance(data[key], float), key
        assert 0.0 <= data[key] <= 1.0, key
    assert set(data["response_time"]) == {"p50", "p95"}
    for value in data["response_time"].values():
        assert value is None or isinstance(value, float)
    assert data["breaker_state"] is None or isinstance(data["breaker_state"], str)
    assert type(data["consecutive_failures"]) is int
    assert data["last_checked"] is None or isinstance(data["last_checked"], float)
    assert isinstance(data["reasons"], list)
    assert all(isinstance(reason, str) for reason in data["reasons"])


@pytest.mark.anyio
async def test_health_reports_every_service_in_the_documented_shape(site: Site) -> None:
    """/health: exactly {status, services}, each service in the documented shape."""
    site.feed("quotes", ok=20)
    site.monitor.record_check("cache", ok=True)
    answer = await site.get("/health")
    data = answer.json()
    assert set(data) == {"status", "services"}
    assert data["status"] in STATUSES
    assert isinstance(data["services"], list)
    assert [s["service"] for s in data["services"]] == ["cache", "quotes"]
    for service in data["services"]:
        assert_service_schema(service)
    quotes = data["services"][1]
    assert quotes["response_time"]["p50"] is not None
    assert (quotes["breaker_state"], data["services"][0]["last_checked"]) == (
        "closed",
        site.clock.time(),
    )


@pytest.mark.anyio
async def test_health_is_200_when_healthy(site: Site) -> None:
    """/health answers 200 with status healthy."""
    site.feed("quotes", ok=20)
    answer = await site.get("/health")
    assert (answer.status, answer.json()["status"]) == (200, "healthy")


@pytest.mark.anyio
async def test_health_is_200_when_degraded(site: Site) -> None:
    """/health answers 200 while degraded."""
    site.feed("quotes", ok=98, failed=2)
    answer = await site.get("/health")
    assert (answer.status, answer.json()["status"]) == (200, "degraded")


@pytest.mark.anyio
async def test_health_is_503_when_unhealthy(site: Site) -> None:
    """/health answers 503 once a critical service is unhealthy."""
    site.feed("quotes", ok=20)
    site.trip()
    answer = await site.get("/health")
    assert (answer.status, answer.json()["status"]) == (503, "unhealthy")


@pytest.mark.anyio
async def test_health_of_one_service(site: Site) -> None:
    """/health/{service}: 200 and that service's document."""
    site.feed("quotes", ok=99, failed=1)
    answer = await site.get("/health/quotes")
    data = answer.json()
    assert answer.status == 200
    assert_service_schema(data)
    assert (data["service"], data["error_rate"], data["availability"]) == ("quotes", 0.01, 0.99)


@pytest.mark.anyio
async def test_health_of_unhealthy_service_is_503(site: Site) -> None:
    """/health/{service} answers 503 for an unhealthy service."""
    site.trip()
    answer = await site.get("/health/quotes")
    assert (answer.status, answer.json()["reasons"]) == (503, ["circuit breaker open"])


@pytest.mark.anyio
async def test_health_of_unknown_service_is_404(site: Site) -> None:
    """/health/{service} answers 404 for a service never seen, and does not invent it."""
    answer = await site.get("/health/nope")
    assert (answer.status, answer.json()) == (404, {"error": "unknown service", "service": "nope"})
    assert site.monitor.services() == ["quotes"]


@pytest.mark.anyio
async def test_breakers_lists_every_breaker_in_the_documented_shape(site: Site) -> None:
    """/breakers: {breakers: [...]} with exactly the documented fields and types."""
    site.trip()
    site.clock.advance(10.0)
    answer = await site.get("/breakers")
    data = answer.json()
    assert answer.status == 200
    assert set(data) == {"breakers"}
    (item,) = data["breakers"]
    assert set(item) == BREAKER_KEYS
    assert isinstance(item["name"], str)
    assert isinstance(item["state"], str)
    for key in ("calls", "failures", "slow_calls", "half_open_in_flight"):
        assert type(item[key]) is int, key
    assert isinstance(item["retry_after"], float)
    assert item == {
        "name": "quotes",
        "state": "open",
        "calls": 1,
        "failures": 1,
        "slow_calls": 0,
        "half_open_in_flight": 0,
        "retry_after": 20.0,
    }


@pytest.mark.anyio
async def test_livez_is_200_even_when_unhealthy(site: Site) -> None:
    """/livez answers 200 regardless of upstream health."""
    site.trip()
    answer = await site.get("/livez")
    assert (answer.status, answer.json()) == (200, {"status": "alive"})


@pytest.mark.anyio
async def test_readyz_is_200_when_not_unhealthy(site: Site) -> None:
    """/readyz answers 200 while the overall status is healthy or degraded."""
    site.feed("quotes", ok=98, failed=2)
    answer = await site.get("/readyz")
    assert (answer.status, answer.json()) == (200, {"status": "ready"})


@pytest.mark.anyio
async def test_readyz_is_503_when_unhealthy(site: Site) -> None:
    """/readyz answers 503 once the overall status is unhealthy."""
    site.trip()
    answer = await site.get("/readyz")
    assert (answer.status, answer.json()) == (503, {"status": "not ready"})


@pytest.mark.anyio
async def test_unknown_path_is_404(site: Site) -> None:
    """Any other path answers 404."""
    answer = await site.get("/nothing-here")
    assert (answer.status, answer.json()) == (404, {"error": "not found", "path": "/nothing-here"})


@pytest.mark.anyio
async def test_query_string_and_trailing_slash_are_ignored(site: Site) -> None:
    """/health/?verbose=1 is /health."""
    site.feed("quotes", ok=20)
    answer = await site.get("/health/?verbose=1")
    assert (answer.status, answer.json()["status"]) == (200, "healthy")


def promtool_check_metrics(text: bytes) -> tuple[int, str]:
    """``promtool check metrics`` on ``text``: (return code, its complaints)."""
    checked = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return checked.returncode, (checked.stdout + checked.stderr).decode()


@pytest.mark.anyio
async def test_metrics_expose_health_series(site: Site) -> None:
    """/metrics carries resilience_health_status and resilience_health_score of the service."""
    site.feed("quotes", ok=20)
    answer = await site.get("/metrics")
    text = answer.body.decode()
    assert answer.status == 200
    assert answer.content_type.startswith("text/plain")
    assert "resilience_health_status{" in text
    status_lines = [
        line for line in text.splitlines() if line.startswith("resilience_health_status{")
    ]
    assert any(
        'service="quotes"' in ln and 'status="healthy"' in ln and ln.endswith(" 1.0")
        for ln in status_lines
    )
    assert any(
        line.startswith("resilience_health_score{") and 'service="quotes"' in line
        for line in text.splitlines()
    )


@pytest.mark.anyio
async def test_metrics_pass_promtool(site: Site) -> None:
    """The /metrics text passes `promtool check metrics`."""
    site.feed("quotes", ok=20)
    answer = await site.get("/metrics")
    assert await asyncio.to_thread(promtool_check_metrics, answer.body) == (0, "")


@pytest.mark.anyio
async def test_metrics_without_latency_pass_promtool(site: Site) -> None:
    """Status, score and error-ratio series alone pass `promtool check metrics`."""
    site.monitor.record_check("quotes", ok=True)
    answer = await site.get("/metrics")
    assert b"resilience_health_score{" in answer.body
    assert await asyncio.to_thread(promtool_check_metrics, answer.body) == (0, "")


# -- ASGI specifics --------------------------------------------------------------------------------
@pytest.fixture
def app(monitor: HealthMonitor) -> Callable[..., Awaitable[None]]:
    """The ASGI app of a fresh monitor."""
    return health_app(monitor)


@pytest.mark.anyio
async def test_asgi_head_sends_headers_without_body(app: Callable[..., Awaitable[None]]) -> None:
    """HEAD /livez: 200, the GET's content-length, an empty body."""
    answer, headers = asgi_answer(
        await call_asgi(app, http_scope("/livez", "HEAD"), [{"type": "http.request"}])
    )
    assert (answer.status, answer.body) == (200, b"")
    assert headers[b"content-length"] == str(len(b'{"status":"alive"}')).encode()


@pytest.mark.anyio
async def test_asgi_post_is_405(app: Callable[..., Awaitable[None]]) -> None:
    """Methods other than GET and HEAD answer 405."""
    answer, _ = asgi_answer(
        await call_asgi(app, http_scope("/health", "POST"), [{"type": "http.request"}])
    )
    assert (answer.status, answer.json()) == (405, {"error": "method not allowed"})


@pytest.mark.anyio
async def test_asgi_lifespan_completes_startup_and_shutdown(
    app: Callable[..., Awaitable[None]],
) -> None:
    """The app acknowledges lifespan startup and shutdown, then returns."""
    sent = await call_asgi(
        app,
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_asgi_ignores_websocket_scopes(app: Callable[..., Awaitable[None]]) -> None:
    """A websocket scope gets no answer (the app returns without sending)."""
    assert await call_asgi(app, {"type": "websocket", "path": "/health"}, []) == []
