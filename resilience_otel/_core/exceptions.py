"""Exceptions raised by resilience-otel.

The tree::

    Exception
    ├── ResilienceError
    │   ├── CircuitOpenError        a call was rejected without reaching the upstream
    │   └── RetriesExhaustedError   resent, and every attempt failed with an exception
    └── ValueError
        └── ConfigError             bad configuration (also a ResilienceError)

Client shells raise *mixed* subclasses so existing handlers keep working: for httpx a
rejection is both a ``CircuitOpenError`` and an ``httpx.TransportError``, and an exhausted
retry is both a ``RetriesExhaustedError`` and the type of the last error it saw (a
``httpx.ConnectTimeout`` stays catchable as ``httpx.ConnectTimeout``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "ResilienceError",
    "RetriesExhaustedError",
]


class ResilienceError(Exception):
    """Base class of every error this package raises on its own account."""


class ConfigError(ResilienceError, ValueError):
    """A configuration value is invalid; the message names the field, the value and the range.

    Attributes:
        field: the dataclass field or environment variable at fault, when known.
    """

    field: str | None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CircuitOpenError(ResilienceError):
    """The circuit breaker of ``service`` is open; the upstream was not called.

    Attributes:
        service: the policy's service name.
        retry_after: seconds until the breaker admits a probe (0.0 when a probe slot is
            merely busy in half-open state).
    """

    service: str
    retry_after: float

    def __init__(self, service: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker for {service!r} is open; retry after {retry_after:.3f}s")
        self.service = service
        self.retry_after = retry_after


class RetriesExhaustedError(ResilienceError):
    """The request was resent and every attempt failed with an exception (a call that made
    one attempt only raises that attempt's own error).

    Raised as a subclass of the last error's own type as well, so handlers written for the
    client's exceptions still catch it. ``__cause__`` and ``last_error`` hold that error.

    Attributes:
        service: the policy's service name.
        attempts: how many attempts were made.
        last_error: the exception of the final attempt.
    """

    service: str
    attempts: int
    last_error: BaseException


_MIXED_TYPES: dict[tuple[type[BaseException], type[BaseException]], type[Any]] = {}


def _mixed_type(base: type[ResilienceError], other: type[BaseException]) -> type[Any]:
    """The cached class deriving from both ``base`` and ``other`` (a few per client)."""
    key = (base, other)
    mixed = _MIXED_TYPES.get(key)
    if mixed is None:
        mixed = type(base.__name__, (base, other), {"__module__": base.__module__})
        if len(_MIXED_TYPES) < 512:  # bounded: exception types are few, but stay safe
            _MIXED_TYPES[key] = mixed
    return mixed


def mix_with(error: ResilienceError, other: type[BaseException]) -> ResilienceError:
    """Return a copy of ``error`` that is also an instance of ``other``.

    ``other.__init__`` is not run (its signature is unknown); the instance gets ``error``'s
    args and attributes. Falls back to ``error`` itself when the types cannot be combined.
    """
    try:
        mixed = _mixed_type(type(error), other)
        clone: ResilienceError = mixed.__new__(mixed, *error.args)
    except TypeError:
        return error
    clone.args = error.args
    clone.__dict__.update(error.__dict__)
    return clone


def exhausted_error(
    last_error: BaseException, *, service: str, attempts: int
) -> RetriesExhaustedError:
    """Build the error raised after the final failed attempt, typed like ``last_error``."""
    try:
        mixed = _mixed_type(RetriesExhaustedError, type(last_error))
        error: RetriesExhaustedError = mixed.__new__(mixed, *last_error.args)
        error.args = last_error.args
        error.__dict__.update(getattr(last_error, "__dict__", {}))
    except TypeError:
        error = RetriesExhaustedError(str(last_error))
    error.service = service
    error.attempts = attempts
    error.last_error = last_error
    error.add_note(f"resilience-otel: {service!r} gave up after {attempts} attempt(s)")
    return error
