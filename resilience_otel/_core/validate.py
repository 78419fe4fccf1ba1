"""Small validators for configuration and for the arguments of public functions.

Each one names the field or argument, the bad value and what would be accepted. Two kinds of
error: :class:`ConfigError` (a ``ValueError``) for a setting whose value is out of its domain:
numbers, flags, sets of names, environment values; ``TypeError`` for an argument that is not
the kind of object expected at all (a policy, a client, a mapping, a callable).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "MAX_COUNT",
    "MAX_DURATION",
    "check_bool",
    "check_callable",
    "check_float",
    "check_int",
    "check_names",
    "check_optional_float",
    "check_type",
    "set_field",
    "set_float",
]

MAX_DURATION = 86_400.0
"""The longest duration any setting accepts, seconds (one day): longer ones are typos."""

MAX_COUNT = 1_000_000_000
"""The largest count any setting accepts; exact in Lua and Redis (which hold doubles)."""


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


def check_bool(field: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (``"no"`` would be truthy)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be True or False, got {value!r}", field=field)
    return value


def check_names(field: str, value: object) -> frozenset[str]:
    """Return a set of names given as any iterable of non-empty strings, but not as one
    string (``"SET"`` would become ``{"S", "E", "T"}``)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{field} must be a collection of names such as {{'a', 'b'}}, got {value!r}",
            field=field,
        )
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"{field} must hold non-empty strings, got {name!r} in {value!r}", field=field
            )
    return frozenset(names)


def check_type(
    field: str, value: object, expected: type[Any] | tuple[type[Any], ...], what: str = ""
) -> None:
    """Raise ``TypeError`` unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected):
        types = (expected,) if isinstance(expected, type) else expected
        wanted = what or " or ".join(_article(t.__name__) for t in types)
        raise TypeError(f"{field} must be {wanted}, got {value!r}")


def _article(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def check_callable(field: str, value: object) -> Callable[..., object]:
    """Return ``value`` if it can be called; else ``TypeError``."""
    if not callable(value):
        raise TypeError(f"{field} must be callable, got {value!r}")
    return value


def set_field(obj: object, name: str, value: object) -> None:
    """Store ``value`` in a field of a frozen dataclass (during its validation)."""
    object.__setattr__(obj, name, value)


def set_float(
    obj: object,
    prefix: str,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    optional: bool = False,
) -> None:
    """Validate the number field ``name`` of ``obj`` and store it as a float."""
    value = getattr(obj, name)
    if optional and value is None:
        return
    set_field(obj, name, check_float(prefix + name, value, low, high, low_open=low_open))
