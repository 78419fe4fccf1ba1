"""Health monitor settings (a frozen, validated dataclass, like the policy's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .._core.validate import MAX_COUNT, MAX_DURATION, check_int, set_float
from .env import health_from_env

__all__ = ["HealthConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    """Health monitor settings.

    Args:
        check_interval: seconds between active checks of a service; at most 86400.
        check_timeout: an active check slower than this fails, seconds; at most 3600.
        alert_threshold: availability below this makes a service unhealthy (0..1).
        degraded_threshold: availability below this makes it degraded (0..1, >= alert).
        latency_target: a p95 response time above this, seconds, makes it degraded and
            lowers its score; at most 3600.
        window: the recent window that availability and latency are judged over, seconds;
            at most 86400.
        window_buckets: buckets of that window (memory is fixed by this); 1 to 1000.
        minimum_calls: calls the window must hold before availability is judged; 1 to 10**9.
        failures_to_unhealthy: consecutive failed active checks that make it unhealthy;
            1 to 1000.
    """

    check_interval: float = 30.0
    check_timeout: float = 5.0
    alert_threshold: float = 0.95
    degraded_threshold: float = 0.99
    latency_target: float = 1.0
    window: float = 300.0
    window_buckets: int = 30
    minimum_calls: int = 10
    failures_to_unhealthy: int = 3

    def __post_init__(self) -> None:
        name = "HealthConfig."
        set_float(self, name, "check_interval", 0.0, MAX_DURATION, low_open=True)
        set_float(self, name, "check_timeout", 0.0, 3600.0, low_open=True)
        set_float(self, name, "latency_target", 0.0, 3600.0, low_open=True)
        set_float(self, name, "window", 0.0, MAX_DURATION, low_open=True)
        set_float(self, name, "alert_threshold", 0.0, 1.0)
        set_float(self, name, "degraded_threshold", self.alert_threshold, 1.0)
        check_int(name + "window_buckets", self.window_buckets, 1, 1000)
        check_int(name + "minimum_calls", self.minimum_calls, 1, MAX_COUNT)
        check_int(name + "failures_to_unhealthy", self.failures_to_unhealthy, 1, 1000)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HealthConfig:
        """Read ``HEALTH_CHECK_INTERVAL`` (ms) and ``HEALTH_ALERT_THRESHOLD`` (0..1).

        Raises:
            ConfigError: naming the variable and its value when one is malformed.
        """
        return health_from_env(cls, environ)
