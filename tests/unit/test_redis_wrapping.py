"""Redis shell pieces without a server: block times read from arguments, the timeout type of
an attempt that returns late, and redis-py's retry scoped to our attempts."""

from __future__ import annotations

import logging
import math
from typing import Any
from unittest import mock

import pytest
import redis
import redis.asyncio
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from resilience_otel import BreakerConfig, Policy, RetryConfig
from resilience_otel._clients.redis.blocking import block_parser, pipeline_block
from resilience_otel._clients.redis.retry import ScopedRetry, retry_layer, single_try
from resilience_otel.redis import instrument
from resilience_otel.testing import FakeClock

POLICY = Policy(
    service="cache",
    breaker=BreakerConfig(call_timeout=1.0),
    retry=RetryConfig(max_attempts=1, budget=None),
    telemetry=False,
)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.mark.parametrize(
    ("args", "seconds"),
    [
        (("BLPOP", "a", "b", 2), 2.0),
        (("BRPOP", b"a", b"0.5"), 0.5),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 3), 3.0),
        (("BRPOPLPUSH", "a", "b", 1), 1.0),
        (("BZPOPMIN", "z", 4), 4.0),
        (("BZPOPMAX", "z", 0), math.inf),
        (("BLMPOP", 1.5, 1, "a", "LEFT"), 1.5),
        (("BZMPOP", 2, 1, "z", "MIN"), 2.0),
        (("XREAD", "COUNT", 1, "BLOCK", 250, "STREAMS", "s", "$"), 0.25),
        (("XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">"), math.inf),
        (("WAIT", 1, 100), 0.1),
        (("WAITAOF", 1, 0, 2000), 2.0),
    ],
)
def test_block_time_is_read_from_each_blocking_command(
    args: tuple[Any, ...], seconds: float
) -> None:
    """Each blocking command's block time, in seconds; 0 blocks forever."""
    parse = block_parser(str(args[0]))
    assert parse is not None
    assert parse(args) == seconds


def test_xread_without_block_and_a_key_named_block_do_not_block() -> None:
    """XREAD without BLOCK does not block; a stream named BLOCK after STREAMS is a key."""
    parse = block_parser("XREAD")
    assert parse is not None
    assert parse(("XREAD", "COUNT", 1, "STREAMS", "s", "0")) is None
    assert parse(("XREAD", "STREAMS", "BLOCK", "5")) is None


def test_unreadable_block_times_and_other_commands_give_none() -> None:
    """A block time that is not a non-negative number is not guessed; GET has no parser."""
    parse = block_parser("BLPOP")
    assert parse is not None
    assert parse(("BLPOP", "k", "soon")) is None
    assert parse(("BLPOP", "k", -1)) is None
    assert block_parser("GET") is None


def test_pipeline_block_sums_its_blocking_commands() -> None:
    """A pipeline may block for the sum of its commands' block times."""
    assert pipeline_block([("GET", ("GET", "k")), ("LLEN", ("LLEN", "k"))]) is None
    blocks = [("BLPOP", ("BLPOP", "a", 1)), ("GET", ("GET", "k")), ("WAIT", ("WAIT", 1, 500))]
    assert pipeline_block(blocks) == 1.5


def test_sync_attempt_returning_late_fails_as_a_redis_timeout() -> None:
    """A command that returns after call_timeout fails with redis.exceptions.TimeoutError."""
    clock = FakeClock()
    client = redis.Redis()

    def late(*args: Any, **options: Any) -> bytes:
        clock.advance(2.0)
        return b"v"

    client.execute_command = late  # type: ignore[method-assign]
    instrument(client, policy=POLICY, clock=clock)
    with pytest.raises(rex.TimeoutError) as caught:
        client.get("k")
    assert isinstance(caught.value, rex.RedisError)
    assert isinstance(caught.value, TimeoutError)


@pytest.mark.anyio
async def test_async_attempt_returning_late_fails_as_a_redis_timeout() -> None:
    """The async late return is a redis.exceptions.TimeoutError too."""
    clock = FakeClock()
    client = redis.asyncio.Redis()

    async def late(*args: Any, **options: Any) -> bytes:
        clock.advance(2.0)
        return b"v"

    client.execute_command = late  # type: ignore[method-assign]
    instrument(client, policy=POLICY, clock=clock)
    with pytest.raises(rex.TimeoutError) as caught:
        await client.get("k")
    assert isinstance(caught.value, rex.RedisError)
    assert isinstance(caught.value, TimeoutError)


def _counting(failures: int) -> tuple[list[int], Any]:
    calls: list[int] = []

    def do() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise rex.ConnectionError("dropped")
        return "ok"

    return calls, do


def test_scoped_retry_delegates_outside_our_attempts() -> None:
    """Outside a single-try attempt the wrapped retry runs as configured, equal to it."""
    inner = Retry(NoBackoff(), 2)
    scoped = ScopedRetry(inner)
    assert scoped == inner
    assert scoped.get_retries() == 2
    calls, do = _counting(2)
    assert scoped.call_with_retry(do, lambda error: None) == "ok"
    assert len(calls) == 3


def test_scoped_retry_makes_one_try_inside_our_attempts() -> None:
    """Inside a single-try attempt: one try, the failure handler runs once, the error is raised."""
    scoped = ScopedRetry(Retry(NoBackoff(), 2))
    calls, do = _counting(1)
    failed: list[Exception] = []
    token = single_try.set(True)
    try:
        with pytest.raises(rex.ConnectionError):
            scoped.call_with_retry(do, failed.append)
    finally:
        single_try.reset(token)
    assert len(calls) == 1
    assert len(failed) == 1


@pytest.mark.parametrize(
    ("make", "max_attempts", "keep_client_retry", "expected"),
    [
        (lambda: redis.Redis(), 3, None, (False, True)),  # default retry: ours
        (lambda: redis.Redis(retry=Retry(NoBackoff(), 2)), 3, None, (True, False)),
        (lambda: redis.Redis(retry_on_error=[rex.BusyLoadingError]), 3, None, (True, False)),
        (lambda: redis.Redis(), 1, None, (True, True)),  # nothing to stack
        (lambda: redis.Redis(), 3, True, (True, False)),
        (lambda: redis.Redis(retry=Retry(NoBackoff(), 2)), 3, False, (False, True)),
        # a pool without retry settings: redis-py makes no retry, the policy may
        (lambda: redis.Redis(connection_pool=redis.ConnectionPool()), 3, True, (True, True)),
        (lambda: redis.asyncio.Redis(), 3, None, (False, True)),
    ],
)
def test_retry_layer_decision(
    make: Any, max_attempts: int, keep_client_retry: bool | None, expected: tuple[bool, bool]
) -> None:
    """(keep redis-py's retry, the policy may retry) for each kind of client retry setting."""
    assert retry_layer(make(), max_attempts, keep_client_retry) == expected


def test_both_layers_set_to_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An explicit client retry and a retrying policy: one warning naming both settings."""
    with caplog.at_level(logging.WARNING, logger="resilience_otel"):
        retry_layer(redis.Redis(retry=Retry(NoBackoff(), 2)), 3, None)
        retry_layer(redis.Redis(), 3, None)
    (record,) = caplog.records
    assert "2 retries" in record.getMessage()
    assert "max_attempts=3" in record.getMessage()


def test_client_on_a_stand_in_pool_can_be_instrumented() -> None:
    """A client built on a mock pool (as redis-py's own metric tests build one) is accepted."""
    client = redis.Redis(connection_pool=mock.MagicMock())
    assert instrument(client, policy=POLICY) is client


def test_command_on_a_stand_in_connection_runs() -> None:
    """A Mock(spec=Connection) whose socket_timeout is not a number is used as it is."""
    client = instrument(redis.Redis(), policy=POLICY)
    connection = mock.Mock(spec=Connection)
    connection.retry = Retry(NoBackoff(), 0)
    connection.read_response.return_value = b"PONG"
    connection.host, connection.port, connection.db = "localhost", 6379, 0
    with mock.patch.object(client, "connection", connection):
        assert client.execute_command("ECHO", "x") == b"PONG"
    connection.send_command.assert_called_once()


class _BareConnection:
    """A pub/sub connection stand-in with no connect_check_health (as in redis-py's tests)."""

    host, port, db = "localhost", 6379, 0

    def __init__(self) -> None:
        self.retry = Retry(NoBackoff(), 0)
        self.sent: list[tuple[Any, ...]] = []

    def should_reconnect(self) -> bool:
        return False

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(args)


def test_pubsub_on_a_connection_without_connect_check_health() -> None:
    """SUBSCRIBE on a connection that cannot be watched for reconnects still runs."""
    client = instrument(redis.Redis(), policy=POLICY)
    pubsub = client.pubsub()
    connection = _BareConnection()
    pubsub.connection = connection
    pubsub.execute_command("SUBSCRIBE", "news")
    assert connection.sent == [("SUBSCRIBE", "news")]
