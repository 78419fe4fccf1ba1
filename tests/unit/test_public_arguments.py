"""Public entry points outside the clients refuse bad arguments at once, naming them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    CircuitBreaker,
    ConfigError,
    Policy,
    ResilientTransport,
)
from resilience_otel.asyncpg import run_in_transaction
from resilience_otel.prometheus import setup_prometheus
from resilience_otel.redis import instrument
from resilience_otel.testing import FakeClock


def test_breaker_without_a_config_is_refused() -> None:
    """CircuitBreaker(None) names its config argument instead of failing on first use."""
    with pytest.raises(TypeError, match=r"CircuitBreaker\(config=\.\.\.\) must be a BreakerConfig"):
        CircuitBreaker(None, name="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [5, "", None])
def test_breaker_name_must_be_a_string(name: object) -> None:
    """A breaker's name is a label value: a non-empty string."""
    with pytest.raises(TypeError, match=r"CircuitBreaker\(name=\.\.\.\)"):
        CircuitBreaker(BreakerConfig(), name=name)  # type: ignore[arg-type]


def test_setup_prometheus_flag_must_be_a_bool() -> None:
    """set_global="no" would be truthy: it is refused."""
    with pytest.raises(ConfigError, match=r"set_global=\.\.\.\) must be True or False, got 'no'"):
        setup_prometheus(set_global="no")  # type: ignore[arg-type]


def test_setup_prometheus_port_range() -> None:
    """A port outside 0..65535 is named before any socket is opened."""
    with pytest.raises(ConfigError, match=r"port=\.\.\.\) must be between 0 and 65535"):
        setup_prometheus(port=70000, set_global=False)


def test_fake_clock_start_must_be_a_number() -> None:
    """FakeClock("x") fails at construction, not at the first reading."""
    with pytest.raises(ConfigError, match=r"FakeClock\(start=\.\.\.\) must be a number"):
        FakeClock("x")  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"readonly": "yes"}, r"readonly=\.\.\.\) must be True or False"),
        ({"deferrable": 1}, r"deferrable=\.\.\.\) must be True or False"),
    ],
)
async def test_run_in_transaction_flags(kwargs: dict[str, object], match: str) -> None:
    """Transaction flags are checked before a connection is taken."""

    async def work(connection: object) -> None:
        return None

    with pytest.raises(ConfigError, match=match):
        await run_in_transaction(object(), work, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_run_in_transaction_needs_a_callable() -> None:
    """fn must be callable."""
    with pytest.raises(TypeError, match=r"fn=\.\.\.\) must be callable"):
        await run_in_transaction(object(), "SELECT 1")  # type: ignore[arg-type]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("build", "owner"),
    [
        (
            lambda dl: ResilientTransport(policy=Policy(service="x"), dead_letters=dl),
            "ResilientTransport",
        ),
        (
            lambda dl: AsyncResilientTransport(policy=Policy(service="x"), dead_letters=dl),
            "AsyncResilientTransport",
        ),
        (
            lambda dl: instrument(redis.Redis(), policy=Policy(service="x"), dead_letters=dl),
            "instrument",
        ),
    ],
)
def test_dead_letters_that_are_not_a_queue_fail_at_construction(
    build: Callable[[object], object], owner: str
) -> None:
    """dead_letters="queue" is named at construction, not on the first failed call."""
    with pytest.raises(ConfigError, match=rf"{owner}\(dead_letters=\.\.\.\) must be a dead-letter"):
        build("queue")
