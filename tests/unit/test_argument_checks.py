"""Arguments of public constructors and functions are checked where they enter: a wrong one
raises ConfigError or TypeError naming it, never an AttributeError deep inside, and never
becomes a silently wrong setting (a string split into letters, a truthy "no")."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis
import redis.asyncio
from opentelemetry.metrics import NoOpMeterProvider

from resilience_otel import (
    AsyncResilientTransport,
    ConfigError,
    HealthConfig,
    HealthMonitor,
    Policy,
    ResilientTransport,
)
from resilience_otel._core.validate import check_bool, check_names, check_type
from resilience_otel.asyncpg import wrap
from resilience_otel.health import http_check, postgres_check, redis_check
from resilience_otel.redis import RedisBreakerStore, instrument

if TYPE_CHECKING:
    from collections.abc import Callable

POLICY = Policy(service="quotes")
TRANSPORTS = [ResilientTransport, AsyncResilientTransport]


def config_error(build: Callable[[], object]) -> ConfigError:
    """The ConfigError that ``build()`` raises."""
    with pytest.raises(ConfigError) as info:
        build()
    return info.value


def monitor() -> HealthMonitor:
    """A monitor whose gauges go nowhere."""
    return HealthMonitor(meter_provider=NoOpMeterProvider())


def ok_check() -> bool:
    """A check that always passes."""
    return True


# -- the shared validators ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_check_bool_refuses_everything_but_bools(value: object) -> None:
    """ "no" is truthy and 0/1 are ambiguous: only True and False pass."""
    error = config_error(lambda: check_bool("flag", value))
    assert "flag must be True or False" in str(error)
    assert repr(value) in str(error)


@pytest.mark.parametrize("value", ["SET", b"SET", 5, None])
def test_check_names_refuses_a_single_string(value: object) -> None:
    """A string is not split into letters; non-iterables are refused too."""
    error = config_error(lambda: check_names("names", value))
    assert error.field == "names"
    assert repr(value) in str(error)


@pytest.mark.parametrize("value", [["SET", ""], ["SET", 5], [None]])
def test_check_names_refuses_non_names_inside(value: object) -> None:
    """Every item must be a non-empty string."""
    assert config_error(lambda: check_names("names", value)).field == "names"


def test_check_names_accepts_any_collection_of_names() -> None:
    """Sets, lists, tuples and generators of names give the same frozenset."""
    expected = frozenset({"SET", "DEL"})
    for value in ({"SET", "DEL"}, ["SET", "DEL"], ("DEL", "SET"), (n for n in ("SET", "DEL"))):
        assert check_names("names", value) == expected


def test_check_type_names_the_argument_and_the_types() -> None:
    """The TypeError names the argument, what was expected and what was given."""
    with pytest.raises(TypeError, match=r"arg must be an int or a str, got 2\.5"):
        check_type("arg", 2.5, (int, str))


# -- httpx transports ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize("policy", [None, "quotes", {"service": "quotes"}])
def test_transport_needs_a_policy(cls: type, policy: object) -> None:
    """ResilientTransport(policy=None) raises TypeError naming policy, not AttributeError."""
    with pytest.raises(TypeError, match=rf"{cls.__name__}\(policy=...\) must be a Policy"):
        cls(policy=policy)


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize("name", ["keep_payload", "per_host", "read_body"])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_transport_flags_must_be_bools(cls: type, name: str, value: object) -> None:
    """keep_payload="no" is refused instead of being truthy."""
    error = config_error(lambda: cls(policy=POLICY, **{name: value}))
    assert f"{cls.__name__}({name}=...)" in str(error)
    assert repr(value) in str(error)


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize("value", [0, -1, 10**6, 2.5, "5", True])
def test_transport_max_hosts_must_be_a_positive_bounded_int(cls: type, value: object) -> None:
    """max_hosts <= 0 (every host silently sharing one breaker) is refused; so is a huge one."""
    error = config_error(lambda: cls(policy=POLICY, per_host=True, max_hosts=value))
    assert f"{cls.__name__}(max_hosts=...)" in str(error)
    assert f"got {value!r}" in str(error)


@pytest.mark.parametrize(
    ("cls", "wrong"),
    [(ResilientTransport, httpx.AsyncHTTPTransport()), (AsyncResilientTransport, "transport")],
)
def test_transport_must_be_of_its_own_kind(cls: type, wrong: object) -> None:
    """A sync transport given an async inner transport (or a string) fails at construction."""
    with pytest.raises(TypeError, match=rf"{cls.__name__}\(transport=...\)"):
        cls(wrong, policy=POLICY)


@pytest.mark.parametrize("cls", TRANSPORTS)
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("breaker", "quotes", "breaker=...) must be a CircuitBreaker"),
        ("observers", monitor, "observers=...) must be a list of Observer"),
        ("observers", ["monitor"], "observers=...) item must be an Observer"),
        ("classifier", "http", "classifier=...) must be callable"),
        ("clock", 5, "clock=...) must be a Clock"),
        ("rng", 42, "rng=...) must be a Random"),
    ],
)
def test_transport_object_arguments_are_type_checked(
    cls: type, name: str, value: object, message: str
) -> None:
    """Other object arguments of the wrong kind raise TypeError naming them."""
    with pytest.raises(TypeError, match=re.escape(f"{cls.__name__}({message}")):
        cls(policy=POLICY, **{name: value})


def test_transport_still_takes_an_iterator_of_observers() -> None:
    """A generator of observers is still accepted (and not used up by the check)."""
    watcher = monitor()
    transport = ResilientTransport(policy=POLICY, observers=(o for o in [watcher]))
    assert watcher in transport._shell.engine.observers


# -- redis.instrument ---------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["x", None, redis.ConnectionPool()])
def test_instrument_needs_a_redis_client(client: object) -> None:
    """instrument("x") raises TypeError naming client, not AttributeError on connection_pool."""
    with pytest.raises(TypeError, match=r"instrument\(client=...\) must be a redis.Redis"):
        instrument(client, policy=POLICY)  # type: ignore[type-var]


def test_instrument_needs_a_policy() -> None:
    """instrument(policy=None) raises TypeError naming policy."""
    with pytest.raises(TypeError, match=r"instrument\(policy=...\) must be a Policy"):
        instrument(redis.Redis(), policy=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("client_cls", [redis.Redis, redis.asyncio.Redis])
def test_instrument_refuses_a_single_command_name(client_cls: Callable[[], Any]) -> None:
    """idempotent_commands="SET" is refused instead of marking S, E and T idempotent."""
    client = client_cls()
    error = config_error(lambda: instrument(client, policy=POLICY, idempotent_commands="SET"))
    assert "instrument(idempotent_commands=...)" in str(error)
    assert "'SET'" in str(error)
    assert getattr(client, "_resilience_guard", None) is None  # nothing was patched


def test_instrument_keep_client_retry_must_be_a_bool() -> None:
    """keep_client_retry="no" is refused."""
    error = config_error(
        lambda: instrument(redis.Redis(), policy=POLICY, keep_client_retry="no")  # type: ignore[arg-type]
    )
    assert "instrument(keep_client_retry=...)" in str(error)


def test_instrument_still_takes_a_set_of_commands() -> None:
    """A set of names marks those commands (upper-cased) idempotent."""
    client = instrument(redis.Redis(), policy=POLICY, idempotent_commands={"set", "DEL"})
    assert {"SET", "DEL"} <= client._resilience_guard.safe  # type: ignore[attr-defined]


# -- asyncpg.wrap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, "postgresql://localhost/test", object()])
def test_wrap_needs_a_connection_or_pool(target: object) -> None:
    """wrap(None) raises TypeError naming target, not AttributeError on _addr."""
    with pytest.raises(TypeError, match=r"wrap\(target=...\) must be an asyncpg.Connection"):
        wrap(target, policy=POLICY)  # type: ignore[arg-type]


# -- HealthMonitor --------------------------------------------------------------------------------


@pytest.mark.parametrize("optional", ["cache", b"cache", 5])
def test_monitor_optional_refuses_a_single_string(optional: object) -> None:
    """HealthMonitor(optional="cache") is refused instead of becoming {"c", "a", "h", "e"}."""
    error = config_error(lambda: HealthMonitor(optional=optional))  # type: ignore[arg-type]
    assert "HealthMonitor(optional=...)" in str(error)


def test_monitor_optional_takes_a_set() -> None:
    """A set (or list) of service names is kept as given."""
    assert HealthMonitor(optional=["cache", "search"]).optional == {"cache", "search"}


@pytest.mark.parametrize("config", [{"check_interval": 5}, 5, "HealthConfig()"])
def test_monitor_config_must_be_a_health_config(config: object) -> None:
    """HealthMonitor(config={...}) raises TypeError naming config."""
    with pytest.raises(TypeError, match=r"HealthMonitor\(config=...\) must be a HealthConfig"):
        HealthMonitor(config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("interval", "5"),
        ("interval", 0),
        ("interval", -1.0),
        ("interval", math.nan),
        ("interval", math.inf),
        ("interval", 86_401.0),
        ("interval", True),
        ("timeout", "1"),
        ("timeout", 0),
        ("timeout", math.nan),
    ],
)
def test_add_check_interval_and_timeout_are_validated(name: str, value: object) -> None:
    """add_check(interval="5") raises ConfigError naming the argument, before anything runs."""
    watcher = monitor()
    error = config_error(lambda: watcher.add_check("quotes", ok_check, **{name: value}))
    assert f"add_check({name}=...)" in str(error)
    assert repr(value) in str(error)
    assert watcher.services() == []  # nothing was registered


@pytest.mark.parametrize("service", [None, "", "has space", 5])
def test_add_check_service_is_validated(service: object) -> None:
    """The service name follows Policy's rule (it becomes a label)."""
    error = config_error(lambda: monitor().add_check(service, ok_check))  # type: ignore[arg-type]
    assert "add_check(service=...)" in str(error)


@pytest.mark.parametrize("check", [None, "http://quotes/health", True])
def test_add_check_needs_a_callable(check: object) -> None:
    """A check that cannot be called raises TypeError naming it."""
    with pytest.raises(TypeError, match=r"add_check\(check=...\) must be callable"):
        monitor().add_check("quotes", check)  # type: ignore[arg-type]


def test_add_check_defaults_come_from_the_config() -> None:
    """Without interval/timeout the config's values apply; explicit ones are kept."""
    watcher = HealthMonitor(HealthConfig(check_interval=7.0, check_timeout=2.0))
    watcher.add_check("quotes", ok_check)
    watcher.add_check("search", ok_check, interval=1, timeout=0.5)
    intervals = {name: watcher._services[name].checks[0][1:] for name in ("quotes", "search")}
    assert intervals == {"quotes": (7.0, 2.0), "search": (1.0, 0.5)}


# -- RedisBreakerStore ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sync_interval", -0.1),
        ("sync_interval", math.nan),
        ("sync_interval", math.inf),
        ("sync_interval", "0.1"),
        ("recheck_interval", 0),
        ("recheck_interval", -1.0),
        ("recheck_interval", math.nan),
        ("prefix", ""),
        ("prefix", None),
    ],
)
def test_breaker_store_settings_are_validated(name: str, value: object) -> None:
    """RedisBreakerStore(sync_interval=-1 or NaN) raises ConfigError naming the argument."""
    error = config_error(lambda: RedisBreakerStore(redis.Redis(), **{name: value}))
    assert f"RedisBreakerStore({name}=...)" in str(error)


@pytest.mark.parametrize("client", [redis.asyncio.Redis(), "redis://localhost", None])
def test_breaker_store_needs_a_sync_redis_client(client: object) -> None:
    """The store runs its script synchronously: an async client is refused up front."""
    with pytest.raises(TypeError, match=r"RedisBreakerStore\(client=...\) must be a sync"):
        RedisBreakerStore(client)  # type: ignore[arg-type]


# -- built-in checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"url": "quotes.internal/health"}, "url"),
        ({"url": None}, "url"),
        ({"url": "http://q/health", "expect": 200}, "expect"),
        ({"url": "http://q/health", "expect": "200"}, "expect"),
        ({"url": "http://q/health", "expect": [200, 700]}, "expect"),
        ({"url": "http://q/health", "expect": ["200"]}, "expect"),
    ],
)
def test_http_check_arguments_are_validated(kwargs: dict[str, Any], name: str) -> None:
    """A URL without a scheme or expect=200 (not a set) raises ConfigError at once."""
    error = config_error(lambda: http_check(**kwargs))
    assert f"http_check({name}=...)" in str(error)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: redis_check("redis://localhost"), "redis_check(client=...)"),
        (lambda: redis_check(None), "redis_check(client=...)"),
        (lambda: postgres_check(None), "postgres_check(target=...)"),
        (lambda: postgres_check(5432), "postgres_check(target=...)"),
    ],
)
def test_client_checks_need_a_client(build: Callable[[], object], name: str) -> None:
    """redis_check("x") raises TypeError naming the argument when built, not at each run."""
    with pytest.raises(TypeError, match=re.escape(name)):
        build()


def test_record_check_ok_must_be_a_bool() -> None:
    """record_check(ok="no") is refused instead of counting as a pass."""
    watcher = monitor()
    error = config_error(lambda: watcher.record_check("quotes", "no"))  # type: ignore[arg-type]
    assert "record_check(ok=...)" in str(error)
    assert watcher.status("quotes").consecutive_failures == 0
