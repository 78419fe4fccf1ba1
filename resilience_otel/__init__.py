"""resilience-otel: resilient, observable outbound calls for httpx, redis-py and asyncpg."""

from __future__ import annotations

from ._breaker import BreakerSnapshot, BreakerState, CircuitBreaker, StateChange
from ._classify import ErrorClass, Failure, FailureKind
from ._clock import Clock, SystemClock
from ._config import (
    BreakerConfig,
    HealthConfig,
    Jitter,
    Policy,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
)
from ._envconfig import load_policies, policies_from_mapping
from ._events import Observer
from ._exceptions import CircuitOpenError, ConfigError, ResilienceError, RetriesExhaustedError
from ._redact import RedactionConfig
from .dlq import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterReason,
    InMemoryDeadLetterQueue,
    ReplayResult,
)
from .health import HealthMonitor, HealthStatus, SystemHealth
from .httpx import AsyncResilientTransport, ResilientTransport

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
