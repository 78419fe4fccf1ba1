"""Frozen, validated configuration: dataclasses, environment variables, mappings and TOML."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import pytest

from resilience_otel import (
    BreakerConfig,
    ConfigError,
    DeadLetterReason,
    ErrorClass,
    FailureKind,
    Jitter,
    Policy,
    ResilienceError,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
    load_policies,
    policies_from_mapping,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

NAN, INF = math.nan, math.inf


def config_error(build: Callable[[], object]) -> ConfigError:
    """The ConfigError that ``build()`` raises."""
    with pytest.raises(ConfigError) as info:
        build()
    return info.value


# -- defaults and coercion ---------------------------------------------------------------


def test_breaker_defaults_match_the_design() -> None:
    """BreakerConfig defaults: 5 failures in 60 s, 60 s reset, 30 s call timeout, 1 probe."""
    config = BreakerConfig()
    assert (
        config.failure_threshold,
        config.monitoring_period,
        config.reset_timeout,
        config.call_timeout,
        config.half_open_max_calls,
        config.success_threshold,
        config.failure_rate_threshold,
        config.slow_call_threshold,
    ) == (5, 60.0, 60.0, 30.0, 1, 1, None, None)


def test_retry_defaults_match_the_design() -> None:
    """RetryConfig defaults: 3 attempts, 1 s to 30 s doubling, full jitter, transient and
    failover."""
    config = RetryConfig()
    assert (
        config.max_attempts,
        config.base_delay,
        config.max_delay,
        config.multiplier,
        config.jitter,
        config.retry_on,
        config.budget,
        dict(config.by_kind),
    ) == (
        3,
        1.0,
        30.0,
        2.0,
        Jitter.FULL,
        frozenset({ErrorClass.TRANSIENT, ErrorClass.FAILOVER}),
        RetryBudgetConfig(),
        {},
    )


def test_int_durations_become_floats() -> None:
    """Durations given as ints are stored as floats."""
    config = BreakerConfig(reset_timeout=5, monitoring_period=10, call_timeout=2)
    assert all(
        type(v) is float
        for v in (config.reset_timeout, config.monitoring_period, config.call_timeout)
    )


@pytest.mark.parametrize("jitter", list(Jitter))
def test_jitter_strings_coerce_to_jitter(jitter: Jitter) -> None:
    """A jitter given as its string value ("full") becomes the Jitter member."""
    assert RetryConfig(jitter=jitter.value).jitter is jitter  # type: ignore[arg-type]


def test_retry_on_single_string_coerces_to_a_set() -> None:
    """retry_on="transient" means {ErrorClass.TRANSIENT}."""
    config = RetryConfig(retry_on="transient")  # type: ignore[arg-type]
    assert config.retry_on == frozenset({ErrorClass.TRANSIENT})


def test_retry_on_list_of_strings_coerces_to_a_frozenset() -> None:
    """A list of error class names becomes a frozenset of ErrorClass."""
    config = RetryConfig(retry_on=["transient", "critical"])  # type: ignore[arg-type]
    assert config.retry_on == frozenset({ErrorClass.TRANSIENT, ErrorClass.CRITICAL})
    assert isinstance(config.retry_on, frozenset)


def test_by_kind_string_keys_coerce_to_failure_kind() -> None:
    """by_kind keys given as strings become FailureKind members."""
    config = RetryConfig(by_kind={"rate_limited": RetryOverride(max_attempts=6)})  # type: ignore[dict-item]
    assert list(config.by_kind) == [FailureKind.RATE_LIMITED]


def test_by_kind_is_read_only() -> None:
    """The stored by_kind mapping cannot be modified after construction."""
    source = {FailureKind.TIMEOUT: RetryOverride(max_attempts=2)}
    config = RetryConfig(by_kind=source)
    source[FailureKind.OTHER] = RetryOverride()
    with pytest.raises(TypeError):
        config.by_kind[FailureKind.OTHER] = RetryOverride()  # type: ignore[index]
    assert list(config.by_kind) == [FailureKind.TIMEOUT]


def test_dead_letter_on_strings_coerce_to_reasons() -> None:
    """Policy.dead_letter_on accepts reason strings and stores DeadLetterReason members."""
    policy = Policy(service="alpaca", dead_letter_on=["critical"])  # type: ignore[arg-type]
    assert policy.dead_letter_on == frozenset({DeadLetterReason.CRITICAL})


@pytest.mark.parametrize(
    "build",
    [
        lambda: BreakerConfig(failure_rate_threshold=1.0, minimum_calls=1, window_buckets=1000),
        lambda: BreakerConfig(half_open_max_calls=10_000, success_threshold=10_000),
        lambda: BreakerConfig(call_timeout=None, slow_call_threshold=0.001),
        lambda: BreakerConfig(slow_call_threshold=1.0, slow_call_rate_threshold=1.0),
        lambda: RetryConfig(max_attempts=1, base_delay=0.0, max_delay=0.0, multiplier=1.0),
        lambda: RetryConfig(max_attempts=100, base_delay=3600.0, max_delay=86_400.0),
        lambda: RetryConfig(budget=None, retry_on=frozenset(), total_timeout=None),
        lambda: RetryBudgetConfig(ratio=0.0, min_retries_per_second=0.0, window=3600.0),
        lambda: RetryOverride(max_attempts=1, base_delay=0.0, max_delay=0.0, multiplier=1.0),
        lambda: Policy(service="a" * 64),
        lambda: Policy(service="Alpaca-v2.eu_1"),
    ],
)
def test_boundary_values_are_accepted(build: Callable[[], object]) -> None:
    """Values at the edges of every allowed range construct without error."""
    build()


# -- frozen, replace ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "name", "value"),
    [
        (BreakerConfig(), "failure_threshold", 9),
        (RetryConfig(), "max_attempts", 9),
        (RetryOverride(), "max_attempts", 9),
        (RetryBudgetConfig(), "ratio", 0.5),
        (Policy(service="alpaca"), "service", "other"),
    ],
    ids=lambda v: type(v).__name__ if dataclasses.is_dataclass(v) else None,
)
def test_configs_are_frozen(config: object, name: str, value: object) -> None:
    """Assigning to a field of any config raises FrozenInstanceError."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, name, value)


def test_configs_are_keyword_only() -> None:
    """Positional arguments are refused, so fields cannot be swapped by mistake."""
    with pytest.raises(TypeError):
        BreakerConfig(5)  # type: ignore[call-arg]


def test_replace_derives_a_variant() -> None:
    """dataclasses.replace builds a changed copy and leaves the original alone."""
    original = BreakerConfig()
    variant = dataclasses.replace(original, failure_threshold=7)
    assert (variant.failure_threshold, original.failure_threshold) == (7, 5)


def test_replace_revalidates() -> None:
    """dataclasses.replace with a bad value raises ConfigError."""
    error = config_error(lambda: dataclasses.replace(RetryConfig(), max_attempts=0))
    assert "max_attempts" in str(error)


def test_replace_keeps_coerced_values_valid() -> None:
    """Replacing one field of a config built from strings keeps the coerced values."""
    config = RetryConfig(jitter="equal", retry_on="critical")  # type: ignore[arg-type]
    variant = dataclasses.replace(config, max_attempts=5)
    assert (variant.jitter, variant.retry_on) == (Jitter.EQUAL, frozenset({ErrorClass.CRITICAL}))


# -- validation: every field -------------------------------------------------------------


def _bad(cls: type, field: str, value: object, **others: Any) -> Any:
    return pytest.param(cls, field, value, others, id=f"{cls.__name__}.{field}={value!r}")


BAD_VALUES = [
    *(_bad(BreakerConfig, "failure_threshold", v) for v in (0, -1, True, 2.5, "5", None)),
    *(_bad(BreakerConfig, "monitoring_period", v) for v in (0, -1.0, NAN, INF, True, "60")),
    *(_bad(BreakerConfig, "reset_timeout", v) for v in (0, -0.1, NAN, INF, False)),
    *(_bad(BreakerConfig, "call_timeout", v) for v in (0, -1.0, NAN, INF, True)),
    *(_bad(BreakerConfig, "half_open_max_calls", v) for v in (0, 10_001, True, 1.0)),
    *(_bad(BreakerConfig, "success_threshold", v) for v in (0, 10_001, False)),
    *(_bad(BreakerConfig, "failure_rate_threshold", v) for v in (0, -0.1, 1.01, NAN, True)),
    *(_bad(BreakerConfig, "minimum_calls", v) for v in (0, -3, True)),
    *(_bad(BreakerConfig, "slow_call_threshold", v) for v in (0, -1.0, NAN, INF)),
    *(
        _bad(BreakerConfig, "slow_call_rate_threshold", v, slow_call_threshold=1.0)
        for v in (0, 1.5, NAN, True)
    ),
    *(_bad(BreakerConfig, "window_buckets", v) for v in (0, 1001, True)),
    *(_bad(RetryConfig, "max_attempts", v) for v in (0, 101, True, 2.0, None)),
    *(_bad(RetryConfig, "base_delay", v) for v in (-1.0, NAN, INF, 3601.0, True)),
    *(_bad(RetryConfig, "max_delay", v) for v in (-1.0, NAN, 86_401.0, True)),
    *(_bad(RetryConfig, "multiplier", v) for v in (0.5, 0, 101, NAN, True)),
    *(_bad(RetryConfig, "max_retry_after", v) for v in (-1.0, NAN, INF, True)),
    *(_bad(RetryConfig, "total_timeout", v) for v in (0, -1.0, NAN, INF)),
    *(_bad(RetryConfig, "jitter", v) for v in ("fast", "FULL", 3)),
    _bad(RetryConfig, "retry_on", 42),
    _bad(RetryConfig, "budget", {"ratio": 0.1}),
    _bad(RetryConfig, "budget", True),
    _bad(RetryConfig, "by_kind", [("timeout", RetryOverride())]),
    _bad(RetryConfig, "respect_retry_after", "no"),
    _bad(RetryConfig, "respect_retry_after", 1),
    *(_bad(RetryOverride, "max_attempts", v) for v in (0, 101, True)),
    *(_bad(RetryOverride, "base_delay", v) for v in (-1.0, NAN, INF)),
    *(_bad(RetryOverride, "max_delay", v) for v in (-1.0, INF, "1")),
    *(_bad(RetryOverride, "multiplier", v) for v in (0.5, NAN, False)),
    *(_bad(RetryBudgetConfig, "ratio", v) for v in (-0.1, 100.5, NAN, True)),
    *(_bad(RetryBudgetConfig, "min_retries_per_second", v) for v in (-1.0, 1e7, INF)),
    *(_bad(RetryBudgetConfig, "window", v) for v in (0, -1.0, 3601.0, NAN)),
    *(
        _bad(Policy, "service", v)
        for v in ("", "has space", "a" * 65, "1abc", "-x", "alpaca\n", "é", None, 5)
    ),
    _bad(Policy, "breaker", {}, service="alpaca"),
    _bad(Policy, "retry", None, service="alpaca"),
    _bad(Policy, "dead_letter_on", 5, service="alpaca"),
    _bad(Policy, "telemetry", "yes", service="alpaca"),
]


@pytest.mark.parametrize(("cls", "field", "value", "others"), BAD_VALUES)
def test_bad_value_raises_config_error_naming_field_and_value(
    cls: type, field: str, value: object, others: dict[str, Any]
) -> None:
    """A bad value raises ConfigError whose message and ``field`` name the field and value."""
    error = config_error(lambda: cls(**others, **{field: value}))
    assert f"{cls.__name__}.{field}" in str(error)
    assert f"got {value!r}" in str(error)
    assert error.field == f"{cls.__name__}.{field}"


def test_config_error_is_a_value_error_and_resilience_error() -> None:
    """ConfigError can be caught as ValueError and as ResilienceError."""
    error = config_error(lambda: BreakerConfig(failure_threshold=0))
    assert isinstance(error, ValueError)
    assert isinstance(error, ResilienceError)


@pytest.mark.parametrize(
    ("build", "allowed"),
    [
        (lambda: BreakerConfig(half_open_max_calls=0), "between 1 and 10000"),
        (lambda: BreakerConfig(failure_threshold=0), "between 1 and 1000000000"),
        (lambda: BreakerConfig(reset_timeout=0), "> 0.0"),
        (lambda: RetryConfig(multiplier=0.5), ">= 1.0 and <= 100.0"),
        (lambda: RetryConfig(jitter="fast"), "full, equal, decorrelated, none"),  # type: ignore[arg-type]
    ],
)
def test_config_error_names_the_allowed_range(build: Callable[[], object], allowed: str) -> None:
    """The message says what would have been accepted."""
    assert allowed in str(config_error(build))


def test_max_delay_below_base_delay_is_rejected() -> None:
    """RetryConfig.max_delay < base_delay raises ConfigError naming both values."""
    error = config_error(lambda: RetryConfig(base_delay=5.0, max_delay=1.0))
    assert "RetryConfig.max_delay" in str(error)
    assert "got 1.0" in str(error)
    assert "5.0" in str(error)


def test_override_max_delay_below_its_base_delay_is_rejected() -> None:
    """A RetryOverride whose own max_delay < base_delay raises ConfigError like RetryConfig."""
    error = config_error(lambda: RetryOverride(base_delay=10.0, max_delay=1.0))
    assert "RetryOverride.max_delay" in str(error)
    assert "got 1.0" in str(error)


def test_slow_rate_without_slow_threshold_is_rejected() -> None:
    """slow_call_rate_threshold without slow_call_threshold raises, naming both."""
    error = config_error(lambda: BreakerConfig(slow_call_rate_threshold=0.5))
    assert "slow_call_rate_threshold=0.5" in str(error)
    assert "slow_call_threshold" in str(error)


@pytest.mark.parametrize("retry_on", ["sometimes", ["transient", "bogus"]])
def test_bad_retry_on_is_rejected(retry_on: object) -> None:
    """An unknown error class in retry_on raises ConfigError naming it and the allowed ones."""
    error = config_error(lambda: RetryConfig(retry_on=retry_on))  # type: ignore[arg-type]
    message = str(error)
    assert "RetryConfig.retry_on" in message
    assert ("sometimes" in message) or ("bogus" in message)
    assert "transient, permanent, critical" in message


def test_bad_by_kind_key_is_rejected() -> None:
    """An unknown failure kind as a by_kind key raises ConfigError naming the key."""
    error = config_error(lambda: RetryConfig(by_kind={"slow": RetryOverride()}))  # type: ignore[dict-item]
    assert "RetryConfig.by_kind" in str(error)
    assert "'slow'" in str(error)


def test_by_kind_value_must_be_an_override() -> None:
    """A by_kind value that is not a RetryOverride raises ConfigError naming the kind."""
    error = config_error(
        lambda: RetryConfig(by_kind={FailureKind.TIMEOUT: {"max_attempts": 2}})  # type: ignore[dict-item]
    )
    assert "RetryConfig.by_kind['timeout']" in str(error)
    assert "{'max_attempts': 2}" in str(error)


def test_bad_dead_letter_reason_is_rejected() -> None:
    """An unknown dead-letter reason raises ConfigError naming the value."""
    error = config_error(lambda: Policy(service="alpaca", dead_letter_on=["nope"]))  # type: ignore[arg-type]
    assert "Policy.dead_letter_on" in str(error)
    assert "'nope'" in str(error)


# -- Policy.from_env ---------------------------------------------------------------------


def test_from_env_with_empty_environ_gives_defaults() -> None:
    """With no variables set, from_env equals Policy(service=...) with defaults."""
    assert Policy.from_env("alpaca", {}) == Policy(service="alpaca")


@pytest.mark.parametrize(
    ("var", "raw", "section", "field", "expected"),
    [
        ("CB_FAILURE_THRESHOLD", "7", "breaker", "failure_threshold", 7),
        ("CB_TIMEOUT_THRESHOLD", "2500", "breaker", "call_timeout", 2.5),
        ("CB_RESET_TIMEOUT", "1500", "breaker", "reset_timeout", 1.5),
        ("CB_MONITORING_PERIOD", "120000", "breaker", "monitoring_period", 120.0),
        ("CB_HALF_OPEN_MAX_CALLS", "3", "breaker", "half_open_max_calls", 3),
        ("CB_SUCCESS_THRESHOLD", "2", "breaker", "success_threshold", 2),
        ("CB_FAILURE_RATE_THRESHOLD", "0.5", "breaker", "failure_rate_threshold", 0.5),
        ("CB_MINIMUM_CALLS", "20", "breaker", "minimum_calls", 20),
        ("CB_SLOW_CALL_THRESHOLD", "800", "breaker", "slow_call_threshold", 0.8),
        ("RETRY_MAX_ATTEMPTS", "5", "retry", "max_attempts", 5),
        ("RETRY_BASE_DELAY", "250", "retry", "base_delay", 0.25),
        ("RETRY_MAX_DELAY", "10000", "retry", "max_delay", 10.0),
        ("RETRY_MULTIPLIER", "1.5", "retry", "multiplier", 1.5),
        ("RETRY_JITTER", "EQUAL", "retry", "jitter", Jitter.EQUAL),
        ("RETRY_TOTAL_TIMEOUT", "5000", "retry", "total_timeout", 5.0),
        ("RETRY_MAX_RETRY_AFTER", "120000", "retry", "max_retry_after", 120.0),
    ],
)
def test_from_env_reads_global_variable(
    var: str, raw: str, section: str, field: str, expected: object
) -> None:
    """Each global variable sets its field; durations are milliseconds turned into seconds."""
    policy = Policy.from_env("alpaca", {var: raw})
    assert getattr(getattr(policy, section), field) == expected


def test_from_env_slow_call_rate_threshold() -> None:
    """CB_SLOW_CALL_RATE_THRESHOLD applies together with CB_SLOW_CALL_THRESHOLD."""
    environ = {"CB_SLOW_CALL_THRESHOLD": "500", "CB_SLOW_CALL_RATE_THRESHOLD": "0.25"}
    breaker = Policy.from_env("alpaca", environ).breaker
    assert (breaker.slow_call_threshold, breaker.slow_call_rate_threshold) == (0.5, 0.25)


def test_from_env_zero_call_timeout_means_none() -> None:
    """CB_TIMEOUT_THRESHOLD=0 disables the per-call timeout."""
    assert Policy.from_env("alpaca", {"CB_TIMEOUT_THRESHOLD": "0"}).breaker.call_timeout is None


def test_from_env_zero_total_timeout_means_none() -> None:
    """RETRY_TOTAL_TIMEOUT=0 means no deadline over all attempts."""
    environ = {"RETRY_TOTAL_TIMEOUT": "0"}
    assert Policy.from_env("alpaca", environ).retry.total_timeout is None


def test_from_env_service_prefix_wins_over_global() -> None:
    """SERVICE_-prefixed variables override globals; "alpaca-v2" uses "ALPACA_V2_"."""
    environ = {"CB_FAILURE_THRESHOLD": "7", "ALPACA_V2_CB_FAILURE_THRESHOLD": "9"}
    assert Policy.from_env("alpaca-v2", environ).breaker.failure_threshold == 9


def test_from_env_prefix_of_another_service_is_ignored() -> None:
    """Another service's prefixed variable does not affect this service."""
    environ = {"CB_FAILURE_THRESHOLD": "7", "OPENAI_CB_FAILURE_THRESHOLD": "2"}
    assert Policy.from_env("alpaca", environ).breaker.failure_threshold == 7


def test_from_env_dotted_service_prefix() -> None:
    """Dots in the service name become underscores in the prefix."""
    environ = {"API_EU_RETRY_MAX_ATTEMPTS": "6"}
    assert Policy.from_env("api.eu", environ).retry.max_attempts == 6


def test_from_env_blank_values_are_ignored() -> None:
    """Empty or whitespace-only variables count as unset."""
    environ = {"CB_FAILURE_THRESHOLD": "  ", "RETRY_MAX_ATTEMPTS": ""}
    assert Policy.from_env("alpaca", environ) == Policy(service="alpaca")


def test_from_env_blank_prefixed_value_falls_back_to_global() -> None:
    """A blank prefixed variable lets the global one apply."""
    environ = {"ALPACA_CB_FAILURE_THRESHOLD": " ", "CB_FAILURE_THRESHOLD": "7"}
    assert Policy.from_env("alpaca", environ).breaker.failure_threshold == 7


def test_from_env_strips_whitespace() -> None:
    """Values are read with surrounding whitespace removed."""
    assert (
        Policy.from_env("alpaca", {"CB_FAILURE_THRESHOLD": " 7\n"}).breaker.failure_threshold == 7
    )


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env reads os.environ."""
    monkeypatch.setenv("ZZUNIT_CB_FAILURE_THRESHOLD", "8")
    assert Policy.from_env("zzunit").breaker.failure_threshold == 8


@pytest.mark.parametrize(
    ("environ", "var", "raw"),
    [
        ({"CB_FAILURE_THRESHOLD": "abc"}, "CB_FAILURE_THRESHOLD", "abc"),
        ({"CB_FAILURE_THRESHOLD": "1.5"}, "CB_FAILURE_THRESHOLD", "1.5"),
        ({"CB_RESET_TIMEOUT": "soon"}, "CB_RESET_TIMEOUT", "soon"),
        ({"RETRY_MULTIPLIER": "2x"}, "RETRY_MULTIPLIER", "2x"),
        ({"ALPACA_CB_FAILURE_THRESHOLD": "abc"}, "ALPACA_CB_FAILURE_THRESHOLD", "abc"),
        (
            {"ALPACA_RETRY_MAX_ATTEMPTS": "x", "RETRY_MAX_ATTEMPTS": "4"},
            "ALPACA_RETRY_MAX_ATTEMPTS",
            "x",
        ),
    ],
)
def test_from_env_malformed_value_names_variable_and_value(
    environ: dict[str, str], var: str, raw: str
) -> None:
    """A value that does not parse raises ConfigError naming the variable and the value."""
    error = config_error(lambda: Policy.from_env("alpaca", environ))
    assert f"{var}={raw!r}" in str(error)
    assert error.field == var


@pytest.mark.parametrize(
    ("environ", "var", "raw"),
    [
        ({"CB_FAILURE_THRESHOLD": "0"}, "CB_FAILURE_THRESHOLD", "0"),
        ({"CB_RESET_TIMEOUT": "-5"}, "CB_RESET_TIMEOUT", "-5"),
        ({"CB_MONITORING_PERIOD": "nan"}, "CB_MONITORING_PERIOD", "nan"),
        ({"CB_FAILURE_RATE_THRESHOLD": "1.5"}, "CB_FAILURE_RATE_THRESHOLD", "1.5"),
        ({"RETRY_MAX_ATTEMPTS": "0"}, "RETRY_MAX_ATTEMPTS", "0"),
        ({"RETRY_JITTER": "fast"}, "RETRY_JITTER", "fast"),
        ({"ALPACA_CB_FAILURE_THRESHOLD": "0"}, "ALPACA_CB_FAILURE_THRESHOLD", "0"),
        (
            {"ALPACA_CB_FAILURE_THRESHOLD": "0", "CB_FAILURE_THRESHOLD": "5"},
            "ALPACA_CB_FAILURE_THRESHOLD",
            "0",
        ),
    ],
)
def test_from_env_out_of_range_value_names_variable_and_value(
    environ: dict[str, str], var: str, raw: str
) -> None:
    """A parsed but invalid value raises ConfigError naming the variable it came from."""
    error = config_error(lambda: Policy.from_env("alpaca", environ))
    assert f"{var}={raw!r}" in str(error)
    assert error.field == var


def test_from_env_bad_service_name_is_rejected() -> None:
    """from_env validates the service name like Policy does."""
    error = config_error(lambda: Policy.from_env("bad name", {}))
    assert "'bad name'" in str(error)


# -- policies_from_mapping ---------------------------------------------------------------


def test_mapping_builds_one_policy_per_service() -> None:
    """Each top-level key becomes a policy for the service of that name."""
    policies = policies_from_mapping({"alpaca": {}, "openai": {}})
    assert {name: p.service for name, p in policies.items()} == {
        "alpaca": "alpaca",
        "openai": "openai",
    }


def test_mapping_empty_service_table_gives_defaults() -> None:
    """An empty table for a service gives the default policy."""
    assert policies_from_mapping({"alpaca": {}})["alpaca"] == Policy(service="alpaca")


def test_mapping_nested_breaker_and_retry() -> None:
    """breaker and retry tables set their config fields, in seconds."""
    policy = policies_from_mapping(
        {
            "alpaca": {
                "breaker": {"failure_threshold": 3, "call_timeout": 2.5},
                "retry": {"max_attempts": 4, "jitter": "equal", "retry_on": ["transient"]},
                "telemetry": False,
            }
        }
    )["alpaca"]
    assert policy == Policy(
        service="alpaca",
        breaker=BreakerConfig(failure_threshold=3, call_timeout=2.5),
        retry=RetryConfig(
            max_attempts=4, jitter=Jitter.EQUAL, retry_on=frozenset({ErrorClass.TRANSIENT})
        ),
        telemetry=False,
    )


def test_mapping_by_kind_overrides() -> None:
    """retry.by_kind tables become RetryOverride values keyed by FailureKind."""
    policy = policies_from_mapping(
        {"alpaca": {"retry": {"by_kind": {"rate_limited": {"max_attempts": 6, "base_delay": 2}}}}}
    )["alpaca"]
    assert dict(policy.retry.by_kind) == {
        FailureKind.RATE_LIMITED: RetryOverride(max_attempts=6, base_delay=2.0)
    }


def test_mapping_budget_table() -> None:
    """A retry.budget table builds a RetryBudgetConfig, defaults filling the rest."""
    policy = policies_from_mapping({"alpaca": {"retry": {"budget": {"ratio": 0.1}}}})["alpaca"]
    assert policy.retry.budget == RetryBudgetConfig(ratio=0.1)


def test_mapping_budget_false_disables_the_budget() -> None:
    """budget = false turns the retry budget off."""
    policy = policies_from_mapping({"alpaca": {"retry": {"budget": False}}})["alpaca"]
    assert policy.retry.budget is None


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"alpaca": {"breaker": {"failure_treshold": 3}}}, "alpaca.breaker.failure_treshold"),
        ({"alpaca": {"breakr": {}}}, "alpaca.breakr"),
        ({"alpaca": {"retry": {"max_attempt": 2}}}, "alpaca.retry.max_attempt"),
        ({"alpaca": {"retry": {"budget": {"ration": 0.1}}}}, "alpaca.retry.budget.ration"),
        (
            {"alpaca": {"retry": {"by_kind": {"timeout": {"max_attemps": 2}}}}},
            "alpaca.retry.by_kind.timeout.max_attemps",
        ),
    ],
)
def test_mapping_unknown_key_names_dotted_path(mapping: dict[str, Any], path: str) -> None:
    """An unknown setting raises ConfigError naming its dotted path."""
    error = config_error(lambda: policies_from_mapping(mapping))
    assert path in str(error)
    assert error.field == path


def test_mapping_bad_value_names_path_field_and_value() -> None:
    """An invalid value raises ConfigError naming the table, the field and the value."""
    error = config_error(
        lambda: policies_from_mapping({"alpaca": {"breaker": {"failure_threshold": 0}}})
    )
    assert "alpaca.breaker" in str(error)
    assert "failure_threshold" in str(error)
    assert "got 0" in str(error)


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"alpaca": 5}, "alpaca"),
        ({"alpaca": {"breaker": 5}}, "alpaca.breaker"),
        ({"alpaca": {"retry": "fast"}}, "alpaca.retry"),
        ({"alpaca": {"retry": {"by_kind": ["timeout"]}}}, "alpaca.retry.by_kind"),
    ],
)
def test_mapping_non_table_section_is_rejected(mapping: dict[str, Any], path: str) -> None:
    """A section that is not a table raises ConfigError naming its path."""
    assert path in str(config_error(lambda: policies_from_mapping(mapping)))


def test_mapping_bad_by_kind_key_is_rejected() -> None:
    """An unknown failure kind under by_kind raises ConfigError naming it."""
    error = config_error(
        lambda: policies_from_mapping(
            {"alpaca": {"retry": {"by_kind": {"slow": {"max_attempts": 2}}}}}
        )
    )
    assert "alpaca.retry" in str(error)
    assert "'slow'" in str(error)


def test_mapping_bad_service_name_is_rejected() -> None:
    """A service key that is not a valid service name raises ConfigError."""
    error = config_error(lambda: policies_from_mapping({"bad name": {}}))
    assert "'bad name'" in str(error)


# -- load_policies -----------------------------------------------------------------------

TOML = """\
[alpaca.breaker]
failure_threshold = 3
reset_timeout = 30
call_timeout = 2.5

[alpaca.retry]
max_attempts = 4
jitter = "decorrelated"
budget = false

[alpaca.retry.by_kind.rate_limited]
max_attempts = 6

[openai.retry.budget]
ratio = 0.1
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` to a TOML file in ``tmp_path`` and return its path."""
    path = tmp_path / "policies.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_policies_reads_a_toml_file(tmp_path: Path) -> None:
    """A TOML file with nested tables, by_kind and budget builds the expected policies."""
    policies = load_policies(write(tmp_path, TOML))
    assert policies == {
        "alpaca": Policy(
            service="alpaca",
            breaker=BreakerConfig(failure_threshold=3, reset_timeout=30.0, call_timeout=2.5),
            retry=RetryConfig(
                max_attempts=4,
                jitter=Jitter.DECORRELATED,
                budget=None,
                by_kind={FailureKind.RATE_LIMITED: RetryOverride(max_attempts=6)},
            ),
        ),
        "openai": Policy(service="openai", retry=RetryConfig(budget=RetryBudgetConfig(ratio=0.1))),
    }


def test_load_policies_accepts_a_str_path(tmp_path: Path) -> None:
    """load_policies takes a plain string path too."""
    assert list(load_policies(str(write(tmp_path, "[alpaca]\n")))) == ["alpaca"]


def test_load_policies_invalid_toml_raises_config_error(tmp_path: Path) -> None:
    """A file that is not valid TOML raises ConfigError naming the file."""
    path = write(tmp_path, "[alpaca.breaker\nfailure_threshold = 3\n")
    error = config_error(lambda: load_policies(path))
    assert str(path) in str(error)
    assert "TOML" in str(error)


def test_load_policies_unknown_key_names_dotted_path(tmp_path: Path) -> None:
    """An unknown key in the file raises ConfigError naming its dotted path."""
    path = write(tmp_path, "[alpaca.breaker]\nfailure_treshold = 3\n")
    assert "alpaca.breaker.failure_treshold" in str(config_error(lambda: load_policies(path)))
