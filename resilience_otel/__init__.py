"""resilience-otel: resilient, observable outbound calls for httpx, redis-py and asyncpg."""

from __future__ import annotations

from ._clients.http.transport import AsyncResilientTransport, ResilientTransport
from ._config.mapping import load_policies, policies_from_mapping
from ._config.policy import (
    BreakerConfig,
    HealthConfig,
    Jitter,
    Policy,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
)
from ._core.breaker import BreakerSnapshot, BreakerState, CircuitBreaker, StateChange
from ._core.classify import ErrorClass, Failure, FailureKind
from ._core.clock import Clock, SystemClock
from ._core.exceptions import CircuitOpenError, ConfigError, ResilienceError, RetriesExhaustedError
from ._deadletters.base import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterReason,
    InMemoryDeadLetterQueue,
    ReplayResult,
)
from ._health.monitor import HealthMonitor, HealthStatus, SystemHealth
from ._telemetry.events import Observer
from ._telemetry.redact import RedactionConfig

__version__ = "0.1.0"

__all__ = [
    "AsyncResilientTransport",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterReason",
    "ErrorClass",
    "Failure",
    "FailureKind",
    "HealthConfig",
    "HealthMonitor",
    "HealthStatus",
    "InMemoryDeadLetterQueue",
    "Jitter",
    "Observer",
    "Policy",
    "RedactionConfig",
    "ReplayResult",
    "ResilienceError",
    "ResilientTransport",
    "RetriesExhaustedError",
    "RetryBudgetConfig",
    "RetryConfig",
    "RetryOverride",
    "StateChange",
    "SystemClock",
    "SystemHealth",
    "load_policies",
    "policies_from_mapping",
]
