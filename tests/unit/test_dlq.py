"""InMemoryDeadLetterQueue: bounded storage, ids, snapshots and replay."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
import redis

from resilience_otel import (
    ConfigError,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterReason,
    InMemoryDeadLetterQueue,
    ReplayResult,
)
from resilience_otel.dlq import PostgresDeadLetterQueue, RedisStreamDeadLetterQueue, check_queue


def letter(operation: str = "GET http://api.test/a", **kwargs: object) -> DeadLetter:
    fields: dict[str, object] = {
        "service": "svc",
        "operation": operation,
        "reason": DeadLetterReason.RETRIES_EXHAUSTED,
        "error_class": "transient",
        "error_type": "503",
        "message": "HTTP 503 Service Unavailable",
        "attempts": 3,
        "first_attempt_at": 100.0,
        "failed_at": 101.5,
        **kwargs,
    }
    return DeadLetter(**fields)  # type: ignore[arg-type]


def ops(queue: InMemoryDeadLetterQueue) -> list[str]:
    return [entry.operation for entry in queue.entries()]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_put_assigns_increasing_ids() -> None:
    """Each stored entry gets a fresh id; the caller's letter is left untouched."""
    queue = InMemoryDeadLetterQueue()
    original = letter("a")
    queue.put(original)
    queue.put(letter("b"))
    assert [e.id for e in queue.entries()] == ["1", "2"]
    assert original.id == ""


def test_entries_keep_every_field() -> None:
    """Apart from the id, the stored entry equals the letter that was put."""
    queue = InMemoryDeadLetterQueue()
    original = letter(payload=b"{}", trace_id="ab" * 16, metadata={"method": "GET"})
    queue.put(original)
    [stored] = queue.entries()
    assert stored.payload == b"{}"
    assert stored.trace_id == "ab" * 16
    assert dict(stored.metadata) == {"method": "GET"}
    assert stored.reason is DeadLetterReason.RETRIES_EXHAUSTED


def test_entries_is_a_snapshot() -> None:
    """The list returned by entries() does not change as the queue does."""
    queue = InMemoryDeadLetterQueue()
    queue.put(letter("a"))
    snapshot = queue.entries()
    queue.put(letter("b"))
    assert [e.operation for e in snapshot] == ["a"]
    snapshot.clear()
    assert ops(queue) == ["a", "b"]


def test_full_queue_drops_oldest() -> None:
    """At maxlen the oldest entry makes room for the new one."""
    queue = InMemoryDeadLetterQueue(maxlen=2)
    for name in "abc":
        queue.put(letter(name))
    assert ops(queue) == ["b", "c"]
    assert len(queue) == 2


def test_drops_are_counted() -> None:
    """``dropped`` counts every entry pushed out."""
    queue = InMemoryDeadLetterQueue(maxlen=2)
    for name in "abcde":
        queue.put(letter(name))
    assert queue.dropped == 3


def test_on_drop_receives_dropped_entries() -> None:
    """on_drop is called with each dropped entry, oldest first."""
    dropped: list[DeadLetter] = []
    queue = InMemoryDeadLetterQueue(maxlen=1, on_drop=dropped.append)
    for name in "abc":
        queue.put(letter(name))
    assert [(e.operation, e.id) for e in dropped] == [("a", "1"), ("b", "2")]


def test_ids_keep_increasing_after_drops() -> None:
    """Ids are never reused, even after entries were dropped."""
    queue = InMemoryDeadLetterQueue(maxlen=1)
    for name in "abc":
        queue.put(letter(name))
    assert [e.id for e in queue.entries()] == ["3"]


@pytest.mark.parametrize("maxlen", [0, -1])
def test_maxlen_below_one_is_rejected(maxlen: int) -> None:
    """maxlen must be at least 1; the error names the field and the value."""
    with pytest.raises(ConfigError, match=r"InMemoryDeadLetterQueue\.maxlen") as info:
        InMemoryDeadLetterQueue(maxlen=maxlen)
    assert isinstance(info.value, ValueError)
    assert info.value.field == "InMemoryDeadLetterQueue.maxlen"
    assert str(maxlen) in str(info.value)


def test_maxlen_must_be_an_integer() -> None:
    """A non-integer maxlen is a ConfigError."""
    with pytest.raises(ConfigError):
        InMemoryDeadLetterQueue(maxlen=2.5)  # type: ignore[arg-type]


def test_queue_satisfies_protocol() -> None:
    """InMemoryDeadLetterQueue is a DeadLetterQueue."""
    assert isinstance(InMemoryDeadLetterQueue(), DeadLetterQueue)


def test_replay_removes_handled_and_keeps_failing() -> None:
    """replay() drops the entries the handler handled and keeps those it raised on."""
    queue = InMemoryDeadLetterQueue()
    for name in "abcd":
        queue.put(letter(name))
    seen: list[str] = []

    def handler(entry: DeadLetter) -> None:
        seen.append(entry.operation)
        if entry.operation in ("b", "d"):
            raise RuntimeError("still down")

    result = queue.replay(handler)
    assert result == ReplayResult(succeeded=2, failed=2)
    assert seen == ["a", "b", "c", "d"]
    assert ops(queue) == ["b", "d"]


def test_replay_keeps_entries_added_during_replay() -> None:
    """An entry put while replay runs is kept (it was not handled)."""
    queue = InMemoryDeadLetterQueue()
    queue.put(letter("a"))

    def handler(entry: DeadLetter) -> None:
        queue.put(letter("new"))

    assert queue.replay(handler) == ReplayResult(succeeded=1, failed=0)
    assert ops(queue) == ["new"]


def test_replay_of_empty_queue() -> None:
    """Replaying an empty queue does nothing."""
    calls: list[DeadLetter] = []
    assert InMemoryDeadLetterQueue().replay(calls.append) == ReplayResult(0, 0)
    assert calls == []


@pytest.mark.anyio
async def test_areplay_removes_handled_and_keeps_failing() -> None:
    """areplay() awaits the handler and removes only the handled entries."""
    queue = InMemoryDeadLetterQueue()
    for name in "abc":
        queue.put(letter(name))

    async def handler(entry: DeadLetter) -> None:
        if entry.operation == "b":
            raise RuntimeError("still down")

    result = await queue.areplay(handler)
    assert result == ReplayResult(succeeded=2, failed=1)
    assert ops(queue) == ["b"]


def test_dead_letter_is_frozen() -> None:
    """Entries cannot be modified after creation."""
    entry = letter()
    with pytest.raises(AttributeError):
        entry.message = "changed"  # type: ignore[misc]


# -- concurrent replayers ------------------------------------------------------------------------
WAIT = 5.0
"""How long a test waits for another thread or task before failing, seconds."""


class Overlap:
    """A handler that holds its first call until a second call has started elsewhere.

    Two replays thus truly overlap: the first is inside its handler while the other runs.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.second = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, entry: DeadLetter) -> None:
        with self._lock:
            self.calls[entry.operation] += 1
            first = sum(self.calls.values()) == 1
        if first:
            self.second.wait(WAIT)
        else:
            self.second.set()


def test_two_threads_replaying_at_once_handle_each_letter_once() -> None:
    """Two concurrent replay() calls split the letters: every letter handled exactly once."""
    queue = InMemoryDeadLetterQueue()
    letters = [f"op-{i}" for i in range(6)]
    for name in letters:
        queue.put(letter(name))
    handler = Overlap()
    results: list[ReplayResult] = []
    threads = [threading.Thread(target=lambda: results.append(queue.replay(handler)))]
    threads[0].start()
    threads.append(threading.Thread(target=lambda: results.append(queue.replay(handler))))
    threads[1].start()
    for thread in threads:
        thread.join(WAIT)
    assert handler.second.is_set()
    assert handler.calls == Counter(letters)
    assert sum(r.succeeded for r in results) == 6
    assert len(queue) == 0


@pytest.mark.anyio
async def test_two_tasks_areplaying_at_once_handle_each_letter_once() -> None:
    """Two concurrent areplay() tasks split the letters: every letter handled exactly once."""
    queue = InMemoryDeadLetterQueue()
    letters = [f"op-{i}" for i in range(6)]
    for name in letters:
        queue.put(letter(name))
    calls: Counter[str] = Counter()
    second = asyncio.Event()

    async def handler(entry: DeadLetter) -> None:
        calls[entry.operation] += 1
        if sum(calls.values()) == 1:
            await asyncio.wait_for(second.wait(), WAIT)
        else:
            second.set()

    results = await asyncio.gather(queue.areplay(handler), queue.areplay(handler))
    assert calls == Counter(letters)
    assert sum(r.succeeded for r in results) == 6
    assert len(queue) == 0


def test_letter_failing_in_one_replay_is_not_taken_twice_by_the_other() -> None:
    """A letter that failed in one of two concurrent replays stays queued, handled once each run."""
    queue = InMemoryDeadLetterQueue()
    for name in ("bad", "good"):
        queue.put(letter(name))
    handler = Overlap()

    def failing(entry: DeadLetter) -> None:
        handler(entry)
        if entry.operation == "bad":
            raise RuntimeError("still down")

    threads = [threading.Thread(target=queue.replay, args=(failing,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert handler.calls == Counter({"bad": 1, "good": 1})
    assert ops(queue) == ["bad"]


def test_replay_interrupted_by_a_base_exception_keeps_the_letter() -> None:
    """A handler ending the replay with KeyboardInterrupt leaves its letter for the next replay."""
    queue = InMemoryDeadLetterQueue()
    queue.put(letter("a"))

    def interrupted(entry: DeadLetter) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        queue.replay(interrupted)
    handled: list[DeadLetter] = []
    assert queue.replay(handled.append) == ReplayResult(succeeded=1, failed=0)
    assert [e.operation for e in handled] == ["a"]


def test_letter_dropped_while_being_replayed_still_counts_as_handled() -> None:
    """A full queue may drop the letter a handler is working on; the replay still succeeds."""
    queue = InMemoryDeadLetterQueue(maxlen=1)
    queue.put(letter("a"))

    def handler(entry: DeadLetter) -> None:
        queue.put(letter("b"))  # pushes "a" out while it is being handled

    assert queue.replay(handler) == ReplayResult(succeeded=1, failed=0)
    assert ops(queue) == ["b"]
    assert queue.dropped == 1


# -- validation ----------------------------------------------------------------------------------
def test_check_queue_accepts_a_queue_and_none() -> None:
    """A queue object is returned unchanged; None (no queue) passes too."""
    queue = InMemoryDeadLetterQueue()
    assert check_queue(queue) is queue
    assert check_queue(None) is None


@pytest.mark.parametrize(
    "value",
    ["redis://localhost", [], object(), InMemoryDeadLetterQueue, {"put": 1, "replay": 2}],
    ids=["str", "list", "object", "class", "dict"],
)
def test_check_queue_rejects_what_is_not_a_queue(value: object) -> None:
    """Anything but a queue instance is a ConfigError naming the argument and the value."""
    expected = r"^dead_letters must be a dead-letter queue or None, got "
    with pytest.raises(ConfigError, match=expected) as info:
        check_queue(value)
    assert info.value.field == "dead_letters"
    assert repr(value)[:40] in str(info.value)


def test_check_queue_names_the_argument_it_is_given() -> None:
    """The error names the argument the caller passes as ``name``."""
    expected = r"^queue must be a dead-letter queue or None, got 'x' \(str\)"
    with pytest.raises(ConfigError, match=expected):
        check_queue("x", name="queue")


def test_check_queue_rejects_an_object_with_put_but_no_replay() -> None:
    """An object with put() alone is not a queue: its letters could never be replayed."""

    class PutOnly:
        def put(self, letter: DeadLetter) -> None:
            """Store nothing."""

    with pytest.raises(ConfigError, match="PutOnly"):
        check_queue(PutOnly())


@pytest.mark.parametrize("field", ["maxlen", "buffer"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_redis_queue_rejects_bad_sizes_at_construction(field: str, value: object) -> None:
    """maxlen / buffer below 1 or not an integer: ConfigError naming the field and value."""
    client = redis.Redis(port=1)  # never contacted: construction fails first
    name = f"RedisStreamDeadLetterQueue.{field}"
    with pytest.raises(ConfigError, match=rf"^{name} must be") as info:
        RedisStreamDeadLetterQueue(client, **{field: value})  # type: ignore[arg-type]
    assert info.value.field == name
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), "60"])
def test_redis_queue_rejects_a_bad_claim_idle(value: object) -> None:
    """claim_idle must be a positive, finite number of seconds."""
    with pytest.raises(ConfigError, match=r"^RedisStreamDeadLetterQueue\.claim_idle must be"):
        RedisStreamDeadLetterQueue(redis.Redis(port=1), claim_idle=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["stream", "group", "consumer"])
def test_redis_queue_rejects_empty_names(field: str) -> None:
    """An empty stream, group or consumer name is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=rf"^RedisStreamDeadLetterQueue\.{field} must be"):
        RedisStreamDeadLetterQueue(redis.Redis(port=1), **{field: ""})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["maxlen", "buffer"])
@pytest.mark.parametrize("value", [0, -1])
def test_postgres_queue_rejects_bad_sizes_at_construction(field: str, value: int) -> None:
    """maxlen / buffer below 1: ConfigError naming the field and the value."""
    name = f"PostgresDeadLetterQueue.{field}"
    with pytest.raises(ConfigError, match=rf"^{name} must be >= 1, got {value}") as info:
        PostgresDeadLetterQueue("postgresql://127.0.0.1:1/x", **{field: value})  # type: ignore[arg-type]
    assert info.value.field == name


def test_postgres_queue_rejects_a_table_name_that_is_not_an_identifier() -> None:
    """A table name that would need quoting is a ConfigError naming the field and the value."""
    with pytest.raises(ConfigError, match=r"PostgresDeadLetterQueue\.table .*'x; DROP'"):
        PostgresDeadLetterQueue("postgresql://127.0.0.1:1/x", table="x; DROP")
