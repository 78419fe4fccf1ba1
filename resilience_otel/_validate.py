"""Small validators shared by the config dataclasses; each raises ConfigError naming the field."""

from __future__ import annotations

import math

from ._exceptions import ConfigError


def check_int(field: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field} must be an integer, got {value!r}", field=field)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{field} must be {bound}, got {value!r}", field=field)
    return value


def check_float(
    field: str,
    value: object,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be a number, got {value!r}", field=field)
    number = float(value)
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        lower = f"> {low}" if low_open else f">= {low}"
        bound = lower if high is None else f"{lower} and <= {high}"
        raise ConfigError(f"{field} must be {bound}, got {value!r}", field=field)
    return number


def check_optional_float(
    field: str, value: object, low: float, high: float | None = None, *, low_open: bool = True
) -> float | None:
    """Like :func:`check_float`, but ``None`` passes (it means "off")."""
    if value is None:
        return None
    return check_float(field, value, low, high, low_open=low_open)
