"""InMemoryDeadLetterQueue: bounded storage, ids, snapshots and replay."""

from __future__ import annotations

import pytest

from resilience_otel import (
    ConfigError,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterReason,
    InMemoryDeadLetterQueue,
    ReplayResult,
)


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
