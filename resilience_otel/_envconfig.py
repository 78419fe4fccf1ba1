"""Loading policies from environment variables and from a mapping or TOML file."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigError

if TYPE_CHECKING:
    from ._config import Policy

__all__ = ["ENV_VARS", "load_policies", "policies_from_mapping", "policy_from_env"]


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_ms(raw: str) -> float:
    return float(raw.strip()) / 1000.0


def _parse_ms_or_off(raw: str) -> float | None:
    value = float(raw.strip())
    return None if value == 0 else value / 1000.0


def _parse_float(raw: str) -> float:
    return float(raw.strip())


def _parse_str(raw: str) -> str:
    return raw.strip().lower()


# (variable, section, field, parser, what the value is)
ENV_VARS: tuple[tuple[str, str, str, Callable[[str], Any], str], ...] = (
    ("CB_FAILURE_THRESHOLD", "breaker", "failure_threshold", _parse_int, "count"),
    ("CB_TIMEOUT_THRESHOLD", "breaker", "call_timeout", _parse_ms_or_off, "ms, 0 = none"),
    ("CB_RESET_TIMEOUT", "breaker", "reset_timeout", _parse_ms, "ms"),
    ("CB_MONITORING_PERIOD", "breaker", "monitoring_period", _parse_ms, "ms"),
    ("CB_HALF_OPEN_MAX_CALLS", "breaker", "half_open_max_calls", _parse_int, "count"),
    ("CB_SUCCESS_THRESHOLD", "breaker", "success_threshold", _parse_int, "count"),
    ("CB_FAILURE_RATE_THRESHOLD", "breaker", "failure_rate_threshold", _parse_float, "0..1"),
    ("CB_MINIMUM_CALLS", "breaker", "minimum_calls", _parse_int, "count"),
    ("CB_SLOW_CALL_THRESHOLD", "breaker", "slow_call_threshold", _parse_ms, "ms"),
    ("CB_SLOW_CALL_RATE_THRESHOLD", "breaker", "slow_call_rate_threshold", _parse_float, "0..1"),
    ("RETRY_MAX_ATTEMPTS", "retry", "max_attempts", _parse_int, "count"),
    ("RETRY_BASE_DELAY", "retry", "base_delay", _parse_ms, "ms"),
    ("RETRY_MAX_DELAY", "retry", "max_delay", _parse_ms, "ms"),
    ("RETRY_MULTIPLIER", "retry", "multiplier", _parse_float, "factor"),
    ("RETRY_JITTER", "retry", "jitter", _parse_str, "full|equal|decorrelated|none"),
    ("RETRY_TOTAL_TIMEOUT", "retry", "total_timeout", _parse_ms_or_off, "ms, 0 = none"),
    ("RETRY_MAX_RETRY_AFTER", "retry", "max_retry_after", _parse_ms, "ms"),
)


def env_prefix(service: str) -> str:
    """The per-service prefix: ``alpaca-v2`` -> ``ALPACA_V2_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", service).upper() + "_"


def policy_from_env(
    policy_cls: type[Policy], service: str, environ: Mapping[str, str] | None
) -> Policy:
    """See :meth:`Policy.from_env`."""
    from ._config import BreakerConfig, RetryConfig

    env = os.environ if environ is None else environ
    prefix = env_prefix(service)
    values: dict[str, dict[str, Any]] = {"breaker": {}, "retry": {}}
    source: dict[str, str] = {}
    for var, section, name, parse, unit in ENV_VARS:
        for candidate in (prefix + var, var):
            raw = env.get(candidate)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[section][name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"{candidate}={raw!r} is not a valid value ({unit})", field=candidate
                ) from exc
            source[name] = f"{candidate}={raw!r}"
            break
    try:
        return policy_cls(
            service=service,
            breaker=BreakerConfig(**values["breaker"]),
            retry=RetryConfig(**values["retry"]),
        )
    except ConfigError as exc:
        bad = (exc.field or "").rpartition(".")[2]
        if bad in source:
            raise ConfigError(f"{source[bad]}: {exc}", field=source[bad].partition("=")[0]) from exc
        raise


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
            {"breaker": breaker, "retry": _retry_from},
        )
    return policies


def load_policies(path: str | os.PathLike[str]) -> dict[str, Policy]:
    """Read a TOML file whose top-level tables are services; see :func:`policies_from_mapping`."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", field=str(path)) from exc
    return policies_from_mapping(data)
