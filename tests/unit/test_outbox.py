"""Outbox (the bounded hand-off to a durable dead-letter store) and the letters' JSON form.

No sockets: the "store" is a write function that can hang, fail a number of times, then
succeed. Threads are coordinated with events, never with sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from types import MappingProxyType

import pytest

from resilience_otel import ConfigError
from resilience_otel._deadletters.outbox import Outbox, letter_from_json, letter_to_json
from resilience_otel.dlq import DeadLetter, DeadLetterReason

WAIT = 5.0
"""How long a test waits for the writer thread before failing, seconds."""


def letter(operation: str = "POST https://api.test/v1/orders", **kwargs: object) -> DeadLetter:
    fields: dict[str, object] = {
        "service": "orders",
        "operation": operation,
        "reason": DeadLetterReason.RETRIES_EXHAUSTED,
        "error_class": "transient",
        "error_type": "503",
        "message": "HTTP 503 Service Unavailable",
        "attempts": 3,
        "first_attempt_at": 1_767_225_600.125,
        "failed_at": 1_767_225_601.5,
        **kwargs,
    }
    return DeadLetter(**fields)  # type: ignore[arg-type]


def ops(letters: list[DeadLetter | None]) -> list[str | None]:
    return [None if x is None else x.operation for x in letters]


class Store:
    """A write function: may hang until released, fails ``failures`` times, then stores."""

    def __init__(self, failures: int = 0, *, hang: bool = False) -> None:
        self.failures = failures
        self.attempts = 0
        self.written: list[DeadLetter] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hang:
            self.release.set()

    def write(self, batch: list[DeadLetter]) -> None:
        self.attempts += 1
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the store"
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store down")
        self.written.extend(batch)


@pytest.fixture
def outboxes() -> Iterator[list[Outbox]]:
    """Outboxes made by a test; each is closed afterwards so no writer thread outlives it."""
    made: list[Outbox] = []
    yield made
    for outbox in made:
        outbox.close(timeout=0.01)


def make(
    outboxes: list[Outbox], store: Store, name: str = "test outbox", **kwargs: object
) -> Outbox:
    kwargs.setdefault("retry_interval", 0.0)
    outbox = Outbox(store.write, name=name, **kwargs)  # type: ignore[arg-type]
    outboxes.append(outbox)
    return outbox


# -- JSON -----------------------------------------------------------------------------------------
def test_json_round_trip_keeps_every_field() -> None:
    """payload bytes, metadata, trace id, reason, floats and the id all survive the round trip."""
    original = letter(
        message='naïve \u2603 "quoted"\nline',
        payload=b"\x00\xff{binary}\n",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        metadata={"method": "POST", "status_code": "503"},
        reason=DeadLetterReason.CIRCUIT_OPEN,
        id="a1b2c3",
    )
    restored = letter_from_json(letter_to_json(original))
    assert restored == original
    assert restored.reason is DeadLetterReason.CIRCUIT_OPEN
    assert isinstance(restored.metadata, MappingProxyType)


def test_json_round_trip_keeps_absent_payload_and_trace() -> None:
    """A letter without payload, trace id or metadata comes back with None / empty values."""
    restored = letter_from_json(letter_to_json(letter()))
    assert restored.payload is None
    assert restored.trace_id is None
    assert dict(restored.metadata) == {}
    assert restored.id == ""


def test_json_is_plain_text_with_the_payload_in_base64() -> None:
    """The serialised letter is one line of ASCII; the payload is base64, not raw bytes."""
    text = letter_to_json(letter(payload=b"\xff\xfe"))
    assert text.isascii()
    assert "\n" not in text
    assert '"payload":"//4="' in text


def test_from_json_accepts_bytes() -> None:
    """The stored form may come back as bytes (as Redis returns it)."""
    original = letter(payload=b"body")
    assert letter_from_json(letter_to_json(original).encode()) == original


def test_from_json_keeps_the_stored_id_over_the_argument() -> None:
    """The id recorded with the letter survives; ``id=`` only fills in a missing one."""
    restored = letter_from_json(letter_to_json(letter(id="old")), id="1700000000000-0")
    assert restored.id == "old"
    assert letter_from_json(letter_to_json(letter(id="")), id="7").id == "7"


# -- Outbox: writing -------------------------------------------------------------------------------
def test_flush_returns_true_once_everything_is_written_in_order(outboxes: list[Outbox]) -> None:
    """Letters put are written in order and flush() reports it."""
    store = Store()
    outbox = make(outboxes, store)
    letters = [letter(f"op-{i}") for i in range(5)]
    assert [outbox.put(x) for x in letters] == [None] * 5
    assert outbox.flush(timeout=WAIT)
    assert store.written == letters


def test_put_never_blocks_while_the_store_hangs(outboxes: list[Outbox]) -> None:
    """With the writer stuck inside write(), put() still returns at once, 50 times over."""
    store = Store(hang=True)
    outbox = make(outboxes, store)
    outbox.put(letter("stuck"))
    assert store.entered.wait(WAIT)
    returned: list[DeadLetter | None] = []
    putter = threading.Thread(
        target=lambda: returned.extend(outbox.put(letter()) for _ in range(50))
    )
    putter.start()
    putter.join(timeout=WAIT)
    assert not putter.is_alive()
    assert returned == [None] * 50
    assert not store.release.is_set()  # the store really was hanging all along
    store.release.set()


def test_failed_writes_are_retried_and_order_is_kept(outboxes: list[Outbox]) -> None:
    """A write failing three times then succeeding stores every letter once, in put order."""
    store = Store(failures=3, hang=True)
    outbox = make(outboxes, store)
    letters = [letter(f"op-{i}") for i in range(6)]
    outbox.put(letters[0])
    assert store.entered.wait(WAIT)  # the first letter is being written (and will fail)
    for item in letters[1:]:
        outbox.put(item)
    store.release.set()
    assert outbox.flush(timeout=WAIT)
    assert store.written == letters
    assert store.attempts >= 4


def test_flush_waits_for_the_batch_being_written(outboxes: list[Outbox]) -> None:
    """While a batch is inside write() (buffer empty), flush() does not yet report success."""
    store = Store(hang=True)
    outbox = make(outboxes, store)
    outbox.put(letter())
    assert store.entered.wait(WAIT)
    assert outbox.flush(timeout=0.02) is False
    store.release.set()
    assert outbox.flush(timeout=WAIT) is True


def test_flush_times_out_while_the_store_keeps_failing(outboxes: list[Outbox]) -> None:
    """flush() returns False after its timeout when the store never accepts the letters."""
    store = Store(failures=10**9)
    outbox = make(outboxes, store, retry_interval=0.001)
    outbox.put(letter())
    assert outbox.flush(timeout=0.05) is False
    assert store.written == []


def test_store_failure_logs_one_warning_while_it_lasts(
    outboxes: list[Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    """Five failed tries in a row log a single warning naming the outbox."""
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    store = Store(failures=5)
    outbox = make(outboxes, store)
    outbox.put(letter())
    assert outbox.flush(timeout=WAIT)
    warnings = [r for r in caplog.records if r.name == "resilience_otel"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "test outbox" in warnings[0].getMessage()
    assert store.attempts == 6


def test_store_failure_warning_carries_no_credentials(
    outboxes: list[Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    """A store error naming a DSN with a password is logged with the password redacted."""
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    calls: list[int] = []

    def write(batch: list[DeadLetter]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("cannot reach postgresql://app:hunter2@db.internal/letters")

    outbox = Outbox(write, name="test outbox", retry_interval=0.0)
    outboxes.append(outbox)
    outbox.put(letter())
    assert outbox.flush(timeout=WAIT)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "store unreachable" in text
    assert "hunter2" not in text
    assert "REDACTED" in text


# -- Outbox: bounded -------------------------------------------------------------------------------
def test_full_buffer_drops_the_oldest_returns_it_and_counts(outboxes: list[Outbox]) -> None:
    """With maxlen=3 and the store stuck, two more puts drop the two oldest buffered letters."""
    store = Store(hang=True)
    outbox = make(outboxes, store, maxlen=3)
    outbox.put(letter("in-flight"))
    assert store.entered.wait(WAIT)  # handed to the store: no longer in the buffer
    returned = [outbox.put(letter(f"op-{i}")) for i in range(1, 6)]
    assert ops(returned) == [None, None, None, "op-1", "op-2"]
    assert outbox.dropped == 2
    store.release.set()
    assert outbox.flush(timeout=WAIT)
    assert ops(list(store.written)) == ["in-flight", "op-3", "op-4", "op-5"]


def test_letters_are_either_stored_or_returned_as_dropped(outboxes: list[Outbox]) -> None:
    """Across failures and a full buffer, every letter is stored once or handed back by put()."""
    store = Store(failures=2, hang=True)
    outbox = make(outboxes, store, maxlen=4)
    letters = [letter(f"op-{i}") for i in range(12)]
    outbox.put(letters[0])
    assert store.entered.wait(WAIT)
    dropped = [d for d in (outbox.put(x) for x in letters[1:]) if d is not None]
    store.release.set()
    assert outbox.flush(timeout=WAIT)
    assert sorted(ops([*store.written, *dropped])) == sorted(ops(list(letters)))
    assert outbox.dropped == len(dropped)


# -- Outbox: closing -------------------------------------------------------------------------------
def writer_threads(name: str) -> list[threading.Thread]:
    """Live writer threads of the outbox called ``name``."""
    return [t for t in threading.enumerate() if t.name == f"{name}-writer"]


def test_close_flushes_then_stops_the_writer(outboxes: list[Outbox]) -> None:
    """close() writes what is buffered, returns True and leaves no writer thread running."""
    store = Store()
    outbox = make(outboxes, store, name="closing outbox")
    outbox.put(letter())
    assert outbox.close(timeout=WAIT) is True
    assert len(store.written) == 1
    assert writer_threads("closing outbox") == []


def test_close_stops_the_writer_even_while_the_store_fails(outboxes: list[Outbox]) -> None:
    """With the store down, close() returns False and the writer stops trying."""
    store = Store(failures=10**9)
    outbox = make(outboxes, store, name="failing outbox", retry_interval=0.001)
    outbox.put(letter())
    assert outbox.close(timeout=0.02) is False
    assert writer_threads("failing outbox") == []
    assert store.written == []


class Lost:
    """An ``on_lost`` hook: records the letters the outbox reports as lost, and the thread."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def __call__(self, item: DeadLetter) -> None:
        self.letters.append(item)


def test_close_with_the_store_down_counts_every_buffered_letter_as_dropped(
    outboxes: list[Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    """Three letters the store never took: close() returns False, counts and reports all three."""
    caplog.set_level(logging.WARNING, logger="resilience_otel")
    lost = Lost()
    store = Store(failures=10**9)
    outbox = make(outboxes, store, name="down outbox", retry_interval=0.001, on_lost=lost)
    letters = [letter(f"op-{i}") for i in range(3)]
    for item in letters:
        outbox.put(item)
    assert outbox.close(timeout=0.05) is False
    assert outbox.dropped == 3
    assert sorted(ops(list(lost.letters))) == ["op-0", "op-1", "op-2"]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "down outbox" in record.getMessage()
    assert "3 dead letters" in record.getMessage()


def test_close_counts_the_batch_stuck_in_a_hanging_write(outboxes: list[Outbox]) -> None:
    """A write that hangs past close() is counted as lost at once, and never counted twice."""
    lost = Lost()
    store = Store(failures=1, hang=True)
    outbox = make(outboxes, store, name="hung outbox", on_lost=lost)
    outbox.put(letter("in-flight"))
    assert store.entered.wait(WAIT)
    outbox.put(letter("buffered"))
    assert outbox.close(timeout=0.05) is False
    assert sorted(ops(list(lost.letters))) == ["buffered", "in-flight"]
    assert outbox.dropped == 2
    store.release.set()  # the hanging write now fails: nothing new to count
    for thread in writer_threads("hung outbox"):
        thread.join(WAIT)
    assert outbox.dropped == 2
    assert len(lost.letters) == 2


def test_close_wakes_a_writer_waiting_to_retry(outboxes: list[Outbox]) -> None:
    """A writer pausing a minute between tries stops at close(), not a minute later."""
    store = Store(failures=10**9)
    outbox = make(outboxes, store, name="patient outbox", retry_interval=60.0)
    outbox.put(letter())
    assert store.entered.wait(WAIT)
    assert outbox.close(timeout=0.05) is False
    assert writer_threads("patient outbox") == []
    assert outbox.dropped == 1


def test_close_after_everything_was_stored_reports_nothing_lost(outboxes: list[Outbox]) -> None:
    """A clean close counts nothing as dropped and calls no hook."""
    lost = Lost()
    outbox = make(outboxes, Store(), on_lost=lost)
    outbox.put(letter())
    assert outbox.close(timeout=WAIT) is True
    assert outbox.dropped == 0
    assert lost.letters == []


def test_close_survives_a_raising_on_lost_hook(outboxes: list[Outbox]) -> None:
    """A hook that raises does not make close() raise; the letters are still counted."""

    def broken(item: DeadLetter) -> None:
        raise RuntimeError("metrics exporter broke")

    store = Store(failures=10**9)
    outbox = make(outboxes, store, retry_interval=0.001, on_lost=broken)
    outbox.put(letter())
    assert outbox.close(timeout=0.05) is False
    assert outbox.dropped == 1


def test_on_stop_runs_on_the_writer_thread_when_it_ends(outboxes: list[Outbox]) -> None:
    """on_stop (where a writer releases its connection) runs once, on the writer thread."""
    threads: list[str] = []
    outbox = make(
        outboxes, Store(), name="stopping outbox",
        on_stop=lambda: threads.append(threading.current_thread().name),
    )  # fmt: skip
    outbox.put(letter())
    assert outbox.close(timeout=WAIT) is True
    assert threads == ["stopping outbox-writer"]


@pytest.mark.parametrize("maxlen", [0, -3])
def test_buffer_below_one_is_rejected(maxlen: int) -> None:
    """A buffer that could hold nothing is a ConfigError naming the field, not an IndexError."""
    with pytest.raises(ConfigError, match=rf"^Outbox\.maxlen must be >= 1, got {maxlen}"):
        Outbox(Store().write, name="x", maxlen=maxlen)
