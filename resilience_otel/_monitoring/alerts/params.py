"""The parameters of the alert rules: their bounds, shared by the rules and the CLI options.

:func:`resilience_otel.alerts.render_rules` checks every threshold and scale against
:data:`BOUNDS`; ``resilience-otel alerts render`` parses its options with the same bounds, so
both reject the same values with the same allowed range in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ..._core.exceptions import ConfigError

__all__ = ["BOUNDS", "Bound", "check", "num"]


def num(value: float) -> str:
    """A PromQL number literal without float noise (``1 - 0.99`` -> ``0.01``)."""
    return format(round(value, 12), ".12g")


@dataclass(frozen=True, slots=True)
class Bound:
    """The values one parameter takes: ``render_rules`` checks them, the CLI options too."""

    low: float
    high: float = math.inf
    low_open: bool = True
    integer: bool = False

    def describe(self) -> str:
        """``"> 0 and <= 1000"``, ``"an integer >= 0 and <= 1000000"``."""
        kind = "an integer " if self.integer else ""
        upper = "" if math.isinf(self.high) else f" and <= {num(self.high)}"
        return f"{kind}{'>' if self.low_open else '>='} {num(self.low)}{upper}"

    def admits(self, number: float) -> bool:
        """Whether ``number`` is finite, within the bounds and whole where it must be."""
        above = number > self.low if self.low_open else number >= self.low
        whole = number.is_integer() if self.integer else True
        return math.isfinite(number) and above and number <= self.high and whole


# The longest `for:` is 15m: at 1000x it is 10d10h, far inside Prometheus' duration range
# (about 292 years). Window scales above 1 would lengthen the shipped windows: never useful.
BOUNDS: Final = {
    "availability": Bound(0.0, 1.0, low_open=False),  # HEALTH_ALERT_THRESHOLD's range
    "latency_p95_seconds": Bound(0.0),
    "latency_baseline_factor": Bound(1.0, low_open=False),
    "retry_ratio": Bound(0.0),
    "dead_letter_threshold": Bound(0.0, 1e9, low_open=False, integer=True),
    "for_scale": Bound(0.0, 1000.0),
    "window_scale": Bound(0.0, 1.0),
}


def check(field: str, value: object) -> float:
    """Return ``value`` as a float if ``BOUNDS[field]`` admits it, else raise ConfigError."""
    bound = BOUNDS[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be a number, got {value!r}", field=field)
    if not bound.admits(float(value)):
        raise ConfigError(f"{field} must be {bound.describe()}, got {value!r}", field=field)
    return float(value)
