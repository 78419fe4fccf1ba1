"""Reading settings from environment variables (milliseconds for durations)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .._core.exceptions import ConfigError
from .._core.validate import check_type
from .._telemetry.redact import RedactionConfig, redaction_from_env
from .envvalues import SMALL_DELAY_MS, SMALL_MS, EnvVar, parse_env_value

if TYPE_CHECKING:
    from .health import HealthConfig

__all__ = [
    "ENV_VARS",
    "HEALTH_ENV_VARS",
    "env_prefix",
    "health_from_env",
    "named_error",
    "read_policy_env",
]


_MS = "ms"
# The variables Policy.from_env reads; ``small``: ms below which a value earns a warning.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("CB_FAILURE_THRESHOLD", "breaker", "failure_threshold", "count", "count"),
    EnvVar(
        "CB_TIMEOUT_THRESHOLD", "breaker", "call_timeout", "ms_or_off", "ms, 0 = none", SMALL_MS
    ),
    EnvVar("CB_RESET_TIMEOUT", "breaker", "reset_timeout", _MS, _MS, SMALL_MS),
    EnvVar("CB_MONITORING_PERIOD", "breaker", "monitoring_period", _MS, _MS, SMALL_MS),
    EnvVar("CB_HALF_OPEN_MAX_CALLS", "breaker", "half_open_max_calls", "count", "count"),
    EnvVar("CB_SUCCESS_THRESHOLD", "breaker", "success_threshold", "count", "count"),
    EnvVar("CB_FAILURE_RATE_THRESHOLD", "breaker", "failure_rate_threshold", "number", "0..1"),
    EnvVar("CB_MINIMUM_CALLS", "breaker", "minimum_calls", "count", "count"),
    EnvVar("CB_SLOW_CALL_THRESHOLD", "breaker", "slow_call_threshold", _MS, _MS, SMALL_DELAY_MS),
    EnvVar("CB_SLOW_CALL_RATE_THRESHOLD", "breaker", "slow_call_rate_threshold", "number", "0..1"),
    EnvVar("RETRY_MAX_ATTEMPTS", "retry", "max_attempts", "count", "count"),
    EnvVar("RETRY_BASE_DELAY", "retry", "base_delay", _MS, _MS, SMALL_DELAY_MS),
    EnvVar("RETRY_MAX_DELAY", "retry", "max_delay", _MS, _MS, SMALL_DELAY_MS),
    EnvVar("RETRY_MULTIPLIER", "retry", "multiplier", "number", "factor"),
    EnvVar("RETRY_JITTER", "retry", "jitter", "word", "full|equal|decorrelated|none"),
    EnvVar("RETRY_TOTAL_TIMEOUT", "retry", "total_timeout", "ms_or_off", "ms, 0 = none", SMALL_MS),
    EnvVar("RETRY_MAX_RETRY_AFTER", "retry", "max_retry_after", _MS, _MS, SMALL_MS),
)

HEALTH_ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("HEALTH_CHECK_INTERVAL", "health", "check_interval", _MS, _MS, SMALL_MS),
    EnvVar("HEALTH_ALERT_THRESHOLD", "health", "alert_threshold", "number", "0..1"),
)

# Cross-field rules checked on the variables, so the error names what the user set:
# (section, lower field, its variable, upper field, its variable).
_ORDERED = (("retry", "base_delay", "RETRY_BASE_DELAY", "max_delay", "RETRY_MAX_DELAY"),)


def env_prefix(service: str) -> str:
    """The per-service prefix: ``alpaca-v2`` -> ``ALPACA_V2_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", service).upper() + "_"


def _check_environ(environ: object) -> Mapping[str, object]:
    env = os.environ if environ is None else environ
    check_type("environ", env, Mapping, "a mapping of variable names to strings")
    return cast("Mapping[str, object]", env)


def _read(
    env: Mapping[str, object], variables: tuple[EnvVar, ...], prefix: str = ""
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Parsed values by section and field, and ``field -> "VAR='raw'"`` for error messages."""
    values: dict[str, dict[str, Any]] = {"breaker": {}, "retry": {}, "health": {}}
    source: dict[str, str] = {}
    for var in variables:
        for candidate in (prefix + var.name, var.name) if prefix else (var.name,):
            raw = env.get(candidate)
            if raw is None or (isinstance(raw, str) and raw.strip() == ""):
                continue
            values[var.section][var.field] = parse_env_value(var, candidate, raw)
            source[var.field] = f"{candidate}={raw!r}"
            break
    return values, source


def _check_order(values: dict[str, dict[str, Any]], source: dict[str, str], cls: type) -> None:
    """A lower bound above its upper bound names the variable the user set."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for section, low, low_var, high, high_var in _ORDERED:
        given = values[section]
        low_value, high_value = given.get(low, defaults[low]), given.get(high, defaults[high])
        if low_value <= high_value:
            continue
        if low in source:
            what = source.get(high, f"{high_var} (default {high_value * 1000:g})")
            raise ConfigError(
                f"{source[low]} exceeds {what}: the first delay cannot be longer than the cap",
                field=source[low].partition("=")[0],
            )
        raise ConfigError(
            f"{source[high]} is below {low_var} (default {low_value * 1000:g}): "
            "the cap cannot be shorter than the first delay",
            field=source[high].partition("=")[0],
        )


def _check_needs(values: dict[str, dict[str, Any]], source: dict[str, str]) -> None:
    """CB_SLOW_CALL_RATE_THRESHOLD needs CB_SLOW_CALL_THRESHOLD: name the one that was set."""
    breaker = values["breaker"]
    if "slow_call_rate_threshold" in breaker and "slow_call_threshold" not in breaker:
        given = source["slow_call_rate_threshold"]
        raise ConfigError(
            f"{given} needs CB_SLOW_CALL_THRESHOLD (ms) as well: which calls count as slow",
            field=given.partition("=")[0],
        )


def named_error(exc: ConfigError, source: dict[str, str]) -> ConfigError:
    """``exc`` restated with the variable behind its field, when one is."""
    bad = source.get((exc.field or "").rpartition(".")[2])
    if bad is None:
        return exc
    return ConfigError(f"{bad}: {exc}", field=bad.partition("=")[0])


def read_policy_env(
    service: str, environ: Mapping[str, str] | None, retry_cls: type
) -> tuple[dict[str, Any], dict[str, Any], RedactionConfig, dict[str, str]]:
    """Breaker and retry settings, redaction, and ``field -> "VAR='raw'"`` for ``service``.

    Cross-field rules are checked here so the error names the variable the user set; building
    the dataclasses (and naming the variable behind a field's error, :func:`named_error`) is
    :meth:`Policy.from_env`'s part.
    """
    env = _check_environ(environ)
    values, source = _read(env, ENV_VARS, env_prefix(service))
    _check_order(values, source, retry_cls)
    _check_needs(values, source)
    return values["breaker"], values["retry"], redaction_from_env(env, env_prefix(service)), source


def health_from_env(cls: type[HealthConfig], environ: Mapping[str, str] | None) -> HealthConfig:
    """See :meth:`HealthConfig.from_env`."""
    values, source = _read(_check_environ(environ), HEALTH_ENV_VARS)
    health = values["health"]
    if "alert_threshold" in health and isinstance(health["alert_threshold"], float):
        health.setdefault("degraded_threshold", max(health["alert_threshold"], 0.99))
    try:
        return cls(**health)
    except ConfigError as exc:
        named = named_error(exc, source)
        if named is exc:
            raise ConfigError(f"health environment variables: {exc}", field=exc.field) from exc
        raise named from exc
