"""Real Redis and PostgreSQL errors repeat the values they were given: none of them reaches a
span, a dead letter, a log record or a metric label (unless the policy opts in)."""

# Statements are built with f-strings only to name the per-test table this module creates.
# ruff: noqa: S608

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis
import redis.asyncio
from asyncpg import exceptions as pgx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import exceptions as rex

from resilience_otel import (
    BreakerConfig,
    DeadLetterReason,
    InMemoryDeadLetterQueue,
    Policy,
    RedactionConfig,
    RetryConfig,
)
from resilience_otel import asyncpg as rpg
from resilience_otel import redis as rredis
from resilience_otel._telemetry import semconv as sc

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
# Markers without digits test the quote scrubbing, the others the number scrubbing.
SECRETS = ("hunterpassword", "s3cr3tArg42", "aliceprivate", "987654321")


@dataclass
class Sinks:
    """Everywhere a failure can be written down."""

    spans: InMemorySpanExporter
    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider
    dead: InMemoryDeadLetterQueue
    caplog: pytest.LogCaptureFixture

    def everything(self) -> str:
        """All span data, metric data, dead letters and log records as one text."""
        parts = [s.to_json() for s in self.spans.get_finished_spans()]
        data = self.reader.get_metrics_data()
        parts.append(data.to_json() if data is not None else "")
        parts.append(repr(self.dead.entries()))
        parts.extend(r.getMessage() + repr(r.args) + str(r.exc_info) for r in self.caplog.records)
        return "\n".join(parts)

    def exception_messages(self) -> list[str]:
        """The exception.message of every exception event."""
        return [
            str((e.attributes or {})["exception.message"])
            for s in self.spans.get_finished_spans()
            for e in s.events
            if e.name == "exception"
        ]

    def kwargs(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "dead_letters": self.dead,
        }


@pytest.fixture
def sinks(caplog: pytest.LogCaptureFixture) -> Iterator[Sinks]:
    """In-memory spans and metrics, a dead-letter queue and every log record."""
    caplog.set_level(logging.DEBUG)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Sinks(
        exporter, tracer_provider, reader, meter_provider, InMemoryDeadLetterQueue(), caplog
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


def policy(service: str, *, raw: bool = False) -> Policy:
    """One attempt, every failure dead-lettered."""
    return Policy(
        service=service,
        breaker=BreakerConfig(failure_threshold=100, call_timeout=5.0),
        retry=RetryConfig(max_attempts=1, budget=None),
        dead_letter_on=frozenset(DeadLetterReason),
        redaction=RedactionConfig(record_error_text=raw),
    )


def assert_no_secret(sinks: Sinks) -> None:
    text = sinks.everything()
    for secret in SECRETS:
        assert secret not in text


# -- Redis -----------------------------------------------------------------------------------------
def redis_failures(client: redis.Redis) -> None:
    """Commands whose real error replies repeat their arguments."""
    key = f"redaction:{uuid.uuid4().hex}"
    calls = [
        lambda: client.execute_command("NOSUCHCMD", "hunterpassword", "s3cr3tArg42"),
        lambda: client.execute_command("CONFIG", "SET", "aliceprivate", "987654321"),
        lambda: client.eval("error('bad ' .. ARGV[1])", 0, "hunterpassword"),
    ]
    for call in calls:
        with pytest.raises(rex.ResponseError):
            call()
    pipe = client.pipeline(transaction=False)
    pipe.set(key, "aliceprivate")
    pipe.execute_command("NOSUCHCMD", "s3cr3tArg42")
    with pytest.raises(rex.ResponseError):
        pipe.execute()
    client.delete(key)


def test_redis_replies_leave_no_argument_anywhere(sinks: Sinks) -> None:
    """Unknown commands, CONFIG SET, a script error and a pipeline error: no argument leaks."""
    client = rredis.instrument(redis.Redis(), policy=policy("cache"), **sinks.kwargs())
    try:
        redis_failures(client)
    finally:
        client.close()
    assert len(sinks.dead.entries()) == 4
    messages = sinks.exception_messages()
    assert len(messages) == 4
    assert messages[0].startswith("ERR unknown command '?', with args beginning with: ?")
    assert messages[3].startswith("ERR Command # 2 (?) of pipeline caused error:")
    codes = {
        (s.attributes or {}).get(sc.DB_RESPONSE_STATUS_CODE)
        for s in sinks.spans.get_finished_spans()
        if s.name != "DEL"  # the clean-up succeeds
    }
    assert codes == {"ERR"}
    assert_no_secret(sinks)


@pytest.mark.anyio
async def test_async_redis_replies_leave_no_argument_anywhere(sinks: Sinks) -> None:
    """The asyncio client records the same scrubbed texts."""
    client = rredis.instrument(redis.asyncio.Redis(), policy=policy("cache"), **sinks.kwargs())
    try:
        with pytest.raises(rex.ResponseError):
            await client.execute_command("NOSUCHCMD", "hunterpassword", "s3cr3tArg42")
        with pytest.raises(rex.ResponseError):
            await client.execute_command("CONFIG", "SET", "aliceprivate", "987654321")
    finally:
        await client.aclose()
    assert len(sinks.exception_messages()) == 2
    assert_no_secret(sinks)


def test_redis_raw_text_is_an_opt_in(sinks: Sinks) -> None:
    """With record_error_text=True the reply is recorded as Redis wrote it."""
    client = rredis.instrument(redis.Redis(), policy=policy("cache", raw=True), **sinks.kwargs())
    try:
        with pytest.raises(rex.ResponseError):
            client.execute_command("NOSUCHCMD", "hunterpassword")
    finally:
        client.close()
    (message,) = sinks.exception_messages()
    assert "'hunterpassword'" in message


# -- PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture
async def table() -> AsyncIterator[str]:
    """A unique table with a unique email column, dropped after the test."""
    name = f"redaction_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(DSN)
    await connection.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, email text UNIQUE)")
    await connection.execute(f"INSERT INTO {name} VALUES (1, 'aliceprivate@example.com')")
    yield name
    await connection.execute(f"DROP TABLE {name}")
    await connection.close()


async def postgres_failures(pool: Any, table: str) -> None:
    """Statements whose real error texts repeat bound values and literals."""
    with pytest.raises(pgx.DataError):
        await pool.fetch("SELECT $1::int", "hunterpassword")
    with pytest.raises(pgx.InvalidTextRepresentationError):
        await pool.fetch("SELECT 's3cr3tArg42'::int")
    with pytest.raises(pgx.UniqueViolationError):
        await pool.execute(f"INSERT INTO {table} VALUES ($1, $2)", 2, "aliceprivate@example.com")
    with pytest.raises(pgx.NumericValueOutOfRangeError):
        await pool.fetch("SELECT 987654321987654321::int")


@pytest.mark.anyio
async def test_postgres_errors_leave_no_value_anywhere(sinks: Sinks, table: str) -> None:
    """Bound values, literals and DETAIL rows reach no span, dead letter, log or metric."""
    raw_pool = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    pool = rpg.wrap(raw_pool, policy=policy("orders"), **sinks.kwargs())
    try:
        await postgres_failures(pool, table)
    finally:
        await raw_pool.close()
    assert len(sinks.dead.entries()) == 4
    messages = sinks.exception_messages()
    assert messages[1] == 'invalid input syntax for type integer: "?"'
    assert messages[2].startswith("duplicate key value violates unique constraint")
    codes = [
        (s.attributes or {}).get(sc.DB_RESPONSE_STATUS_CODE)
        for s in sinks.spans.get_finished_spans()
    ]
    assert codes[1:] == ["22P02", "23505", "22003"]
    assert_no_secret(sinks)


@pytest.mark.anyio
async def test_postgres_raw_text_is_an_opt_in(sinks: Sinks) -> None:
    """With record_error_text=True the server's text is recorded as it is."""
    connection = await asyncpg.connect(DSN)
    wrapped = rpg.wrap(connection, policy=policy("orders", raw=True), **sinks.kwargs())
    try:
        with pytest.raises(pgx.InvalidTextRepresentationError):
            await wrapped.fetch("SELECT 'hunterpassword'::int")
    finally:
        await connection.close()
    (message,) = sinks.exception_messages()
    assert '"hunterpassword"' in message
