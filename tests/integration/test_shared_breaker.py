"""Breaker state shared across processes through Redis (RedisBreakerStore, SharedCircuitBreaker).

Multi-process tests run ``shared_worker.py`` as separate OS processes that share one breaker
through the machine's Redis (or a test-owned ``redis-server`` they may lose); the test drives
them with JSON commands on stdin and reads JSON replies on stdout. In-process tests give each
"process" its own ``redis.Redis`` client and store, so nothing is shared but Redis. Every test
uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from resilience_otel import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    Policy,
    ResilientTransport,
    RetryConfig,
    StateChange,
)
from resilience_otel.redis import RedisBreakerStore, SharedCircuitBreaker
from resilience_otel.testing import FakeClock

from .redis_server import RedisServer

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("shared_worker.py")
SYNC = 0.05
"""The stores' sync_interval, seconds."""
MARGIN = 0.25
"""Scheduling slack on a loaded two-core machine, seconds."""


# -- a worker process ----------------------------------------------------------------------------
class Worker:
    """One ``shared_worker.py breaker`` process, driven by JSON lines."""

    def __init__(self, args: list[str], stderr: Path) -> None:
        self.stderr_path = stderr
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, op: str, **fields: Any) -> None:
        """Send one command without waiting for its reply."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def reply(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next reply; fails with the worker's stderr if it died or answered an error."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            pytest.fail(f"worker gave no reply; stderr:\n{self.stderr_path.read_text()}")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            pytest.fail(f"worker error {message['error']}; stderr:\n{self.stderr_path.read_text()}")
        return message

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply."""
        self.send(op, **fields)
        return self.reply()

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """Ask the process to exit; kill it if it lingers."""
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(timeout=3)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


Spawn = Callable[..., list[Worker]]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    """A plain client of the machine's Redis."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def prefix(shared: redis.Redis) -> Iterator[str]:
    """A unique key prefix; its keys are deleted after the test."""
    value = f"test-shared-breaker:{uuid.uuid4().hex}"
    yield value
    keys = list(shared.scan_iter(match=f"{value}*", count=1000))
    if keys:
        shared.delete(*keys)


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A test-owned redis-server that the test may kill and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def spawn(prefix: str, tmp_path: Path) -> Iterator[Spawn]:
    """Starts worker processes sharing breaker ``b`` under ``prefix``; all are ended after."""
    started: list[Worker] = []

    def start(
        count: int, config: dict[str, Any], *, port: int = 6379, recheck: float = 1.0
    ) -> list[Worker]:
        args = [prefix, "b", "breaker", "--port", str(port), "--config", json.dumps(config)]
        args += ["--sync-interval", str(SYNC), "--recheck-interval", str(recheck)]
        workers = [Worker(args, tmp_path / f"worker-{len(started) + i}.err") for i in range(count)]
        started.extend(workers)
        for worker in workers:
            assert worker.reply(timeout=30)["ready"]
        return workers

    yield start
    for worker in started:
        worker.close()


def make_store(port: int, prefix: str, **kwargs: Any) -> RedisBreakerStore:
    """A store with its own client, the short timeouts the shared-breakers guide recommends."""
    client = redis.Redis(port=port, socket_timeout=0.05, socket_connect_timeout=0.05)
    return RedisBreakerStore(client, prefix=prefix, sync_interval=SYNC, **kwargs)


def pair(
    prefix: str, config: BreakerConfig, clock: FakeClock | None = None
) -> tuple[SharedCircuitBreaker, SharedCircuitBreaker]:
    """Two breakers named ``b`` with separate clients and stores: two "processes"."""
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    first = make_store(6379, prefix).breaker(config, name="b", **extra)
    second = make_store(6379, prefix).breaker(config, name="b", **extra)
    return first, second


def call(
    breaker: SharedCircuitBreaker, *, failure: bool, clock: FakeClock | None = None
) -> StateChange | None:
    """One admitted call with the given outcome; with ``clock`` (the breaker's), the call takes
    one second, longer than sync_interval, so even a success reaches Redis at once."""
    if clock is None:
        permit = breaker.acquire(time.monotonic())
        return breaker.record(permit, failure=failure, duration=0.001, now=time.monotonic())
    permit = breaker.acquire(clock.monotonic())
    clock.advance(1.0)
    return breaker.record(permit, failure=failure, duration=0.001, now=clock.monotonic())


def admits(breaker: SharedCircuitBreaker, clock: FakeClock | None = None) -> bool:
    """Whether the breaker admits a call now (the permit is given back unused)."""
    try:
        permit = breaker.acquire(time.monotonic() if clock is None else clock.monotonic())
    except CircuitOpenError:
        return False
    breaker.release(permit)
    return True


COUNT_MODE = {"failure_threshold": 5, "monitoring_period": 10.0, "reset_timeout": 30.0}


# -- opening across processes --------------------------------------------------------------------
@pytest.mark.slow
def test_failures_from_a_mix_of_processes_open_the_breaker_for_all(spawn: Spawn) -> None:
    """2+1+1+1 failures in four processes open it; every process rejects within sync_interval."""
    workers = spawn(4, COUNT_MODE)
    for worker in workers:
        worker.ask("watch")
    for worker, failures in zip(workers[:3], (2, 1, 1), strict=True):
        assert worker.ask("fail", n=failures)["changes"] == []
    before = time.time()
    tripped = workers[3].ask("fail", n=1)
    assert tripped["changes"] == ["open"]
    for worker in workers:
        rejected_at = worker.ask("watch_result", timeout=5.0)["rejected_at"]
        assert rejected_at is not None
        assert before <= rejected_at <= tripped["t"] + SYNC + MARGIN
    assert all(not worker.ask("acquire")["granted"] for worker in workers)


@pytest.mark.slow
def test_failures_below_the_threshold_in_every_process_keep_it_closed(spawn: Spawn) -> None:
    """Four processes with one failure each stay below a threshold of five and keep admitting."""
    workers = spawn(4, COUNT_MODE)
    for worker in workers:
        assert worker.ask("fail", n=1)["changes"] == []
    time.sleep(SYNC * 2)
    assert all(worker.ask("acquire")["granted"] for worker in workers)
    assert {worker.ask("state")["state"] for worker in workers} == {"closed"}


# -- half-open across processes ------------------------------------------------------------------
def half_open_config(max_calls: int, reset: float = 0.3) -> dict[str, Any]:
    return {
        "failure_threshold": 1,
        "monitoring_period": 10.0,
        "reset_timeout": reset,
        "call_timeout": None,
        "half_open_max_calls": max_calls,
    }


def race_for_probes(workers: list[Worker], barrier: str) -> list[dict[str, Any]]:
    """All workers ask for a permit at once (behind a Redis barrier); their replies."""
    for worker in workers:
        worker.send("barrier_acquire", key=barrier, n=len(workers))
    return [worker.reply() for worker in workers]


@pytest.mark.slow
@pytest.mark.parametrize("max_calls", [1, 2])
def test_half_open_grants_at_most_max_probes_across_processes(
    spawn: Spawn, prefix: str, max_calls: int
) -> None:
    """Four processes racing after reset_timeout get exactly half_open_max_calls probes."""
    workers = spawn(4, half_open_config(max_calls))
    assert workers[0].ask("fail", n=1)["changes"] == ["open"]
    time.sleep(0.3 + 0.05)
    replies = race_for_probes(workers, f"{prefix}:barrier")
    granted = [reply for reply in replies if reply["granted"]]
    assert len(granted) == max_calls
    assert all(reply["probe"] for reply in granted)


@pytest.mark.slow
def test_successful_probe_closes_the_breaker_for_every_process(spawn: Spawn, prefix: str) -> None:
    """The one probe's success closes the shared breaker; all processes then admit calls."""
    workers = spawn(4, half_open_config(1))
    workers[0].ask("fail", n=1)
    time.sleep(0.3 + 0.05)
    replies = race_for_probes(workers, f"{prefix}:barrier")
    [prober] = [w for w, reply in zip(workers, replies, strict=True) if reply["granted"]]
    permit = replies[workers.index(prober)]["permit"]
    assert prober.ask("record", permit=permit, failure=False)["change"] == "closed"
    time.sleep(SYNC * 2)
    after = [worker.ask("acquire") for worker in workers]
    assert all(reply["granted"] and not reply["probe"] for reply in after)
    assert {worker.ask("state")["state"] for worker in workers} == {"closed"}


@pytest.mark.slow
def test_failed_probe_reopens_the_breaker_for_every_process(spawn: Spawn, prefix: str) -> None:
    """The one probe's failure re-opens the shared breaker; all processes reject again."""
    workers = spawn(4, half_open_config(1, reset=0.6))
    workers[0].ask("fail", n=1)
    time.sleep(0.6 + 0.05)
    replies = race_for_probes(workers, f"{prefix}:barrier")
    [prober] = [w for w, reply in zip(workers, replies, strict=True) if reply["granted"]]
    permit = replies[workers.index(prober)]["permit"]
    assert prober.ask("record", permit=permit, failure=True)["change"] == "open"
    time.sleep(SYNC * 2)
    after = [worker.ask("acquire") for worker in workers]  # well within the new reset_timeout
    assert not any(reply["granted"] for reply in after)
    assert {reply["cached"] for reply in after} == {"open"}


@pytest.mark.slow
def test_probe_slot_of_a_killed_process_expires_after_its_ttl(spawn: Spawn) -> None:
    """A probe whose process was killed blocks others for its 1 s ttl only, then one may probe."""
    workers = spawn(3, half_open_config(1, reset=0.2))
    workers[0].ask("fail", n=1)
    time.sleep(0.2 + 0.05)
    probe = workers[0].ask("acquire")
    assert probe["granted"]
    assert probe["probe"]
    workers[0].kill()
    assert not workers[1].ask("acquire")["granted"]
    replacement: dict[str, Any] = {}

    def someone_probes() -> bool:
        for worker in workers[1:]:
            reply = worker.ask("acquire")
            if reply["granted"]:
                replacement.update(reply)
                return True
        return False

    wait_until(someone_probes, timeout=3.0)
    assert replacement["probe"]
    assert 0.9 <= replacement["t"] - probe["t"] <= 1.0 + 0.5


# -- manual control, Redis outage ------------------------------------------------------------------
@pytest.mark.slow
def test_force_open_and_reset_reach_another_process(spawn: Spawn) -> None:
    """force_open in one process rejects calls in another; a later reset admits them again."""
    first, second = spawn(2, COUNT_MODE)
    assert second.ask("acquire")["granted"]
    first.ask("force_open")
    time.sleep(SYNC * 2)
    rejected = second.ask("acquire")
    assert not rejected["granted"]
    assert rejected["cached"] == "forced_open"
    first.ask("reset")
    time.sleep(SYNC * 2)
    assert second.ask("acquire")["granted"]


@pytest.mark.slow
def test_processes_keep_admitting_calls_while_redis_is_down(
    spawn: Spawn, own_server: RedisServer
) -> None:
    """With Redis killed, every process still admits calls, degraded, with fallbacks counted."""
    workers = spawn(2, COUNT_MODE, port=own_server.port)
    assert all(worker.ask("acquire")["granted"] for worker in workers)
    assert not any(worker.ask("state")["degraded"] for worker in workers)
    own_server.kill()
    time.sleep(SYNC * 2)
    assert all(worker.ask("acquire")["granted"] for worker in workers)
    states = [worker.ask("state") for worker in workers]
    assert all(state["degraded"] and state["fallbacks"] > 0 for state in states)


@pytest.mark.slow
def test_local_failures_open_only_the_local_breaker_while_redis_is_down(
    spawn: Spawn, own_server: RedisServer
) -> None:
    """Without Redis, failures open the failing process's own breaker and no other."""
    first, second = spawn(2, COUNT_MODE, port=own_server.port)
    own_server.kill()
    assert first.ask("fail", n=5)["changes"] == ["open"]
    assert not first.ask("acquire")["granted"]
    assert second.ask("acquire")["granted"]
    assert second.ask("state")["state"] == "closed"


@pytest.mark.slow
def test_processes_use_shared_state_again_after_redis_is_back(
    spawn: Spawn, own_server: RedisServer
) -> None:
    """After Redis returns and recheck_interval passes, local opens are gone and state is shared."""
    first, second = spawn(2, COUNT_MODE, port=own_server.port, recheck=0.3)
    own_server.kill()
    first.ask("fail", n=5)
    assert not first.ask("acquire")["granted"]
    own_server.start()
    time.sleep(0.3 + 0.05)
    assert first.ask("acquire")["granted"]  # the (empty) shared state, not the local open one
    assert not first.ask("state")["degraded"]
    second.ask("acquire")
    second.ask("force_open")
    time.sleep(SYNC * 2)
    assert not first.ask("acquire")["granted"]


# -- in process: the degraded mode's log -----------------------------------------------------------
def test_redis_outage_logs_one_warning_and_counts_fallbacks(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Repeated Redis failures (over several rechecks) log one warning; fallbacks keep counting."""
    store = make_store(own_server.port, "outage", recheck_interval=0.05)
    breaker = store.breaker(BreakerConfig(**COUNT_MODE), name="b")
    assert admits(breaker)
    own_server.kill()
    time.sleep(SYNC + 0.01)  # the view is stale: the next call asks Redis
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    for _ in range(3):
        assert admits(breaker)
        assert breaker.degraded
        time.sleep(0.06)  # past recheck_interval: the next call tries Redis again
    assert breaker.fallbacks == 3
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_store_turns_redis_py_retries_off() -> None:
    """The store's client fails fast: redis-py's own retry is set to zero retries."""
    client = redis.Redis(socket_timeout=0.05, socket_connect_timeout=0.05)
    RedisBreakerStore(client, prefix="unused")
    retry = client.get_retry()
    assert retry is not None
    assert retry.get_retries() == 0


# -- in process: keys, manual control, listeners, snapshots ---------------------------------------
def test_state_hash_and_window_buckets_expire(prefix: str, shared: redis.Redis) -> None:
    """The state hash and the window hash get TTLs (10x the longest period; 2x the window)."""
    config = BreakerConfig(failure_threshold=2, monitoring_period=2.0, reset_timeout=3.0)
    first, _ = pair(prefix, config)
    call(first, failure=True)
    call(first, failure=True)  # the trip writes the state hash
    state_ttl = shared.pttl(f"{prefix}:{{b}}:s")
    assert 0 < state_ttl <= 30_000
    assert shared.hlen(f"{prefix}:{{b}}:w") > 0
    assert 0 < shared.pttl(f"{prefix}:{{b}}:w") <= 4_000


def test_probe_slots_expire(prefix: str, shared: redis.Redis) -> None:
    """The probe-slot set gets a TTL of twice the probe ttl (here 2 x 1 s)."""
    config = BreakerConfig(failure_threshold=1, reset_timeout=0.05, call_timeout=None)
    first, _ = pair(prefix, config)
    call(first, failure=True)
    time.sleep(0.06)
    first.acquire(time.monotonic())
    assert 0 < shared.pttl(f"{prefix}:{{b}}:p") <= 2_000


def test_force_closed_in_one_process_keeps_the_other_from_tripping(prefix: str) -> None:
    """force_closed reaches the other process, whose failures then never open the breaker."""
    first, second = pair(prefix, BreakerConfig(failure_threshold=2))
    first.force_closed()
    time.sleep(SYNC * 2)
    for _ in range(5):
        assert call(second, failure=True) is None
    assert second.state is BreakerState.FORCED_CLOSED
    assert admits(second)


def test_reset_in_one_process_clears_the_shared_window(prefix: str) -> None:
    """Failures counted before another process's reset no longer count towards the threshold."""
    first, second = pair(prefix, BreakerConfig(failure_threshold=3))
    call(first, failure=True)
    call(first, failure=True)
    second.reset()
    assert call(first, failure=True) is None
    assert first.snapshot().failures == 1


def test_listeners_hear_transitions_made_by_another_process(prefix: str) -> None:
    """A process's listeners get StateChange events for opens and resets done elsewhere."""
    first, second = pair(prefix, BreakerConfig(failure_threshold=2))
    heard: list[StateChange] = []
    second.add_listener(heard.append)
    assert admits(second)
    call(first, failure=True)
    call(first, failure=True)
    time.sleep(SYNC * 2)
    assert not admits(second)
    first.reset()
    time.sleep(SYNC * 2)
    assert admits(second)
    assert [(c.name, c.from_state, c.to_state) for c in heard] == [
        ("b", BreakerState.CLOSED, BreakerState.OPEN),
        ("b", BreakerState.OPEN, BreakerState.CLOSED),
    ]


def test_snapshot_reports_the_shared_window(prefix: str) -> None:
    """snapshot() counts the calls and failures of every process, pending ones included."""
    first, second = pair(prefix, BreakerConfig(failure_threshold=10))
    call(first, failure=False)
    call(first, failure=False)
    call(first, failure=True)
    call(second, failure=True)
    for breaker in (first, second):
        snapshot = breaker.snapshot()
        assert (snapshot.state, snapshot.calls, snapshot.failures) == (BreakerState.CLOSED, 4, 2)


# -- in process: rate mode -------------------------------------------------------------------------
RATE = BreakerConfig(failure_threshold=1, failure_rate_threshold=0.5, minimum_calls=4)


def test_rate_mode_trips_on_the_failure_ratio_of_all_processes(prefix: str) -> None:
    """3 successes here and 2 failures there (40%) stay closed; a third failure (50%) opens."""
    clock = FakeClock()
    first, second = pair(prefix, RATE, clock)
    for _ in range(3):
        assert call(first, failure=False, clock=clock) is None
    assert call(second, failure=True, clock=clock) is None
    assert call(second, failure=True, clock=clock) is None
    change = call(second, failure=True, clock=clock)
    assert change is not None
    assert change.to_state is BreakerState.OPEN
    clock.advance(1.0)
    assert not admits(first, clock)


def test_rate_mode_waits_for_minimum_calls_across_processes(prefix: str) -> None:
    """Three failures (100%) in two processes stay closed until a fourth call, a success, trips."""
    clock = FakeClock()
    first, second = pair(prefix, RATE, clock)
    assert call(first, failure=True, clock=clock) is None
    assert call(second, failure=True, clock=clock) is None
    assert call(second, failure=True, clock=clock) is None
    change = call(first, failure=False, clock=clock)
    assert change is not None
    assert change.to_state is BreakerState.OPEN


# -- in process: through a real transport ----------------------------------------------------------
def test_transport_tripped_in_one_process_rejects_in_another(prefix: str) -> None:
    """Two ResilientTransports on two stores: 503s through one open the breaker for the other."""
    policy = Policy(
        service="shared",
        breaker=BreakerConfig(failure_threshold=3, reset_timeout=30.0),
        retry=RetryConfig(max_attempts=1, budget=None),
    )
    reached: list[str] = []

    def upstream(name: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            reached.append(name)
            return httpx.Response(503)

        return httpx.MockTransport(handle)

    clients = [
        httpx.Client(
            transport=ResilientTransport(
                upstream(name),
                policy=policy,
                breaker=make_store(6379, prefix).breaker(policy.breaker, name="shared"),
            )
        )
        for name in ("one", "two")
    ]
    with clients[0], clients[1]:
        for _ in range(3):
            assert clients[0].get("http://api.test/x").status_code == 503
        time.sleep(SYNC * 2)
        with pytest.raises(CircuitOpenError) as rejected:
            clients[1].get("http://api.test/x")
    assert isinstance(rejected.value, httpx.TransportError)
    assert reached == ["one", "one", "one"]
