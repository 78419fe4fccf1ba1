"""Frozen, validated policy configuration.

Units are seconds in Python and milliseconds in environment variables. Every dataclass
validates itself at construction and raises :class:`ConfigError` naming the field, the bad
value and the allowed range. Derive variants with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from .._core.classify import ErrorClass, FailureKind
from .._core.exceptions import ConfigError
from .._core.validate import MAX_COUNT, MAX_DURATION, check_bool, check_int, set_field, set_float
from .._deadletters.base import DeadLetterReason
from .._telemetry.redact import RedactionConfig
from .env import named_error, read_policy_env
from .health import HealthConfig

__all__ = [
    "BreakerConfig",
    "HealthConfig",
    "Jitter",
    "Policy",
    "RetryBudgetConfig",
    "RetryConfig",
    "RetryOverride",
]

_SERVICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")


class Jitter(StrEnum):
    """How backoff delays are randomised (see AWS's "Exponential Backoff and Jitter").

    ``FULL``: uniform in ``[0, d]``. ``EQUAL``: ``d/2 + uniform(0, d/2)``. ``DECORRELATED``:
    ``uniform(base_delay, 3 * previous)``, capped. ``NONE``: exactly ``d``.
    """

    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
    NONE = "none"


def check_service_name(field: str, value: object) -> str:
    """Return ``value`` if it is a valid service name (it becomes a label and a prefix)."""
    if not isinstance(value, str) or not _SERVICE_NAME.fullmatch(value):
        raise ConfigError(
            f"{field} must start with a letter and hold at most 64 letters, digits, "
            f"'_', '.' or '-', got {value!r}",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """Circuit breaker settings.

    Args:
        failure_threshold: failures within ``monitoring_period`` that open the breaker
            (count mode; ignored when ``failure_rate_threshold`` is set); 1 to 10**9.
        monitoring_period: length of the rolling window, seconds; at most 86400 (one day).
        reset_timeout: seconds an open breaker waits before admitting half-open probes; at
            most 86400.
        call_timeout: an attempt slower than this is cancelled and counts as a failure;
            ``None`` means no per-attempt limit; at most 86400.
        half_open_max_calls: probes allowed in flight at once while half-open; 1 to 10000.
        success_threshold: probe successes needed to close again; 1 to 10000.
        failure_rate_threshold: rate mode: open when the failure ratio (0..1] over at least
            ``minimum_calls`` calls in the window reaches it. ``None``: count mode.
        minimum_calls: calls the window must hold before any rate is judged; 1 to 10**9.
        slow_call_threshold: an attempt slower than this (seconds) is "slow"; ``None``: off;
            at most 86400.
        slow_call_rate_threshold: open when the ratio of slow calls (0..1] reaches it.
        window_buckets: how many buckets the window is cut into (memory is fixed by this);
            1 to 1000.

    Every duration is positive and at most one day, every count at most 10**9: larger values
    are typos (a millisecond value given in seconds), and Redis refuses such expiry times.
    """

    failure_threshold: int = 5
    monitoring_period: float = 60.0
    reset_timeout: float = 60.0
    call_timeout: float | None = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1
    failure_rate_threshold: float | None = None
    minimum_calls: int = 10
    slow_call_threshold: float | None = None
    slow_call_rate_threshold: float | None = None
    window_buckets: int = 10

    def __post_init__(self) -> None:
        name = "BreakerConfig."
        check_int(name + "failure_threshold", self.failure_threshold, 1, MAX_COUNT)
        set_float(self, name, "monitoring_period", 0.0, MAX_DURATION, low_open=True)
        set_float(self, name, "reset_timeout", 0.0, MAX_DURATION, low_open=True)
        set_float(self, name, "call_timeout", 0.0, MAX_DURATION, low_open=True, optional=True)
        check_int(name + "half_open_max_calls", self.half_open_max_calls, 1, 10_000)
        check_int(name + "success_threshold", self.success_threshold, 1, 10_000)
        set_float(self, name, "failure_rate_threshold", 0.0, 1.0, low_open=True, optional=True)
        check_int(name + "minimum_calls", self.minimum_calls, 1, MAX_COUNT)
        set_float(
            self, name, "slow_call_threshold", 0.0, MAX_DURATION, low_open=True, optional=True
        )
        set_float(self, name, "slow_call_rate_threshold", 0.0, 1.0, low_open=True, optional=True)
        check_int(name + "window_buckets", self.window_buckets, 1, 1000)
        if self.slow_call_rate_threshold is not None and self.slow_call_threshold is None:
            raise ConfigError(
                f"{name}slow_call_rate_threshold={self.slow_call_rate_threshold!r} needs "
                "slow_call_threshold to be set",
                field=name + "slow_call_threshold",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryOverride:
    """Retry settings for one kind of failure; ``None`` fields inherit from :class:`RetryConfig`.

    ``max_attempts`` counts all attempts of the call, including the first; the ranges are
    those of :class:`RetryConfig`.
    """

    max_attempts: int | None = None
    base_delay: float | None = None
    max_delay: float | None = None
    multiplier: float | None = None

    def __post_init__(self) -> None:
        name = "RetryOverride."
        if self.max_attempts is not None:
            check_int(name + "max_attempts", self.max_attempts, 1, 100)
        set_float(self, name, "base_delay", 0.0, 3600.0, optional=True)
        set_float(self, name, "max_delay", 0.0, MAX_DURATION, optional=True)
        set_float(self, name, "multiplier", 1.0, 100.0, optional=True)
        base, cap = self.base_delay, self.max_delay
        if base is not None and cap is not None and cap < base:
            raise ConfigError(
                f"{name}max_delay must be >= base_delay ({base!r}), got {cap!r}",
                field=name + "max_delay",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetConfig:
    """Limits retries to a share of recent traffic, so an outage cannot multiply load.

    Within the last ``window`` seconds, retries may not exceed ``ratio`` times the calls made
    plus ``min_retries_per_second * window`` (a floor so quiet services can still retry).

    Args:
        ratio: retries allowed per call made in the window (0.2: one retry per five calls).
        min_retries_per_second: retries per second always allowed, however quiet the service.
        window: seconds of traffic the budget looks back over.
    """

    ratio: float = 0.2
    min_retries_per_second: float = 10.0
    window: float = 10.0

    def __post_init__(self) -> None:
        name = "RetryBudgetConfig."
        set_float(self, name, "ratio", 0.0, 100.0)
        set_float(self, name, "min_retries_per_second", 0.0, 1e6)
        set_float(self, name, "window", 0.0, 3600.0, low_open=True)


def _coerce_error_classes(value: object) -> frozenset[ErrorClass]:
    if isinstance(value, str | ErrorClass):
        value = [value]
    if not isinstance(value, frozenset | set | list | tuple):
        raise ConfigError(
            f"RetryConfig.retry_on must be a set of ErrorClass, got {value!r}",
            field="RetryConfig.retry_on",
        )
    try:
        return frozenset(ErrorClass(item) for item in value)
    except ValueError as exc:
        allowed = ", ".join(e.value for e in ErrorClass)
        raise ConfigError(
            f"RetryConfig.retry_on has {value!r}; allowed: {allowed}", field="RetryConfig.retry_on"
        ) from exc


def _coerce_by_kind(value: object) -> Mapping[FailureKind, RetryOverride]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"RetryConfig.by_kind must be a mapping, got {value!r}", field="RetryConfig.by_kind"
        )
    result: dict[FailureKind, RetryOverride] = {}
    for key, override in value.items():
        try:
            kind = FailureKind(key)
        except ValueError as exc:
            allowed = ", ".join(k.value for k in FailureKind)
            raise ConfigError(
                f"RetryConfig.by_kind key {key!r} is not one of: {allowed}",
                field="RetryConfig.by_kind",
            ) from exc
        if not isinstance(override, RetryOverride):
            raise ConfigError(
                f"RetryConfig.by_kind[{kind.value!r}] must be a RetryOverride, got {override!r}",
                field="RetryConfig.by_kind",
            )
        result[kind] = override
    return MappingProxyType(result)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """Retry settings.

    Args:
        max_attempts: attempts including the first; 1 disables retries; at most 100.
        base_delay: delay before the first retry, seconds (before jitter); 0 to 3600.
        max_delay: cap of any single backoff delay, seconds; ``base_delay`` to 86400.
        multiplier: growth factor; retry ``n`` (from 0) waits ``base_delay * multiplier**n``;
            1 to 100.
        jitter: how delays are randomised (:class:`Jitter`, default full jitter).
        retry_on: error classes that are retried (TRANSIENT and FAILOVER by default).
        respect_retry_after: wait what the upstream's ``Retry-After`` asks (429/503).
        max_retry_after: a longer ``Retry-After`` ends retrying instead of waiting; 0 to
            86400 seconds.
        total_timeout: deadline over all attempts and delays, seconds; ``None``: none; at
            most 86400.
            Nothing sleeps past it and the last attempt's timeout is cut to fit.
        budget: the retry budget; ``None`` disables it.
        by_kind: per-kind overrides, e.g. patient on ``RATE_LIMITED``, brief on ``TIMEOUT``.
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: Jitter = Jitter.FULL
    retry_on: frozenset[ErrorClass] = frozenset({ErrorClass.TRANSIENT, ErrorClass.FAILOVER})
    respect_retry_after: bool = True
    max_retry_after: float = 60.0
    total_timeout: float | None = None
    budget: RetryBudgetConfig | None = field(default_factory=RetryBudgetConfig)
    by_kind: Mapping[FailureKind, RetryOverride] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        name = "RetryConfig."
        check_int(name + "max_attempts", self.max_attempts, 1, 100)
        set_float(self, name, "base_delay", 0.0, 3600.0)
        set_float(self, name, "max_delay", 0.0, MAX_DURATION)
        if self.max_delay < self.base_delay:
            raise ConfigError(
                f"{name}max_delay must be >= base_delay ({self.base_delay!r}), "
                f"got {self.max_delay!r}",
                field=name + "max_delay",
            )
        set_float(self, name, "multiplier", 1.0, 100.0)
        try:
            set_field(self, "jitter", Jitter(self.jitter))
        except ValueError as exc:
            allowed = ", ".join(j.value for j in Jitter)
            raise ConfigError(
                f"{name}jitter must be one of {allowed}, got {self.jitter!r}", field=name + "jitter"
            ) from exc
        set_field(self, "retry_on", _coerce_error_classes(self.retry_on))
        set_float(self, name, "max_retry_after", 0.0, MAX_DURATION)
        set_float(self, name, "total_timeout", 0.0, MAX_DURATION, low_open=True, optional=True)
        if self.budget is not None and not isinstance(self.budget, RetryBudgetConfig):
            raise ConfigError(
                f"{name}budget must be a RetryBudgetConfig or None, got {self.budget!r}",
                field=name + "budget",
            )
        check_bool(name + "respect_retry_after", self.respect_retry_after)
        set_field(self, "by_kind", _coerce_by_kind(self.by_kind))


_DEFAULT_DEAD_LETTER_ON = frozenset(
    {DeadLetterReason.RETRIES_EXHAUSTED, DeadLetterReason.CIRCUIT_OPEN, DeadLetterReason.CRITICAL}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Everything that governs calls to one upstream service.

    Args:
        service: a short name ("alpaca", "openai"); it is the ``service`` metric label and
            the prefix of per-service environment variables. Letters, digits, ``_.-``.
        breaker: circuit breaker settings.
        retry: retry settings.
        dead_letter_on: which failed calls are recorded in the dead-letter queue (when the
            client is given one). PERMANENT failures are left out by default.
        telemetry: emit spans and metrics for calls under this policy.
        redaction: query keys, headers and path segments to redact beyond the defaults, and
            the opt-in to raw Redis/PostgreSQL error texts (see :class:`RedactionConfig`).
    """

    service: str
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    dead_letter_on: frozenset[DeadLetterReason] = _DEFAULT_DEAD_LETTER_ON
    telemetry: bool = True
    redaction: RedactionConfig = field(default_factory=RedactionConfig)

    def __post_init__(self) -> None:
        check_service_name("Policy.service", self.service)
        if not isinstance(self.redaction, RedactionConfig):
            raise ConfigError(
                f"Policy.redaction must be a RedactionConfig, got {self.redaction!r}",
                field="Policy.redaction",
            )
        if not isinstance(self.breaker, BreakerConfig):
            raise ConfigError(
                f"Policy.breaker must be a BreakerConfig, got {self.breaker!r}",
                field="Policy.breaker",
            )
        if not isinstance(self.retry, RetryConfig):
            raise ConfigError(
                f"Policy.retry must be a RetryConfig, got {self.retry!r}", field="Policy.retry"
            )
        check_bool("Policy.telemetry", self.telemetry)
        given: Iterable[str] = self.dead_letter_on
        if isinstance(given, str):  # one reason, as retry_on takes one class (not its letters)
            given = (given,)
        try:
            reasons = frozenset(DeadLetterReason(r) for r in given)
        except (TypeError, ValueError) as exc:
            allowed = ", ".join(r.value for r in DeadLetterReason)
            raise ConfigError(
                f"Policy.dead_letter_on must hold reasons from {allowed}, "
                f"got {self.dead_letter_on!r}",
                field="Policy.dead_letter_on",
            ) from exc
        set_field(self, "dead_letter_on", reasons)

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Policy:
        """Build a policy from environment variables (milliseconds for durations).

        Reads the global variables (``CB_FAILURE_THRESHOLD``, ``RETRY_MAX_ATTEMPTS``, ...)
        and lets ``<SERVICE>_``-prefixed ones override them (``ALPACA_CB_FAILURE_THRESHOLD``).

        Raises:
            ConfigError: naming the variable and its value when one is malformed or out of range.
        """
        check_service_name("service", service)
        breaker, retry, redaction, source = read_policy_env(service, environ, RetryConfig)
        try:
            return cls(
                service=service,
                breaker=BreakerConfig(**breaker),
                retry=RetryConfig(**retry),
                redaction=redaction,
            )
        except ConfigError as exc:
            named = named_error(exc, source)
            if named is exc:
                raise
            raise named from exc
