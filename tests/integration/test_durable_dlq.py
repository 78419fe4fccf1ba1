"""Durable dead-letter queues: RedisStreamDeadLetterQueue and PostgresDeadLetterQueue.

Most tests run against both backends: the machine's Redis (a unique stream, deleted after)
and PostgreSQL (database ``test``, a unique table, dropped after). Letters are written and
replayed by separate OS processes (``shared_worker.py dlq-put`` / ``dlq-replay``) where
surviving a process matters. "Store down" tests point a queue at a port where nothing listens
(or where a socket listens but never answers), or use a test-owned server they stop and start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience_otel import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterReason,
    Policy,
    ReplayResult,
    ResilientTransport,
    RetryConfig,
)
from resilience_otel.dlq import PostgresDeadLetterQueue, RedisStreamDeadLetterQueue

from .pg_server import PostgresServer, find_postgres_bin
from .redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("shared_worker.py")
DIED_EXIT_CODE = 17  # shared_worker.py's exit status for --die-at
DSN = "postgresql://postgres@127.0.0.1:5432/test"
Queue = RedisStreamDeadLetterQueue | PostgresDeadLetterQueue


def letter(operation: str, **kwargs: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "service": "svc",
        "operation": operation,
        "reason": DeadLetterReason.RETRIES_EXHAUSTED,
        "error_class": "transient",
        "error_type": "503",
        "message": "HTTP 503 Service Unavailable",
        "attempts": 3,
        "first_attempt_at": 1_767_225_600.25,
        "failed_at": 1_767_225_601.75,
        **kwargs,
    }
    return DeadLetter(**fields)


def ops(letters: list[DeadLetter | None]) -> list[str | None]:
    return [None if x is None else x.operation for x in letters]


def replay_ops(queue: Queue) -> tuple[ReplayResult, list[str]]:
    """Replay with a handler that only records; the result and the operations handled."""
    handled: list[str] = []
    result = queue.replay(lambda x: handled.append(x.operation))
    return result, handled


def run_worker(*args: str, expect: int = 0) -> dict[str, Any]:
    """Run ``shared_worker.py`` to its end; its last JSON line (``{}`` if it printed none)."""
    done = subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == expect, done.stderr
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def pg(dsn: str, query: str) -> list[Any]:
    """Run one statement on PostgreSQL (outside any event loop); its rows."""

    async def run() -> list[Any]:
        connection = await asyncpg.connect(dsn, timeout=5)
        try:
            return list(await connection.fetch(query))
        finally:
            await connection.close()

    return asyncio.run(run())


# -- backends ------------------------------------------------------------------------------------
class Backend:
    """One queue location (a stream or a table) and raw access to what is stored there."""

    kind = ""

    def __init__(self) -> None:
        self.queues: list[Queue] = []

    def queue(self, **kwargs: Any) -> Queue:
        raise NotImplementedError

    def queue_at(self, port: int, **kwargs: Any) -> Queue:
        """A queue whose store is expected at 127.0.0.1:``port``."""
        raise NotImplementedError

    def stored(self) -> list[str]:
        """The stored letters' raw JSON, oldest first."""
        raise NotImplementedError

    def raw(self) -> str:
        """Everything stored (every field / column), as text."""
        raise NotImplementedError

    def worker_args(self) -> list[str]:
        raise NotImplementedError

    def stored_ops(self) -> list[str]:
        return [json.loads(text)["operation"] for text in self.stored()]

    def cleanup(self) -> None:
        for queue in self.queues:
            queue.close(timeout=0.05)

    def _keep(self, queue: Queue) -> Queue:
        self.queues.append(queue)
        return queue


class RedisBackend(Backend):
    kind = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.stream = f"test-dlq:{uuid.uuid4().hex}"
        self.client = redis.Redis(port=6379)

    def queue(self, **kwargs: Any) -> Queue:
        # one replayer, as if restarted: a fresh queue object under the same consumer name
        kwargs.setdefault("consumer", "replayer")
        return self._keep(RedisStreamDeadLetterQueue(self.client, stream=self.stream, **kwargs))

    def queue_at(self, port: int, **kwargs: Any) -> Queue:
        client = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))  # fail fast when down
        return self._keep(RedisStreamDeadLetterQueue(client, stream=self.stream, **kwargs))

    def stored(self) -> list[str]:
        return [f[b"letter"].decode() for _, f in self.client.xrange(self.stream)]

    def raw(self) -> str:
        return repr(self.client.xrange(self.stream))

    def worker_args(self) -> list[str]:
        return [self.stream]

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            self.client.delete(self.stream)
            self.client.close()


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.table = f"test_dlq_{uuid.uuid4().hex}"

    def queue(self, **kwargs: Any) -> Queue:
        return self._keep(PostgresDeadLetterQueue(DSN, table=self.table, **kwargs))

    def queue_at(self, port: int, **kwargs: Any) -> Queue:
        dsn = f"postgresql://postgres@127.0.0.1:{port}/test"
        return self._keep(PostgresDeadLetterQueue(dsn, table=self.table, **kwargs))

    def stored(self) -> list[str]:
        rows = pg(DSN, f"SELECT letter::text AS letter FROM {self.table} ORDER BY id")  # noqa: S608
        return [row["letter"] for row in rows]

    def raw(self) -> str:
        rows = pg(DSN, f"SELECT t::text AS row FROM {self.table} t ORDER BY id")  # noqa: S608
        return "\n".join(row["row"] for row in rows)

    def worker_args(self) -> list[str]:
        return [self.table, "--dsn", DSN]

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            pg(DSN, f"DROP TABLE IF EXISTS {self.table}")


@pytest.fixture(params=["redis", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn; its queues are closed and its stream / table removed after."""
    made: Backend = RedisBackend() if request.param == "redis" else PostgresBackend()
    yield made
    made.cleanup()


@pytest.fixture
def redis_backend() -> Iterator[RedisBackend]:
    made = RedisBackend()
    yield made
    made.cleanup()


@pytest.fixture
def postgres_backend() -> Iterator[PostgresBackend]:
    made = PostgresBackend()
    yield made
    made.cleanup()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where a socket listens but never accepts nor answers (a hung store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


# -- writing -------------------------------------------------------------------------------------
def test_durable_queues_keep_the_dead_letter_queue_protocol(backend: Backend) -> None:
    """Both queues satisfy the DeadLetterQueue protocol the clients accept."""
    assert isinstance(backend.queue(), DeadLetterQueue)


def test_put_returns_at_once_while_the_store_hangs(backend: Backend, silent_port: int) -> None:
    """With the store accepting connections but never answering, 20 puts still return at once."""
    queue = backend.queue_at(silent_port)
    returned: list[DeadLetter | None] = []
    putter = threading.Thread(
        target=lambda: returned.extend(queue.put(letter(f"op-{i}")) for i in range(20))
    )
    started = time.monotonic()
    putter.start()
    putter.join(timeout=2.0)
    assert not putter.is_alive()
    assert time.monotonic() - started < 0.5
    assert returned == [None] * 20
    assert queue.flush(timeout=0.05) is False  # nothing could be written


def test_flush_writes_what_was_put(backend: Backend) -> None:
    """After flush() returns True the letters are in the store, in order."""
    queue = backend.queue()
    for i in range(3):
        queue.put(letter(f"op-{i}"))
    assert queue.flush() is True
    assert backend.stored_ops() == ["op-0", "op-1", "op-2"]


@pytest.mark.slow
def test_letters_put_by_an_exited_process_are_replayed(backend: Backend) -> None:
    """A process puts five letters, closes the queue and exits; a new queue here replays them."""
    name, *options = backend.worker_args()
    assert run_worker("op", name, "dlq-put", "--count", "5", *options) == {"closed": True}
    result, handled = replay_ops(backend.queue())
    assert result == ReplayResult(succeeded=5, failed=0)
    assert handled == [f"op-{i}" for i in range(5)]
    assert backend.stored() == []


def test_letters_round_trip_exactly(backend: Backend) -> None:
    """Payload bytes, metadata, trace id, reason and every other field come back unchanged."""
    original = letter(
        "POST https://api.test/v1/orders",
        reason=DeadLetterReason.CIRCUIT_OPEN,
        error_class="critical",
        message='naïve \u2603 "quoted"',
        payload=b"\xff\x01binary{}\n",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        metadata={"method": "POST", "host": "api.test"},
        id="engine-assigned-id",
    )
    writer = backend.queue()
    writer.put(original)
    assert writer.flush()
    replayed: list[DeadLetter] = []
    backend.queue().replay(replayed.append)
    [restored] = replayed
    assert restored.reason is DeadLetterReason.CIRCUIT_OPEN
    assert restored.payload == original.payload
    assert restored.id  # the store's key: the stream entry id or the row id
    assert dataclasses.replace(restored, id=original.id) == original


def test_close_twice_is_harmless(backend: Backend) -> None:
    """A second close() (e.g. from a finaliser after an explicit close) returns quietly."""
    queue = backend.queue()
    queue.put(letter("op-0"))
    assert queue.close() is True
    assert queue.close() is True
    assert backend.stored_ops() == ["op-0"]


# -- replaying exactly once ----------------------------------------------------------------------
def test_second_replay_offers_nothing_again(backend: Backend) -> None:
    """Letters handled by one replay are gone: a second replay handles none of them."""
    queue = backend.queue()
    for i in range(4):
        queue.put(letter(f"op-{i}"))
    first = replay_ops(queue)
    second = replay_ops(backend.queue())
    assert first == (ReplayResult(succeeded=4, failed=0), [f"op-{i}" for i in range(4)])
    assert second == (ReplayResult(succeeded=0, failed=0), [])


@pytest.mark.slow
def test_replayer_killed_mid_replay_loses_nothing_and_repeats_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    """A replayer process dies on the 4th of 8 letters; a restarted one handles exactly the rest."""
    queue = backend.queue()
    letters = [f"op-{i}" for i in range(8)]
    for operation in letters:
        queue.put(letter(operation))
    assert queue.close()
    log = tmp_path / "handled.log"
    name, *options = backend.worker_args()
    replayer = ["op", name, "dlq-replay", *options, "--consumer", "c1", "--log", str(log)]
    run_worker(*replayer, "--die-at", "4", expect=DIED_EXIT_CODE)
    first_run = log.read_text().split()
    assert run_worker(*replayer) == {"succeeded": 5, "failed": 0}
    assert first_run == letters[:3]
    assert Counter(log.read_text().split()) == Counter(letters)
    assert backend.stored() == []


def test_raising_handler_keeps_the_letter_for_the_next_replay(backend: Backend) -> None:
    """A letter whose handler raised stays stored and is offered (only it) by the next replay."""
    queue = backend.queue()
    for i in range(3):
        queue.put(letter(f"op-{i}"))

    def handler(item: DeadLetter) -> None:
        if item.operation == "op-1":
            raise RuntimeError("upstream still down")

    assert queue.replay(handler) == ReplayResult(succeeded=2, failed=1)
    assert backend.stored_ops() == ["op-1"]
    assert replay_ops(backend.queue()) == (ReplayResult(succeeded=1, failed=0), ["op-1"])


# -- bounded -------------------------------------------------------------------------------------
def dropped_points(reader: InMemoryMetricReader) -> list[tuple[dict[str, Any], int]]:
    """(attributes, value) of every resilience.dead_letters.dropped data point."""
    data = reader.get_metrics_data()
    return [
        (dict(point.attributes), point.value)
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "resilience.dead_letters.dropped"
        for point in metric.data.data_points
    ]


def test_maxlen_trims_the_oldest_and_counts_them(backend: Backend) -> None:
    """maxlen=3 and five letters: the two oldest are trimmed, counted and in the metric."""
    reader = InMemoryMetricReader()
    queue = backend.queue(maxlen=3, meter_provider=MeterProvider(metric_readers=[reader]))
    for i in range(5):
        queue.put(letter(f"op-{i}"))
    assert queue.flush()
    assert backend.stored_ops() == ["op-2", "op-3", "op-4"]
    assert queue.trimmed == 2
    assert queue.dropped == 2
    assert dropped_points(reader) == [({"service": "svc"}, 2)]


def test_full_buffer_while_the_store_is_down_drops_and_counts(backend: Backend) -> None:
    """buffer=2 with nothing listening: puts hand back the oldest letters, counted in dropped."""
    queue = backend.queue_at(free_port(), buffer=2)
    letters = [letter(f"op-{i}") for i in range(6)]
    returned = [x for x in (queue.put(item) for item in letters) if x is not None]
    assert len(returned) >= len(letters) - 2 - 1  # one letter may be out for writing
    assert queue.dropped == len(returned)
    assert set(ops(returned)) <= set(ops(letters[:4]))  # the newest two are kept


@pytest.mark.slow
def test_letters_buffered_while_redis_is_down_are_written_when_it_is_back(
    redis_backend: RedisBackend,
) -> None:
    """Redis killed: puts are buffered (flush False); once it is back they are all written."""
    with RedisServer() as server:
        queue = redis_backend.queue_at(server.port)
        queue.put(letter("before"))
        assert queue.flush()
        server.kill()  # no persistence: "before" is gone with the server's memory
        for i in range(5):
            queue.put(letter(f"op-{i}"))
        assert queue.flush(timeout=0.3) is False
        server.start()
        assert queue.flush(timeout=5.0) is True
        client = redis.Redis(port=server.port)
        stream = client.xrange(redis_backend.stream)
        client.close()
    assert [json.loads(f[b"letter"])["operation"] for _, f in stream] == [
        f"op-{i}" for i in range(5)
    ]


@pytest.mark.slow
@pytest.mark.skipif(find_postgres_bin() is None, reason="no PostgreSQL binaries to run a server")
def test_letters_buffered_while_postgres_is_down_are_written_when_it_is_back() -> None:
    """PostgreSQL stopped: puts are buffered (flush False); once it is back they are written."""
    with PostgresServer() as server:
        queue = PostgresDeadLetterQueue(server.dsn, table="dead_letters")
        try:
            queue.put(letter("before"))
            assert queue.flush()
            server.stop()
            for i in range(5):
                queue.put(letter(f"op-{i}"))
            assert queue.flush(timeout=0.3) is False
            server.start()
            assert queue.flush(timeout=10.0) is True
            result, handled = replay_ops(queue)
        finally:
            queue.close(timeout=0.05)
    assert result == ReplayResult(succeeded=6, failed=0)
    assert handled == ["before", *(f"op-{i}" for i in range(5))]


# -- nothing secret is stored --------------------------------------------------------------------
SECRETS = ("s3cr3t-pass", "k3y-value", "t0ken-value", "hdr-key-value", "c00kie-value")


def failing_client(queue: Queue) -> httpx.Client:
    """A client whose every call fails with 503 once and is dead-lettered into ``queue``."""
    policy = Policy(service="svc", retry=RetryConfig(max_attempts=1, budget=None))
    upstream = httpx.MockTransport(lambda request: httpx.Response(503))
    return httpx.Client(transport=ResilientTransport(upstream, policy=policy, dead_letters=queue))


def test_no_credentials_reach_the_store(backend: Backend) -> None:
    """A letter recorded from a request full of credentials stores none of them."""
    queue = backend.queue()
    with failing_client(queue) as client:
        client.get(
            "https://user:s3cr3t-pass@api.test/v1/orders?api_key=k3y-value&page=2",
            headers={
                "Authorization": "Bearer t0ken-value",
                "X-API-Key": "hdr-key-value",
                "Cookie": "session=c00kie-value",
            },
        )
    assert queue.flush()
    raw = backend.raw()
    assert "api.test/v1/orders" in raw
    assert [secret for secret in SECRETS if secret in raw] == []


def test_letters_recorded_by_a_transport_are_replayed_by_a_new_queue(backend: Backend) -> None:
    """A ResilientTransport dead-letters three failed calls; a fresh queue object replays them."""
    writer = backend.queue()
    with failing_client(writer) as client:
        for i in range(3):
            assert client.get(f"https://api.test/v1/orders/{i}").status_code == 503
    assert writer.close()
    replayed: list[DeadLetter] = []
    assert backend.queue().replay(replayed.append) == ReplayResult(succeeded=3, failed=0)
    assert ops(list(replayed)) == [f"GET https://api.test/v1/orders/{i}" for i in range(3)]
    assert {x.reason for x in replayed} == {DeadLetterReason.RETRIES_EXHAUSTED}
    assert {x.error_type for x in replayed} == {"503"}


# -- Redis stream specifics ----------------------------------------------------------------------
class Killed(BaseException):
    """Ends a replay the way a killed process would: no acknowledgement, no cleanup."""


def interrupted_replay(queue: Queue, after: int) -> list[str]:
    """Replay until the handler is about to handle letter number ``after + 1``, then "die"."""
    handled: list[str] = []

    def handler(item: DeadLetter) -> None:
        if len(handled) == after:
            raise Killed
        handled.append(item.operation)

    with pytest.raises(Killed):
        queue.replay(handler)
    return handled


def test_redis_replayer_restarted_under_its_name_takes_back_its_pending(
    redis_backend: RedisBackend,
) -> None:
    """A replayer that died after one letter left three pending; a new one named alike gets them."""
    queue = redis_backend.queue(consumer="c1")
    for i in range(4):
        queue.put(letter(f"op-{i}"))
    assert interrupted_replay(queue, after=1) == ["op-0"]
    restarted = redis_backend.queue(consumer="c1", claim_idle=60.0)
    assert replay_ops(restarted) == (
        ReplayResult(succeeded=3, failed=0),
        ["op-1", "op-2", "op-3"],
    )


def test_redis_other_consumer_claims_entries_idle_longer_than_claim_idle(
    redis_backend: RedisBackend,
) -> None:
    """Entries another consumer left pending are claimed only once idle for claim_idle."""
    queue = redis_backend.queue(consumer="c1")
    for i in range(3):
        queue.put(letter(f"op-{i}"))
    assert interrupted_replay(queue, after=0) == []
    other = redis_backend.queue(consumer="c2", claim_idle=0.3)
    assert replay_ops(other) == (ReplayResult(succeeded=0, failed=0), [])
    time.sleep(0.35)
    assert replay_ops(other) == (ReplayResult(succeeded=3, failed=0), ["op-0", "op-1", "op-2"])


def test_redis_replay_handles_more_than_a_thousand_letters(redis_backend: RedisBackend) -> None:
    """One replay call handles every letter in the stream, not just one read's worth."""
    queue = redis_backend.queue()
    for i in range(1500):
        queue.put(letter(f"op-{i}"))
    result, handled = replay_ops(queue)
    assert result == ReplayResult(succeeded=1500, failed=0)
    assert len(set(handled)) == 1500


# -- PostgreSQL specifics ------------------------------------------------------------------------
@pytest.mark.anyio
async def test_postgres_concurrent_replayers_never_share_a_letter(
    postgres_backend: PostgresBackend,
) -> None:
    """Two areplay tasks with slow handlers split the letters: none twice, none missed."""
    queue = postgres_backend.queue()
    letters = [f"op-{i}" for i in range(12)]
    for operation in letters:
        queue.put(letter(operation))
    assert await anyio.to_thread.run_sync(queue.flush)
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str) -> Callable[[DeadLetter], Awaitable[None]]:
        async def handle(item: DeadLetter) -> None:
            handled[name].append(item.operation)
            await asyncio.sleep(0.02)

        return handle

    results = await asyncio.gather(queue.areplay(handler_for("a")), queue.areplay(handler_for("b")))
    assert sum(r.succeeded for r in results) == 12
    assert sorted(handled["a"] + handled["b"]) == sorted(letters)
    assert handled["a"]
    assert handled["b"]


def test_postgres_letter_with_a_nul_character_does_not_block_the_queue(
    postgres_backend: PostgresBackend,
) -> None:
    """A letter whose message holds U+0000 is stored (or dropped), never blocking later ones."""
    queue = postgres_backend.queue()
    queue.put(letter("op-nul", message="bad\x00byte"))
    queue.put(letter("op-next"))
    with contextlib.suppress(Exception):
        queue.flush(timeout=1.5)
    assert "op-next" in postgres_backend.stored_ops()


def test_postgres_trimming_skips_the_letter_being_replayed(
    postgres_backend: PostgresBackend,
) -> None:
    """At maxlen, new letters are stored at once while a handler holds the oldest row."""
    queue = postgres_backend.queue(maxlen=2)
    for i in range(2):
        queue.put(letter(f"op-{i}"))
    assert queue.flush()
    inside, release = threading.Event(), threading.Event()
    handled: list[str] = []

    def handler(item: DeadLetter) -> None:
        handled.append(item.operation)
        if item.operation == "op-0":
            inside.set()
            assert release.wait(10.0)

    replay = threading.Thread(target=queue.replay, args=(handler,))
    replay.start()
    try:
        assert inside.wait(10.0)
        queue.put(letter("op-2"))
        queue.put(letter("op-3"))
        stored_at_once = queue.flush(timeout=2.0)
    finally:
        release.set()
        replay.join(10.0)
    assert stored_at_once
    assert queue.trimmed == 1  # op-1; op-0 was being handled
    assert handled == ["op-0", "op-2", "op-3"]
    assert postgres_backend.stored() == []


def test_redis_slow_handler_keeps_its_letter_from_other_replayers(
    redis_backend: RedisBackend,
) -> None:
    """A handler running for 3x claim_idle keeps its claim: another replayer gets nothing."""
    queue = redis_backend.queue(consumer="c1", claim_idle=0.2)
    queue.put(letter("op-0"))
    inside, release = threading.Event(), threading.Event()

    def handler(item: DeadLetter) -> None:
        inside.set()
        assert release.wait(10.0)

    results: list[ReplayResult] = []
    replay = threading.Thread(target=lambda: results.append(queue.replay(handler)))
    replay.start()
    try:
        assert inside.wait(10.0)
        time.sleep(0.6)  # three times claim_idle
        other = replay_ops(redis_backend.queue(consumer="c2", claim_idle=0.2))
    finally:
        release.set()
        replay.join(10.0)
    assert other == (ReplayResult(succeeded=0, failed=0), [])
    assert results == [ReplayResult(succeeded=1, failed=0)]
    assert redis_backend.stored() == []


def test_redis_letter_whose_claim_was_taken_mid_handler_is_still_deleted_and_logged(
    redis_backend: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Another consumer forcing the claim mid-handler: the handled letter is deleted, warned."""
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    queue = redis_backend.queue(consumer="c1", claim_idle=0.2)
    queue.put(letter("op-0"))
    stream, client = redis_backend.stream, redis_backend.client

    def handler(item: DeadLetter) -> None:
        client.xclaim(stream, "replay", "intruder", 0, [item.id])  # as if c1 had stalled
        time.sleep(0.2)  # the renewer (every claim_idle / 3) notices

    assert queue.replay(handler) == ReplayResult(succeeded=1, failed=0)
    assert redis_backend.stored() == []  # handled: never offered to the intruder again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "claim lapsed" in w]
