"""Error texts: what spans and dead letters say about a failure never carries a secret."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from asyncpg import exceptions as pgx
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import exceptions as rex

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    InMemoryDeadLetterQueue,
    Jitter,
    Policy,
    ResilientTransport,
    RetryConfig,
)
from resilience_otel._telemetry.errortext import error_code, error_text, safe_stacktrace
from resilience_otel._telemetry.redact import RedactionConfig, Redactor
from resilience_otel.testing import FakeClock

SECRET_URL = "https://alice:pa55w0rd@api.test/v1/q?token=t0k3nXYZ&api_token=apiT0K&page=2"
SECRETS = ("alice", "pa55w0rd", "t0k3nXYZ", "apiT0K")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    """An SDK tracer provider exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def policy(**redaction: object) -> Policy:
    """Two attempts, no backoff jitter, every failure dead-lettered."""
    return Policy(
        service="quotes",
        breaker=BreakerConfig(failure_threshold=100, call_timeout=None),
        retry=RetryConfig(max_attempts=2, base_delay=0.1, jitter=Jitter.NONE, budget=None),
        redaction=RedactionConfig(**redaction),  # type: ignore[arg-type]
    )


def refuse_naming_secret_url(request: httpx.Request) -> httpx.Response:
    """Fail like a proxy/connect error that quotes the URL, with a chained inner error."""
    try:
        raise OSError(f"connect to {SECRET_URL} failed")
    except OSError as inner:
        raise httpx.ConnectError(f"cannot reach {SECRET_URL}", request=request) from inner


def everything_recorded(spans: list[ReadableSpan]) -> str:
    """Every attribute, event attribute and status description of ``spans`` as one text."""
    parts: list[str] = []
    for span in spans:
        parts.append(repr(dict(span.attributes or {})))
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(event.name + repr(dict(event.attributes or {})))
    return "\n".join(parts)


def test_exception_event_of_a_failed_attempt_carries_no_secret(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """An inner ConnectError naming user:pw and a token leaves no trace of them on the span."""
    memory, provider = exporter
    dead = InMemoryDeadLetterQueue()
    transport = ResilientTransport(
        httpx.MockTransport(refuse_naming_secret_url), policy=policy(), clock=FakeClock(),
        tracer_provider=provider, dead_letters=dead,
    )  # fmt: skip
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("https://api.test/v1/q")
    spans = list(memory.get_finished_spans())
    events = [e for s in spans for e in s.events if e.name == "exception"]
    assert len(events) == 2
    recorded = everything_recorded(spans) + repr(dead.entries())
    for secret in SECRETS:
        assert secret not in recorded
    attributes = dict(events[0].attributes or {})
    assert attributes["exception.type"] == "httpx.ConnectError"
    assert "https://REDACTED:REDACTED@api.test/v1/q?token=REDACTED" in str(
        attributes["exception.message"]
    )
    stack = str(attributes["exception.stacktrace"])
    assert "refuse_naming_secret_url" in stack  # frames are kept
    assert "OSError: connect to https://REDACTED:REDACTED@" in stack  # and the cause, made safe


@pytest.mark.anyio
async def test_async_exception_event_carries_no_secret(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """The async transport records the same safe exception event."""
    memory, provider = exporter

    async def refuse(request: httpx.Request) -> httpx.Response:
        return refuse_naming_secret_url(request)

    transport = AsyncResilientTransport(
        httpx.MockTransport(refuse), policy=policy(), clock=FakeClock(), tracer_provider=provider
    )
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("https://api.test/v1/q")
    recorded = everything_recorded(list(memory.get_finished_spans()))
    assert "exception.message" in recorded
    for secret in SECRETS:
        assert secret not in recorded


def test_user_query_keys_apply_to_error_texts_and_dead_letters(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """Keys added on the transport and in the policy are redacted in messages and operations."""
    memory, provider = exporter
    dead = InMemoryDeadLetterQueue()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    transport = ResilientTransport(
        httpx.MockTransport(refuse), policy=policy(query_keys=["account"]), clock=FakeClock(),
        tracer_provider=provider, dead_letters=dead, redact_query_keys=["tenant"],
    )  # fmt: skip
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("https://api.test/v1/q?tenant=acmeCorp&account=acct42&page=2")
    recorded = everything_recorded(list(memory.get_finished_spans())) + repr(dead.entries())
    assert "acmeCorp" not in recorded
    assert "acct42" not in recorded
    [letter] = dead.entries()
    assert letter.operation == "GET https://api.test/v1/q?tenant=REDACTED&account=REDACTED&page=2"


def test_path_rule_applies_to_url_full_and_dead_letters(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """A path rule on the transport redacts url.full and the dead letter's operation."""
    memory, provider = exporter
    dead = InMemoryDeadLetterQueue()
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(503)), policy=policy(),
        clock=FakeClock(), tracer_provider=provider, dead_letters=dead,
        redact_path_segments=[r"[^/]+@[^/]+"],
    )  # fmt: skip
    with httpx.Client(transport=transport) as client:
        client.get("https://api.test/v1/users/bob@example.com/orders")
    for span in memory.get_finished_spans():
        assert (span.attributes or {})["url.full"] == "https://api.test/v1/users/REDACTED/orders"
    [letter] = dead.entries()
    assert letter.operation == "GET https://api.test/v1/users/REDACTED/orders"


# -- Redis replies ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected", "leaked"),
    [
        (
            rex.ResponseError("unknown command 'FOO', with args beginning with: 'secretarg' 's2' "),
            "ERR unknown command '?', with args beginning with: ?",
            ["secretarg", "s2"],
        ),
        (
            rex.ResponseError("Unknown option or number of arguments for CONFIG SET - 'maxmem'"),
            "ERR Unknown option or number of arguments for CONFIG SET - '?'",
            ["maxmem"],
        ),
        (
            rex.ResponseError(
                "Command # 3 (SET user:42 hunter2) of pipeline caused error: "
                "unknown command 'FOO', with args beginning with: 'pipesecret' "
            ),
            "ERR Command # 3 (?) of pipeline caused error: unknown command '?', "
            "with args beginning with: ?",
            ["hunter2", "user:42", "pipesecret"],
        ),
        (
            rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            [],
        ),
        (
            rex.ResponseError(
                "user_script:1: bad value 4242 mysecret script: b70139b36b301895a83f, "
                "on @user_script:1."
            ),
            "ERR user_script: ?",
            ["4242", "mysecret", "b70139b36b301895a83f"],
        ),
        (rex.NoScriptError("No matching script. Please use EVAL."), "NOSCRIPT No matching", []),
        (rex.ResponseError("value 'unterminated secret"), "ERR value '?", ["secret"]),
    ],
)
def test_redis_replies_are_scrubbed(error: Exception, expected: str, leaked: list[str]) -> None:
    """Redis replies keep their prefix and wording; arguments, quoted values and numbers go."""
    text = error_text(error)
    assert text.startswith(expected)
    for value in leaked:
        assert value not in text


def test_redis_prefix_is_the_error_code() -> None:
    """The Redis error prefix is reported as the error code (db.response.status_code)."""
    assert error_code(rex.ResponseError("WRONGTYPE Operation against a key")) == "WRONGTYPE"
    assert error_code(rex.ResponseError("syntax error")) == "ERR"
    assert error_code(rex.NoScriptError("No matching script.")) == "NOSCRIPT"
    assert error_code(rex.ConnectionError("Connection refused")) is None


def test_redis_connection_errors_keep_their_text() -> None:
    """Client-side connection errors repeat no arguments: their text is kept."""
    error = rex.ConnectionError("Error 111 connecting to 127.0.0.1:6380. Connection refused.")
    assert error_text(error) == "Error 111 connecting to 127.0.0.1:6380. Connection refused."


# -- PostgreSQL ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected", "leaked"),
    [
        (
            pgx.DataError(
                "invalid input for query argument $1: 'secretval' "
                "('str' object cannot be interpreted as an integer)"
            ),
            "invalid input for query argument $1: '?' object cannot be interpreted",
            ["secretval"],
        ),
        (
            pgx.InvalidTextRepresentationError('invalid input syntax for type integer: "s3cr"'),
            'invalid input syntax for type integer: "?"',
            ["s3cr"],
        ),
        (
            pgx.UniqueViolationError(
                'duplicate key value violates unique constraint "t_name_key"\n'
                "DETAIL:  Key (name)=(alice@secret) already exists."
            ),
            'duplicate key value violates unique constraint "t_name_key"',
            ["alice@secret", "DETAIL"],
        ),
        (
            pgx.UndefinedTableError('relation "orders_2024" does not exist'),
            'relation "orders_2024" does not exist',
            [],
        ),
        (
            pgx.StringDataRightTruncationError("value too long for type character varying(3)"),
            "value too long for type character varying(?)",
            [],
        ),
    ],
)
def test_postgres_texts_are_scrubbed(error: Exception, expected: str, leaked: list[str]) -> None:
    """Bound values, literals and DETAIL lines go; identifiers after their kind stay."""
    text = error_text(error)
    assert text.startswith(expected)
    for value in leaked:
        assert value not in text


def test_postgres_code_is_the_sqlstate() -> None:
    """A PostgreSQL error's code is its SQLSTATE."""
    assert error_code(pgx.InvalidTextRepresentationError("x")) == "22P02"


def test_raw_text_only_when_asked() -> None:
    """record_error_text keeps the server's wording (URLs are still redacted)."""
    error = pgx.InvalidTextRepresentationError(
        'invalid input syntax for type integer: "s3cr" at https://u:p@h.test/'
    )
    text = error_text(error, raw=True)
    assert '"s3cr"' in text
    assert "u:p@" not in text


def test_stacktrace_has_no_source_lines_and_safe_messages() -> None:
    """The stacktrace lists frames without source text and with safe messages."""

    def fail() -> None:
        password = "hunter2"  # this source line must not be quoted
        raise rex.ResponseError(f"ERR bad {password!r}")

    try:
        fail()
    except rex.ResponseError as exc:
        stack = safe_stacktrace(exc, error_text)
    assert "hunter2" not in stack
    assert ", in fail" in stack
    assert stack.splitlines()[-1].startswith("redis.exceptions.ResponseError: ERR bad '?'")


def test_broken_str_does_not_break_recording() -> None:
    """An exception whose __str__ raises is described by its type alone."""

    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert error_text(Odd()) == ""


def test_redactor_extra_keys_reach_messages() -> None:
    """error_text redacts URLs with the client's own keys."""
    text = error_text(
        OSError("GET https://api.test/?tenant=acme failed"), Redactor(query_keys=["tenant"])
    )
    assert "acme" not in text


# -- opentelemetry-instrumentation-httpx's own span ----------------------------------------------
def test_instrumented_client_span_records_no_secret(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """With instrument_client, the instrumentation's attempt span gets only the safe text, and
    the caller still gets the very exception the inner transport raised, cause included."""
    memory, provider = exporter
    raised: list[BaseException] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        try:
            refuse_naming_secret_url(request)
        except httpx.ConnectError as exc:
            raised.append(exc)
            raise
        raise AssertionError("unreachable")

    transport = ResilientTransport(
        httpx.MockTransport(refuse), policy=policy(), clock=FakeClock(), tracer_provider=provider
    )
    client = httpx.Client(transport=transport)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    try:
        with pytest.raises(httpx.ConnectError) as caught:
            client.get("https://api.test/v1/q")
    finally:
        HTTPXClientInstrumentor.uninstrument_client(client)
        client.close()
    spans = list(memory.get_finished_spans())
    assert len(spans) == 2
    recorded = everything_recorded(spans)
    for secret in SECRETS:
        assert secret not in recorded
    types = [
        (e.attributes or {}).get("exception.type")
        for s in spans
        for e in s.events
        if e.name == "exception"
    ]
    assert types == ["httpx.ConnectError", "httpx.ConnectError"]  # typed like the original
    assert caught.value.__cause__ is raised[-1]  # RetriesExhaustedError from the original
    assert isinstance(raised[-1].__cause__, OSError)


@pytest.mark.anyio
async def test_async_instrumented_client_span_records_no_secret(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """The async transport under instrument_client records the safe text and raises the original."""
    memory, provider = exporter

    async def refuse(request: httpx.Request) -> httpx.Response:
        return refuse_naming_secret_url(request)

    transport = AsyncResilientTransport(
        httpx.MockTransport(refuse), policy=policy(), clock=FakeClock(), tracer_provider=provider
    )
    client = httpx.AsyncClient(transport=transport)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    try:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get("https://api.test/v1/q")
    finally:
        HTTPXClientInstrumentor.uninstrument_client(client)
        await client.aclose()
    recorded = everything_recorded(list(memory.get_finished_spans()))
    assert "exception.message" in recorded
    for secret in SECRETS:
        assert secret not in recorded
    assert type(caught.value.__cause__) is httpx.ConnectError  # the original, not a stand-in


# -- values holding quotes ---------------------------------------------------------------------
_VALUES = st.text(alphabet="QXZJ '\"\\", min_size=1, max_size=30)
_LEAK = re.compile(r"[QXZJ]{2,}")  # a run of the value's letters: none of the templates has one


def _asyncpg_repr(value: str) -> str:
    shown = repr(value)  # what asyncpg quotes, cut at 40 characters
    return shown[:40] + "..." if len(shown) > 40 else shown


@settings(max_examples=300, deadline=None)
@given(value=_VALUES)
def test_no_quoted_value_survives_whatever_quotes_it_holds(value: str) -> None:
    """Values holding quotes or backslashes never leave a piece of themselves in the text."""
    errors: list[Exception] = [
        pgx.InvalidTextRepresentationError(f'invalid input syntax for type integer: "{value}"'),
        pgx.DataError(
            f"invalid input for query argument $1: {_asyncpg_repr(value)} "
            "('str' object cannot be interpreted as an integer)"
        ),
        rex.ResponseError(f"unknown command '{value}', with args beginning with: '{value}' "),
        rex.ResponseError(f"Unknown option or number of arguments for CONFIG SET - '{value}'"),
        rex.ResponseError(f"Command # 1 (SET k {value}) of pipeline caused error: syntax error"),
    ]
    for error in errors:
        assert _LEAK.search(error_text(error)) is None, error
