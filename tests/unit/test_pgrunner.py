"""The asyncpg runner's pieces without a server: the COPY output watch, the classifier that
honours it, and the ``read_only_functions`` argument."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from asyncpg import exceptions as pgx

from resilience_otel import ConfigError, ErrorClass
from resilience_otel._clients.postgres.runner import (
    CopyOutput,
    honour_copy_marks,
    trusted_functions,
)
from resilience_otel.asyncpg import classify_postgres

classify = honour_copy_marks(classify_postgres)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


# -- the output watch ----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_callable_output_is_watched() -> None:
    """A coroutine-function output gets every chunk; the watch notes the first."""
    received: list[bytes] = []

    async def sink(data: bytes) -> None:
        received.append(data)

    watch = CopyOutput(sink)
    assert not watch.delivered
    await watch.target(b"1\n")
    await watch.target(b"2\n")
    assert received == [b"1\n", b"2\n"]
    assert watch.delivered


@pytest.mark.anyio
async def test_file_output_is_watched() -> None:
    """A file-like output is written as asyncpg writes it; the watch notes the first write."""
    file = io.BytesIO()
    watch = CopyOutput(file)
    await watch.target(b"1\n")
    assert file.getvalue() == b"1\n"
    assert watch.delivered


def test_path_output_is_left_to_asyncpg(tmp_path: Path) -> None:
    """A path goes to asyncpg unchanged (it reopens and truncates it on every attempt)."""
    path = tmp_path / "rows.tsv"
    assert CopyOutput(path).target is path
    assert CopyOutput(str(path)).target == str(path)


def _mark_of(watch: CopyOutput, read_only: bool) -> bool | None:
    error = ConnectionResetError(104, "reset")
    watch.mark(error, read_only)
    mark: bool | None = getattr(error, "_resilience_copy_sent", None)
    return mark


@pytest.mark.anyio
async def test_mark_after_rows_were_delivered_says_sent() -> None:
    """Once rows reached the output, an error is marked sent, read-only or not."""

    async def sink(data: bytes) -> None:
        return None

    watch = CopyOutput(sink)
    assert _mark_of(watch, read_only=True) is False
    await watch.target(b"1\n")
    assert _mark_of(watch, read_only=True) is True
    assert _mark_of(watch, read_only=False) is True


def test_mark_before_any_rows_depends_on_the_statement() -> None:
    """Before any rows: a read-only statement had no effect; otherwise no verdict."""
    watch = CopyOutput(io.BytesIO())
    assert _mark_of(watch, read_only=True) is False
    assert _mark_of(watch, read_only=False) is None


def test_regular_file_path_may_be_rewritten(tmp_path: Path) -> None:
    """A regular file (or one not created yet) is rewritten from the start by a resend."""
    path = tmp_path / "rows.tsv"
    assert _mark_of(CopyOutput(path), read_only=True) is False
    path.write_bytes(b"1\n")
    assert _mark_of(CopyOutput(path), read_only=True) is False


def test_fifo_path_counts_as_delivered(tmp_path: Path) -> None:
    """A FIFO may have passed rows on to its reader: never resent."""
    path = tmp_path / "rows.fifo"
    os.mkfifo(path)
    assert _mark_of(CopyOutput(path), read_only=True) is True


# -- the classifier ------------------------------------------------------------------------------
def test_unmarked_errors_are_classified_as_before() -> None:
    """Without a mark the wrapped classifier's verdict stands."""
    for error in (ConnectionResetError(104, "reset"), ConnectionRefusedError(111, "refused")):
        assert classify(None, error) == classify_postgres(None, error)
    assert classify([1], None) is None


def test_mark_no_effect_makes_a_sent_failure_unsent() -> None:
    """A read-only COPY that delivered nothing had no effect: safe to resend."""
    error = pgx.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    setattr(error, "_resilience_copy_sent", False)  # noqa: B010
    failure = classify(None, error)
    assert failure is not None
    assert (failure.error_class, failure.sent) == (ErrorClass.TRANSIENT, False)


def test_mark_sent_wins_over_an_unsent_classification() -> None:
    """Rows delivered: the failure counts as sent whatever the classifier says."""
    error = ConnectionRefusedError(111, "refused")
    setattr(error, "_resilience_copy_sent", True)  # noqa: B010
    failure = classify(None, error)
    assert failure is not None
    assert failure.sent


def test_mark_on_the_cancelled_attempt_reaches_its_timeout() -> None:
    """The mark is found on the cancellation a timeout is raised from, through layers."""
    cancelled = asyncio.CancelledError()
    setattr(cancelled, "_resilience_copy_sent", False)  # noqa: B010
    inner = TimeoutError()
    inner.__cause__ = cancelled
    try:
        raise TimeoutError("attempt 1 exceeded call_timeout") from inner
    except TimeoutError as error:
        failure = classify(None, error)
    assert failure is not None
    assert not failure.sent


def test_mark_keeps_a_permanent_error_permanent() -> None:
    """The mark decides only whether the failure had an effect, never its class."""
    error = pgx.UndefinedTableError("relation does not exist")
    setattr(error, "_resilience_copy_sent", False)  # noqa: B010
    failure = classify(None, error)
    assert failure is not None
    assert failure.error_class is ErrorClass.PERMANENT


# -- read_only_functions -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        (False, False),
        (True, True),
        ({"Get_Price", " shop.find "}, frozenset({"get_price", "shop.find"})),
        (["f"], frozenset({"f"})),
        ((), frozenset()),
    ],
)
def test_read_only_functions_accepted(value: object, trusted: object) -> None:
    """True, False or a collection of names (lower-cased, trimmed)."""
    assert trusted_functions(value) == trusted  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["get_price", b"f", None, 1, [1], [""], "yes"])
def test_read_only_functions_rejected(value: object) -> None:
    """Anything else (one string would be split into letters) is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"read_only_functions=\.\.\.\) must be True, False"):
        trusted_functions(value)  # type: ignore[arg-type]
