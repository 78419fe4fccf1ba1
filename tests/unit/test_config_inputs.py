"""Configuration inputs validated where they enter: maxima, environment values, cross-field
errors naming the variable, and the warning for millisecond values that look like seconds."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import pytest

from resilience_otel import (
    BreakerConfig,
    ConfigError,
    DeadLetterReason,
    HealthConfig,
    Policy,
    RetryConfig,
    RetryOverride,
    load_policies,
    policies_from_mapping,
)
from resilience_otel._config import envvalues as _envvalues

if TYPE_CHECKING:
    from collections.abc import Callable

DAY = 86_400.0


def config_error(build: Callable[[], object]) -> ConfigError:
    """The ConfigError that ``build()`` raises."""
    with pytest.raises(ConfigError) as info:
        build()
    return info.value


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no variable warned about yet (the record is per process)."""
    monkeypatch.setattr(_envvalues, "_warned", set())


# -- maxima ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("CB_RESET_TIMEOUT", "1e18"),
        ("CB_MONITORING_PERIOD", "1e300"),
        ("CB_FAILURE_THRESHOLD", "1" * 23),
        ("CB_TIMEOUT_THRESHOLD", "86400001"),
        ("CB_SLOW_CALL_THRESHOLD", "1e12"),
        ("CB_MINIMUM_CALLS", "1000000001"),
        ("RETRY_TOTAL_TIMEOUT", "1e10"),
        ("RETRY_MAX_DELAY", "1e9"),
    ],
)
def test_env_values_above_the_maxima_are_rejected(var: str, raw: str) -> None:
    """Huge durations and counts from the environment raise ConfigError naming the variable."""
    error = config_error(lambda: Policy.from_env("alpaca", {var: raw}))
    assert f"{var}={raw!r}" in str(error)
    assert error.field == var


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (BreakerConfig, "reset_timeout", DAY + 1),
        (BreakerConfig, "monitoring_period", 1e300),
        (BreakerConfig, "call_timeout", DAY * 2),
        (BreakerConfig, "slow_call_threshold", DAY + 1),
        (BreakerConfig, "failure_threshold", 10**9 + 1),
        (BreakerConfig, "minimum_calls", 10**22),
        (RetryConfig, "total_timeout", DAY + 1),
        (RetryOverride, "base_delay", 3601.0),
        (RetryOverride, "max_delay", DAY + 1),
        (RetryOverride, "multiplier", 101.0),
        (HealthConfig, "check_interval", DAY + 1),
        (HealthConfig, "check_timeout", 3601.0),
        (HealthConfig, "latency_target", 3601.0),
        (HealthConfig, "window", DAY + 1),
        (HealthConfig, "minimum_calls", 10**9 + 1),
    ],
)
def test_config_values_above_the_maxima_are_rejected(cls: type, field: str, value: float) -> None:
    """Every duration and count has a documented maximum; above it, ConfigError names it."""
    error = config_error(lambda: cls(**{field: value}))
    assert error.field == f"{cls.__name__}.{field}"
    assert f"got {value!r}" in str(error)


def test_values_at_the_maxima_are_accepted() -> None:
    """One day and 10**9 are allowed, so the limits cut only typos."""
    breaker = BreakerConfig(
        failure_threshold=10**9,
        monitoring_period=DAY,
        reset_timeout=DAY,
        call_timeout=DAY,
        minimum_calls=10**9,
        slow_call_threshold=DAY,
    )
    assert (breaker.failure_threshold, breaker.reset_timeout) == (10**9, DAY)
    assert RetryConfig(total_timeout=DAY, max_delay=DAY).total_timeout == DAY
    assert HealthConfig(check_interval=DAY, window=DAY).window == DAY


# -- environment values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("CB_FAILURE_THRESHOLD", "\u0663"),  # ARABIC-INDIC DIGIT THREE
        ("CB_FAILURE_THRESHOLD", "5_0"),
        ("RETRY_MAX_ATTEMPTS", "\uff15"),  # FULLWIDTH DIGIT FIVE
        ("CB_RESET_TIMEOUT", "6_000"),
        ("CB_RESET_TIMEOUT", "\u0666\u0660\u0660\u0660\u0660"),
        ("CB_MONITORING_PERIOD", "inf"),
        ("CB_TIMEOUT_THRESHOLD", "0x10"),
        ("RETRY_MULTIPLIER", "1_5"),
    ],
)
def test_env_values_take_ascii_digits_only(var: str, raw: str) -> None:
    """Digits of other scripts and underscores, which int()/float() accept, are refused."""
    error = config_error(lambda: Policy.from_env("alpaca", {var: raw}))
    assert f"{var}={raw!r}" in str(error)
    assert "ASCII" in str(error)
    assert error.field == var


@pytest.mark.parametrize(
    ("raw", "expected"), [("60000", 60.0), ("6e4", 60.0), ("+1500.5", 1.5005), (".5e3", 0.5)]
)
def test_env_plain_ascii_numbers_still_parse(raw: str, expected: float) -> None:
    """Decimal, exponent and sign forms in ASCII keep working."""
    assert Policy.from_env("alpaca", {"CB_RESET_TIMEOUT": raw}).breaker.reset_timeout == expected


@pytest.mark.parametrize("value", [5, 5.0, None, b"5", ["5"]])
def test_env_value_that_is_not_a_string_names_the_variable(value: object) -> None:
    """A non-string environ value raises ConfigError naming the variable, not AttributeError."""
    environ: Any = {"CB_FAILURE_THRESHOLD": value}
    if value is None:
        assert Policy.from_env("q", environ) == Policy(service="q")  # None: unset
        return
    error = config_error(lambda: Policy.from_env("q", environ))
    assert "CB_FAILURE_THRESHOLD" in str(error)
    assert "strings" in str(error)
    assert error.field == "CB_FAILURE_THRESHOLD"


@pytest.mark.parametrize("environ", ["CB_FAILURE_THRESHOLD=5", 5, [("CB_FAILURE_THRESHOLD", "5")]])
def test_environ_that_is_not_a_mapping_is_a_type_error(environ: object) -> None:
    """from_env(environ=...) must be a mapping; the TypeError names the argument."""
    with pytest.raises(TypeError, match="environ must be a mapping"):
        Policy.from_env("q", environ)  # type: ignore[arg-type]


@pytest.mark.parametrize("service", [None, 5, "", "has space"])
def test_from_env_bad_service_names_the_argument(service: object) -> None:
    """Policy.from_env(None) raises ConfigError naming ``service``, not a TypeError from re."""
    error = config_error(lambda: Policy.from_env(service, {}))  # type: ignore[arg-type]
    assert error.field == "service"
    assert repr(service) in str(error)


@pytest.mark.parametrize("config", ["x", None, 5, [("alpaca", {})]])
def test_policies_from_mapping_needs_a_mapping(config: object) -> None:
    """policies_from_mapping("x") raises a TypeError naming ``config``."""
    with pytest.raises(TypeError, match="config must be a mapping"):
        policies_from_mapping(config)  # type: ignore[arg-type]


def test_health_env_value_that_is_not_a_string_names_the_variable() -> None:
    """HealthConfig.from_env checks value types too."""
    error = config_error(lambda: HealthConfig.from_env({"HEALTH_CHECK_INTERVAL": 5000}))  # type: ignore[dict-item]
    assert error.field == "HEALTH_CHECK_INTERVAL"


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("HEALTH_CHECK_INTERVAL", "\u0665000"),
        ("HEALTH_CHECK_INTERVAL", "1e300"),
        ("HEALTH_ALERT_THRESHOLD", "\u0660.9"),  # ARABIC-INDIC ZERO, then ".9"
    ],
)
def test_health_env_values_are_ascii_and_bounded(var: str, raw: str) -> None:
    """HEALTH_* variables follow the same rules as the policy variables."""
    error = config_error(lambda: HealthConfig.from_env({var: raw}))
    assert f"{var}={raw!r}" in str(error)
    assert error.field == var


# -- cross-field errors name the variable -------------------------------------------------------


def test_base_delay_above_the_default_cap_names_retry_base_delay() -> None:
    """RETRY_BASE_DELAY=60000 names itself, its value, and RETRY_MAX_DELAY's (default) value."""
    error = config_error(lambda: Policy.from_env("q", {"RETRY_BASE_DELAY": "60000"}))
    assert error.field == "RETRY_BASE_DELAY"
    assert "RETRY_BASE_DELAY='60000'" in str(error)
    assert "RETRY_MAX_DELAY" in str(error)
    assert "30000" in str(error)
    assert "RetryConfig.max_delay" not in str(error)


def test_base_delay_above_a_set_cap_names_both_values() -> None:
    """With both set, the error names RETRY_BASE_DELAY and quotes RETRY_MAX_DELAY's value."""
    environ = {"RETRY_BASE_DELAY": "5000", "ALPACA_RETRY_MAX_DELAY": "2000"}
    error = config_error(lambda: Policy.from_env("alpaca", environ))
    assert error.field == "RETRY_BASE_DELAY"
    assert "RETRY_BASE_DELAY='5000'" in str(error)
    assert "ALPACA_RETRY_MAX_DELAY='2000'" in str(error)


def test_cap_below_the_default_base_delay_names_retry_max_delay() -> None:
    """RETRY_MAX_DELAY=500 alone is below the default base delay (1000 ms): it is named."""
    error = config_error(lambda: Policy.from_env("q", {"RETRY_MAX_DELAY": "500"}))
    assert error.field == "RETRY_MAX_DELAY"
    assert "RETRY_MAX_DELAY='500'" in str(error)
    assert "RETRY_BASE_DELAY" in str(error)
    assert "1000" in str(error)


# -- small millisecond values warn once ---------------------------------------------------------


def warnings_about(caplog: pytest.LogCaptureFixture, var: str) -> list[logging.LogRecord]:
    """Warning records that name ``var``."""
    return [r for r in caplog.records if r.levelno == logging.WARNING and var in r.getMessage()]


def test_reset_timeout_of_60_ms_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """CB_RESET_TIMEOUT=60 (60 ms, surely meant as 60 s) logs one warning per process."""
    caplog.set_level(logging.WARNING, "resilience_otel.config")
    for _ in range(3):
        policy = Policy.from_env("q", {"CB_RESET_TIMEOUT": "60"})
    assert policy.breaker.reset_timeout == 0.06
    records = warnings_about(caplog, "CB_RESET_TIMEOUT")
    assert len(records) == 1
    assert "milliseconds" in records[0].getMessage()
    assert "60000" in records[0].getMessage()


def test_each_small_variable_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """Two suspicious variables give one warning each; a prefixed one is its own variable."""
    caplog.set_level(logging.WARNING, "resilience_otel.config")
    environ = {"CB_MONITORING_PERIOD": "30", "ALPACA_CB_TIMEOUT_THRESHOLD": "5"}
    Policy.from_env("alpaca", environ)
    Policy.from_env("alpaca", environ)
    assert len(warnings_about(caplog, "CB_MONITORING_PERIOD")) == 1
    assert len(warnings_about(caplog, "ALPACA_CB_TIMEOUT_THRESHOLD")) == 1


@pytest.mark.parametrize(
    "environ",
    [
        {"CB_RESET_TIMEOUT": "100"},
        {"CB_TIMEOUT_THRESHOLD": "0"},
        {"RETRY_TOTAL_TIMEOUT": "0"},
        {"RETRY_BASE_DELAY": "0"},
        {"RETRY_BASE_DELAY": "10"},
        {"CB_SLOW_CALL_THRESHOLD": "50"},
        {"CB_MONITORING_PERIOD": "60000"},
    ],
)
def test_plausible_values_do_not_warn(
    environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """0 (off), values at the thresholds and ordinary values log nothing."""
    caplog.set_level(logging.WARNING, "resilience_otel.config")
    Policy.from_env("q", environ)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_health_check_interval_of_30_ms_warns(caplog: pytest.LogCaptureFixture) -> None:
    """HEALTH_CHECK_INTERVAL=30 (30 ms) warns like the policy variables."""
    caplog.set_level(logging.WARNING, "resilience_otel.config")
    assert math.isclose(HealthConfig.from_env({"HEALTH_CHECK_INTERVAL": "30"}).check_interval, 0.03)
    assert len(warnings_about(caplog, "HEALTH_CHECK_INTERVAL")) == 1


def test_dead_letter_on_takes_one_reason_as_a_string() -> None:
    """dead_letter_on="circuit_open" means that one reason, as retry_on takes one class."""
    policy = Policy(service="q", dead_letter_on="circuit_open")  # type: ignore[arg-type]
    assert policy.dead_letter_on == frozenset({DeadLetterReason.CIRCUIT_OPEN})


@pytest.mark.parametrize("path", [None, 5, ["a.toml"]])
def test_load_policies_needs_a_path(path: object) -> None:
    """load_policies(None) raises a TypeError naming the argument."""
    with pytest.raises(TypeError, match=r"load_policies\(path=...\) must be a file path"):
        load_policies(path)  # type: ignore[arg-type]


def test_slow_call_rate_alone_names_its_variable() -> None:
    """CB_SLOW_CALL_RATE_THRESHOLD without CB_SLOW_CALL_THRESHOLD names both variables."""
    environ = {"ALPACA_CB_SLOW_CALL_RATE_THRESHOLD": "0.5"}
    error = config_error(lambda: Policy.from_env("alpaca", environ))
    assert error.field == "ALPACA_CB_SLOW_CALL_RATE_THRESHOLD"
    assert "ALPACA_CB_SLOW_CALL_RATE_THRESHOLD='0.5'" in str(error)
    assert "CB_SLOW_CALL_THRESHOLD" in str(error)
