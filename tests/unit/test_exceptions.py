"""Exception mixing: errors that are ours and the client's at once."""

from __future__ import annotations

import httpx
import pytest

from resilience_otel import (
    CircuitOpenError,
    ConfigError,
    ResilienceError,
    RetriesExhaustedError,
)
from resilience_otel._core.exceptions import exhausted_error, mix_with


class AppError(Exception):
    """An exception with a custom constructor and an attribute of its own."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


class Sealed(Exception):
    """An exception type that refuses to be subclassed."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        raise TypeError("Sealed cannot be subclassed")


def test_mix_with_is_instance_of_both() -> None:
    """A mixed CircuitOpenError is also an httpx.TransportError (and a ResilienceError)."""
    mixed = mix_with(CircuitOpenError("svc", 2.5), httpx.TransportError)
    assert isinstance(mixed, CircuitOpenError)
    assert isinstance(mixed, ResilienceError)
    assert isinstance(mixed, httpx.TransportError)


def test_mix_with_keeps_args_and_attributes() -> None:
    """The mixed copy keeps the original's args, message, service and retry_after."""
    original = CircuitOpenError("svc", 2.5)
    mixed = mix_with(original, httpx.TransportError)
    assert mixed.args == original.args
    assert str(mixed) == str(original)
    assert isinstance(mixed, CircuitOpenError)
    assert (mixed.service, mixed.retry_after) == ("svc", 2.5)


def test_mix_with_returns_a_copy() -> None:
    """The original error is left as it was (not an httpx error)."""
    original = CircuitOpenError("svc", 2.5)
    assert mix_with(original, httpx.TransportError) is not original
    assert not isinstance(original, httpx.TransportError)


def test_mix_with_caches_the_mixed_type() -> None:
    """Mixing the same pair twice gives the same class, named like ours."""
    first = mix_with(CircuitOpenError("a", 1.0), httpx.TransportError)
    second = mix_with(CircuitOpenError("b", 2.0), httpx.TransportError)
    assert type(first) is type(second)
    assert type(first).__name__ == "CircuitOpenError"


def test_mix_with_falls_back_to_original() -> None:
    """When the types cannot be combined the original error is returned."""
    original = CircuitOpenError("svc", 1.0)
    assert mix_with(original, Sealed) is original


def test_exhausted_error_is_instance_of_both() -> None:
    """exhausted_error is a RetriesExhaustedError and of the last error's own type."""
    error = exhausted_error(httpx.ConnectTimeout("slow"), service="svc", attempts=3)
    assert isinstance(error, RetriesExhaustedError)
    assert isinstance(error, ResilienceError)
    assert isinstance(error, httpx.ConnectTimeout)
    assert isinstance(error, httpx.TimeoutException)


def test_exhausted_error_records_service_attempts_and_last_error() -> None:
    """The attributes name the service, the attempt count and the last error."""
    last = httpx.ReadTimeout("slow read")
    error = exhausted_error(last, service="svc", attempts=4)
    assert (error.service, error.attempts) == ("svc", 4)
    assert error.last_error is last


def test_exhausted_error_keeps_args_and_attributes() -> None:
    """Args, message and the last error's own attributes carry over."""
    request = httpx.Request("GET", "http://api.test/")
    error = exhausted_error(httpx.ReadTimeout("slow", request=request), service="s", attempts=2)
    assert error.args == ("slow",)
    assert str(error) == "slow"
    assert isinstance(error, httpx.ReadTimeout)
    assert error.request is request


def test_exhausted_error_keeps_custom_constructor_state() -> None:
    """An exception with its own __init__ keeps its args and attributes."""
    error = exhausted_error(AppError("bad", 42), service="s", attempts=2)
    assert isinstance(error, AppError)
    assert error.args == ("bad", 42)
    assert error.code == 42


def test_exhausted_error_adds_note() -> None:
    """A note says which service gave up after how many attempts."""
    error = exhausted_error(ValueError("x"), service="svc", attempts=3)
    assert error.__notes__ == ["resilience-otel: 'svc' gave up after 3 attempt(s)"]


def test_exhausted_error_does_not_touch_last_error() -> None:
    """The last error itself gets no note and keeps its type."""
    last = httpx.ConnectError("refused")
    exhausted_error(last, service="svc", attempts=3)
    assert not hasattr(last, "__notes__")
    assert type(last) is httpx.ConnectError


def test_exhausted_error_falls_back_when_types_cannot_mix() -> None:
    """For an unmixable type a plain RetriesExhaustedError with the message is built."""
    last = Sealed("nope")
    error = exhausted_error(last, service="svc", attempts=2)
    assert type(error) is RetriesExhaustedError
    assert str(error) == "nope"
    assert (error.attempts, error.last_error) == (2, last)


def test_raised_exhausted_error_is_caught_by_client_handler() -> None:
    """Existing ``except httpx.TimeoutException`` handlers catch the exhausted error."""
    with pytest.raises(httpx.TimeoutException) as info:
        raise exhausted_error(httpx.PoolTimeout("pool"), service="svc", attempts=3)
    assert isinstance(info.value, RetriesExhaustedError)


def test_config_error_is_a_value_error_naming_the_field() -> None:
    """ConfigError is both a ResilienceError and a ValueError, with ``field``."""
    error = ConfigError("bad", field="RetryConfig.max_attempts")
    assert isinstance(error, ValueError)
    assert isinstance(error, ResilienceError)
    assert error.field == "RetryConfig.max_attempts"


def test_circuit_open_error_message() -> None:
    """CircuitOpenError names the service and the wait in its message."""
    error = CircuitOpenError("alpaca", 12.5)
    assert str(error) == "circuit breaker for 'alpaca' is open; retry after 12.500s"
