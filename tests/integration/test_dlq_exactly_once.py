"""Dead letters: each handled exactly once by concurrent replayers, none lost silently at close.

Replayers run as threads, asyncio tasks and OS processes (``dlq_replayer.py``) against the
machine's Redis (a unique stream, deleted after) and PostgreSQL (database ``test``, a unique
table, dropped after). Handlers take longer than ``claim_idle``, so a replayer that did not
hold its letter would see it claimed by another while its handler still runs. Calls per letter
are counted in a Counter (threads) or a Redis hash (processes). Closing with the store down
uses a Redis and a PostgreSQL server the test starts and kills, or a port that never answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience_otel.dlq import (
    DeadLetter,
    PostgresDeadLetterQueue,
    RedisStreamDeadLetterQueue,
    ReplayResult,
)

from .pg_server import PostgresServer
from .redis_server import RedisServer
from .test_durable_dlq import (
    Backend,
    PostgresBackend,
    Queue,
    RedisBackend,
    dropped_points,
    letter,
)

pytestmark = pytest.mark.integration

REPLAYER = Path(__file__).with_name("dlq_replayer.py")
DIED_EXIT_CODE = 17  # dlq_replayer.py's exit status for --die-at
LETTERS = 6
CLAIM_IDLE = 0.2
HANDLE = 0.3  # seconds per handler call: longer than CLAIM_IDLE
WAIT = 20.0


@pytest.fixture(params=["redis", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn; its queues are closed and its stream / table removed after."""
    made: Backend = RedisBackend() if request.param == "redis" else PostgresBackend()
    yield made
    made.cleanup()


@pytest.fixture
def redis_backend() -> Iterator[RedisBackend]:
    """The Redis backend alone."""
    made = RedisBackend()
    yield made
    made.cleanup()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def counts() -> Iterator[str]:
    """A unique Redis hash key for calls per letter (and its start line), deleted after."""
    key = f"test-dlq-calls:{uuid.uuid4().hex}"
    yield key
    client = redis.Redis(port=6379)
    client.delete(key, f"{key}:ready")
    client.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where a socket listens but never accepts nor answers (a hung store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def fill(backend: Backend, n: int = LETTERS) -> list[str]:
    """Store ``n`` letters ``op-0``... in the backend; their operations."""
    writer = backend.queue()
    operations = [f"op-{i}" for i in range(n)]
    for operation in operations:
        writer.put(letter(operation))
    assert writer.flush()
    return operations


def replayer(backend: Backend, name: str) -> Queue:
    """A replaying queue object of its own (for Redis: its own consumer name)."""
    if isinstance(backend, RedisBackend):
        return backend.queue(consumer=name, claim_idle=CLAIM_IDLE)
    return backend.queue()


class Calls:
    """A handler counting its calls per letter (thread-safe), each taking HANDLE seconds."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, item: DeadLetter) -> None:
        with self._lock:
            self.counts[item.operation] += 1
        time.sleep(HANDLE)


def replay_until_empty(queue: Queue, handler: Calls, backend: Backend) -> ReplayResult:
    """Replay again and again until no letter is left (others may hold the last ones)."""
    succeeded = failed = 0
    deadline = time.monotonic() + WAIT
    while backend.stored() and time.monotonic() < deadline:
        result = queue.replay(handler)
        succeeded, failed = succeeded + result.succeeded, failed + result.failed
        time.sleep(0.02)
    return ReplayResult(succeeded=succeeded, failed=failed)


def run_threads(queues: list[Queue], handler: Calls, backend: Backend) -> list[ReplayResult]:
    """One thread per queue, started together, each replaying until the store is empty."""
    start = threading.Barrier(len(queues))
    results: list[ReplayResult] = []

    def run(queue: Queue) -> None:
        start.wait()
        results.append(replay_until_empty(queue, handler, backend))

    threads = [threading.Thread(target=run, args=(queue,)) for queue in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return results


# -- threads and tasks ---------------------------------------------------------------------------
@pytest.mark.parametrize("replayers", [2, 4])
def test_concurrent_replayer_threads_handle_each_letter_exactly_once(
    backend: Backend, replayers: int
) -> None:
    """2 / 4 replayer threads, handlers slower than claim_idle: every letter handled once."""
    letters = fill(backend)
    handler = Calls()
    queues = [replayer(backend, f"c{i}") for i in range(replayers)]
    results = run_threads(queues, handler, backend)
    assert handler.counts == Counter(letters)
    assert sum(r.succeeded for r in results) == LETTERS
    assert sum(r.failed for r in results) == 0
    assert backend.stored() == []


def test_threads_sharing_one_redis_queue_object_never_share_a_letter(
    redis_backend: RedisBackend,
) -> None:
    """Two threads replaying through one queue object (one consumer name) split the letters."""
    letters = fill(redis_backend)
    handler = Calls()
    queue = replayer(redis_backend, "shared")
    results = run_threads([queue, queue], handler, redis_backend)
    assert handler.counts == Counter(letters)
    assert sum(r.succeeded for r in results) == LETTERS


@pytest.mark.anyio
async def test_concurrent_areplay_tasks_handle_each_letter_exactly_once(backend: Backend) -> None:
    """Two areplay tasks with async handlers slower than claim_idle: every letter handled once."""
    letters = await asyncio.to_thread(fill, backend)
    counts: Counter[str] = Counter()

    async def handler(item: DeadLetter) -> None:
        counts[item.operation] += 1
        await asyncio.sleep(HANDLE)

    async def run(queue: Queue) -> int:
        handled = 0
        deadline = time.monotonic() + WAIT
        while await asyncio.to_thread(backend.stored) and time.monotonic() < deadline:
            handled += (await queue.areplay(handler)).succeeded
            await asyncio.sleep(0.02)
        return handled

    handled = await asyncio.gather(*(run(replayer(backend, f"c{i}")) for i in range(2)))
    assert counts == Counter(letters)
    assert sum(handled) == LETTERS


# -- processes -----------------------------------------------------------------------------------
def spawn(backend: Backend, counts: str, *args: str) -> subprocess.Popen[str]:
    """Start ``dlq_replayer.py`` on the backend's stream / table."""
    name, *options = backend.worker_args()
    command = [sys.executable, str(REPLAYER), name, "--counts", counts, *options, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], expect: int = 0) -> dict[str, Any]:
    """Wait for a replayer process; its JSON summary (``{}`` when it died)."""
    out, err = process.communicate(timeout=60)
    assert process.returncode == expect, err
    return json.loads(out) if out.strip() else {}


def calls_per_letter(counts: str) -> dict[str, int]:
    """The Redis hash of calls per letter the replayer processes kept."""
    client = redis.Redis(port=6379)
    try:
        return {k.decode(): int(v) for k, v in client.hgetall(counts).items()}
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("replayers", [2, 4])
def test_concurrent_replayer_processes_handle_each_letter_exactly_once(
    backend: Backend, counts: str, replayers: int
) -> None:
    """2 / 4 replayer processes, handlers slower than claim_idle: every letter handled once."""
    letters = fill(backend)
    timing = ["--claim-idle", str(CLAIM_IDLE), "--handle", str(HANDLE)]
    processes = [
        spawn(backend, counts, "--consumer", f"c{i}", "--ready", str(replayers), *timing)
        for i in range(replayers)
    ]
    results = [finish(process) for process in processes]
    assert calls_per_letter(counts) == dict.fromkeys(letters, 1)
    assert sum(r["succeeded"] for r in results) == LETTERS
    assert backend.stored() == []


@pytest.mark.slow
def test_letter_of_a_replayer_dying_mid_handler_is_handled_again_by_another(
    backend: Backend, counts: str
) -> None:
    """At least once across a crash: the letter whose handler died is handled again, only it."""
    letters = fill(backend, 4)
    timing = ["--claim-idle", str(CLAIM_IDLE)]
    died = spawn(backend, counts, "--consumer", "c1", "--die-at", "2", *timing)
    finish(died, expect=DIED_EXIT_CODE)
    assert finish(spawn(backend, counts, "--consumer", "c2", *timing))["succeeded"] == 3
    assert calls_per_letter(counts) == {"op-0": 1, "op-1": 2, "op-2": 1, "op-3": 1}
    assert backend.stored() == []
    assert letters == ["op-0", "op-1", "op-2", "op-3"]


# -- close() with the store down -----------------------------------------------------------------
def metered() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def assert_logged_loss(caplog: pytest.LogCaptureFixture, count: int) -> None:
    """One error line says how many letters close() could not store."""
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [line for line in lines if f"closed with {count} dead letters not stored" in line]


def test_redis_close_with_the_server_killed_counts_every_unstored_letter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis killed, four letters buffered: close() returns False, counts and meters all four."""
    provider, reader = metered()
    stream = f"test-dlq:{uuid.uuid4().hex}"
    with RedisServer() as server:
        client = redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
        queue = RedisStreamDeadLetterQueue(client, stream=stream, meter_provider=provider)
        queue.put(letter("stored"))
        assert queue.flush()
        server.kill()
        for i in range(4):
            assert queue.put(letter(f"op-{i}")) is None
        assert queue.close(timeout=0.3) is False
    assert queue.dropped == 4
    assert dropped_points(reader) == [({"service": "svc"}, 4)]
    assert_logged_loss(caplog, 4)


def test_redis_close_with_a_hung_server_returns_and_counts_the_stuck_write(
    silent_port: int,
) -> None:
    """Redis never answering: close() returns within a second; all three letters counted."""
    provider, reader = metered()
    client = redis.Redis(port=silent_port, retry=Retry(NoBackoff(), 0))
    queue = RedisStreamDeadLetterQueue(client, stream="test-dlq:hung", meter_provider=provider)
    for i in range(3):
        queue.put(letter(f"op-{i}"))
    started = time.monotonic()
    assert queue.close(timeout=0.2) is False
    assert time.monotonic() - started < 1.0
    assert queue.dropped == 3
    assert dropped_points(reader) == [({"service": "svc"}, 3)]


def test_postgres_close_with_a_hung_server_never_raises(silent_port: int) -> None:
    """PostgreSQL never answering (writer stuck connecting): close() returns False, counts all."""
    provider, reader = metered()
    dsn = f"postgresql://postgres@127.0.0.1:{silent_port}/test"
    queue = PostgresDeadLetterQueue(dsn, table="hung_letters", meter_provider=provider)
    for i in range(3):
        queue.put(letter(f"op-{i}"))
    started = time.monotonic()
    assert queue.close(timeout=0.2) is False
    assert time.monotonic() - started < 1.0
    assert queue.dropped == 3
    assert dropped_points(reader) == [({"service": "svc"}, 3)]
    queue.close(timeout=0.05)  # again, with the writer still stuck: no exception either
    assert queue.dropped == 3


@pytest.mark.slow
def test_postgres_close_with_the_server_killed_counts_every_unstored_letter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL killed, four letters buffered: close() returns False, counts and meters all."""
    provider, reader = metered()
    with PostgresServer() as server:
        queue = PostgresDeadLetterQueue(server.dsn, table="letters", meter_provider=provider)
        queue.put(letter("stored"))
        assert queue.flush(timeout=10.0)
        server.kill()
        for i in range(4):
            assert queue.put(letter(f"op-{i}")) is None
        assert queue.close(timeout=0.3) is False
    assert queue.dropped == 4
    assert dropped_points(reader) == [({"service": "svc"}, 4)]
    assert_logged_loss(caplog, 4)
