"""Loading policies from a mapping or a TOML file (seconds for durations)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._core.exceptions import ConfigError
from .._core.validate import check_type
from .._telemetry.redact import RedactionConfig
from .policy import BreakerConfig, Policy, RetryBudgetConfig, RetryConfig, RetryOverride

__all__ = ["load_policies", "policies_from_mapping"]


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
