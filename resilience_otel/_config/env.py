"""Loading policies from environment variables and from a mapping or TOML file."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ._envvalues import SMALL_DELAY_MS, SMALL_MS, EnvVar, parse_env_value
from ._exceptions import ConfigError
from ._redact import RedactionConfig, redaction_from_env
from ._validate import check_type

if TYPE_CHECKING:
    from ._config import HealthConfig, Policy

__all__ = [
    "ENV_VARS",
    "HEALTH_ENV_VARS",
    "health_from_env",
    "load_policies",
    "policies_from_mapping",
    "policy_from_env",
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


def _named(exc: ConfigError, source: dict[str, str]) -> ConfigError:
    """``exc`` restated with the variable behind its field, when one is."""
    bad = source.get((exc.field or "").rpartition(".")[2])
    if bad is None:
        return exc
    return ConfigError(f"{bad}: {exc}", field=bad.partition("=")[0])


def policy_from_env(
    policy_cls: type[Policy], service: str, environ: Mapping[str, str] | None
) -> Policy:
    """See :meth:`Policy.from_env`."""
    from ._config import BreakerConfig, RetryConfig, check_service_name

    check_service_name("service", service)
    env = _check_environ(environ)
    values, source = _read(env, ENV_VARS, env_prefix(service))
    _check_order(values, source, RetryConfig)
    _check_needs(values, source)
    redaction = redaction_from_env(env, env_prefix(service))
    try:
        return policy_cls(
            service=service,
            breaker=BreakerConfig(**values["breaker"]),
            retry=RetryConfig(**values["retry"]),
            redaction=redaction,
        )
    except ConfigError as exc:
        named = _named(exc, source)
        if named is exc:
            raise
        raise named from exc


def health_from_env(cls: type[HealthConfig], environ: Mapping[str, str] | None) -> HealthConfig:
    """See :meth:`HealthConfig.from_env`."""
    values, source = _read(_check_environ(environ), HEALTH_ENV_VARS)
    health = values["health"]
    if "alert_threshold" in health and isinstance(health["alert_threshold"], float):
        health.setdefault("degraded_threshold", max(health["alert_threshold"], 0.99))
    try:
        return cls(**health)
    except ConfigError as exc:
        named = _named(exc, source)
        if named is exc:
            raise ConfigError(f"health environment variables: {exc}", field=exc.field) from exc
        raise named from exc


def _build(
    cls: type[Any], path: str, raw: object, nested: Mapping[str, Callable[[str, object], Any]]
) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a table/mapping, got {raw!r}", field=path)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(
                f"{path}.{key} is not a known setting (known: {allowed})", field=f"{path}.{key}"
            )
        kwargs[key] = nested[key](f"{path}.{key}", value) if key in nested else value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", field=exc.field) from exc


def _retry_from(path: str, raw: object) -> Any:
    from ._config import RetryBudgetConfig, RetryConfig, RetryOverride

    def budget(sub: str, value: object) -> Any:
        if value is None or value is False:
            return None
        return _build(RetryBudgetConfig, sub, value, {})

    def by_kind(sub: str, value: object) -> Any:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{sub} must be a table/mapping, got {value!r}", field=sub)
        return {
            kind: _build(RetryOverride, f"{sub}.{kind}", item, {}) for kind, item in value.items()
        }

    return _build(RetryConfig, path, raw, {"budget": budget, "by_kind": by_kind})


def _redaction_from(path: str, raw: object) -> Any:
    return _build(RedactionConfig, path, raw, {})


def policies_from_mapping(config: Mapping[str, object]) -> dict[str, Policy]:
    """Build one policy per service from a mapping (seconds for durations).

    Example::

        policies_from_mapping({
            "alpaca": {
                "breaker": {"failure_threshold": 5, "call_timeout": 30},
                "retry": {"max_attempts": 4, "by_kind": {"rate_limited": {"max_attempts": 6}}},
            },
            "openai": {"retry": {"budget": {"ratio": 0.1}}},
        })

    Raises:
        ConfigError: naming the path of the first bad or unknown setting.
    """
    from ._config import BreakerConfig, Policy

    check_type("config", config, Mapping, "a mapping of service names to settings")
    policies: dict[str, Policy] = {}
    for service, raw in config.items():

        def breaker(sub: str, value: object) -> Any:
            return _build(BreakerConfig, sub, value, {})

        if not isinstance(raw, Mapping):
            raise ConfigError(f"{service} must be a table/mapping, got {raw!r}", field=str(service))
        if "service" in raw:
            raise ConfigError(
                f"{service}.service: the table's name is the service name; remove this key",
                field=f"{service}.service",
            )
        policies[service] = _build(
            Policy,
            str(service),
            {"service": service, **raw},
            {"breaker": breaker, "retry": _retry_from, "redaction": _redaction_from},
        )
    return policies


def load_policies(path: str | os.PathLike[str]) -> dict[str, Policy]:
    """Read a TOML file whose top-level tables are services; see :func:`policies_from_mapping`."""
    check_type("load_policies(path=...)", path, (str, os.PathLike), "a file path")
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", field=str(path)) from exc
    return policies_from_mapping(data)
