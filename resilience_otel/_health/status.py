"""What the monitor reports: one service's health, the system's, and response-time quantiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["HealthStatus", "ResponseTime", "SystemHealth"]


@dataclass(frozen=True, slots=True)
class ResponseTime:
    """Recent response-time quantiles, seconds (``None`` without samples)."""

    p50: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """The health of one service. ``last_checked`` is wall-clock time, for display only."""

    service: str
    status: str
    score: float
    availability: float
    error_rate: float
    response_time: ResponseTime
    breaker_state: str | None
    consecutive_failures: int
    last_checked: float | None
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape served by ``/health/{service}``."""
        return {
            "service": self.service,
            "status": self.status,
            "score": self.score,
            "availability": round(self.availability, 6),
            "error_rate": round(self.error_rate, 6),
            "response_time": {"p50": self.response_time.p50, "p95": self.response_time.p95},
            "breaker_state": self.breaker_state,
            "consecutive_failures": self.consecutive_failures,
            "last_checked": self.last_checked,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class SystemHealth:
    """The overall status: the worst of the critical services; optional services can make
    it at most degraded."""

    status: str
    services: tuple[HealthStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape served by ``/health``."""
        return {"status": self.status, "services": [s.to_dict() for s in self.services]}
