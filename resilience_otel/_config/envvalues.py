"""Parsing environment variable values: ASCII numbers only, milliseconds to seconds, and a
one-time warning for a millisecond value so small that it was probably meant in seconds."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .._core.exceptions import ConfigError

__all__ = ["EnvVar", "parse_env_value", "warn_if_small"]

_log = logging.getLogger("resilience_otel.config")

# Python's int()/float() also take "5_0", other scripts' digits ("٣"), "inf" and "nan":
# an environment value is plain ASCII decimal, optionally with a fraction and an exponent.
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)

SMALL_MS = 100.0
"""A timeout, period or interval variable below this many milliseconds (but not 0) earns a
warning: ``CB_RESET_TIMEOUT=60`` is 60 ms, not a minute."""

SMALL_DELAY_MS = 10.0
"""The same for backoff delays and the slow-call threshold, where short values are common."""


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One variable: where its value goes and how it is read.

    ``kind`` is ``count`` (integer), ``ms`` (milliseconds, stored in seconds), ``ms_or_off``
    (0 means ``None``), ``number`` or ``word`` (lower-cased text); ``small`` is the value in
    ms below which a warning is logged (``None``: never).
    """

    name: str
    section: str
    field: str
    kind: str
    unit: str
    small: float | None = None


def _parse_int(raw: str) -> int:
    if not _INT.fullmatch(raw):
        raise ValueError(raw)
    return int(raw)


def _parse_float(raw: str) -> float:
    if not _FLOAT.fullmatch(raw):
        raise ValueError(raw)
    return float(raw)


def _parse_ms(raw: str) -> float:
    return _parse_float(raw) / 1000.0


def _parse_ms_or_off(raw: str) -> float | None:
    value = _parse_float(raw)
    return None if value == 0 else value / 1000.0


_PARSERS: dict[str, Callable[[str], object]] = {
    "count": _parse_int,
    "ms": _parse_ms,
    "ms_or_off": _parse_ms_or_off,
    "number": _parse_float,
    "word": str.lower,
}


def parse_env_value(var: EnvVar, name: str, raw: object) -> object:
    """The value of variable ``name`` (``var`` or a prefixed form of it), parsed.

    Raises:
        ConfigError: naming ``name``, the raw value and the expected form.
    """
    if not isinstance(raw, str):
        raise ConfigError(
            f"{name}={raw!r}: environment values must be strings ({var.unit}), e.g. {str(raw)!r}",
            field=name,
        )
    text = raw.strip()
    try:
        value = _PARSERS[var.kind](text)
    except ValueError as exc:
        form = "an integer" if var.kind == "count" else "a number"
        if var.kind == "word":
            form = "a word"
        raise ConfigError(
            f"{name}={raw!r} is not {form} in ASCII digits ({var.unit})", field=name
        ) from exc
    if var.small is not None and isinstance(value, float):
        warn_if_small(name, value * 1000.0, var.small)
    return value


_warned: set[str] = set()  # per process, so a value read by every client warns only once
_warned_lock = threading.Lock()


def warn_if_small(name: str, ms: float, limit: float) -> None:
    """Log a warning, once per variable per process, when ``0 < ms < limit``."""
    if not 0.0 < ms < limit:
        return
    with _warned_lock:
        if name in _warned:
            return
        _warned.add(name)
    _log.warning(
        "%s=%g is %g milliseconds; environment durations are in milliseconds "
        "(write %g for %g seconds)",
        name,
        ms,
        ms,
        ms * 1000.0,
        ms,
    )
