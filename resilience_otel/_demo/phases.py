"""The scenario clock shared by every demo: a run of ``duration`` seconds cut into four equal
phases (healthy, partial outage, full outage, recovery)."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["FULL_OUTAGE", "HEALTHY", "PARTIAL_OUTAGE", "PHASES", "RECOVERY", "Timeline"]

HEALTHY, PARTIAL_OUTAGE, FULL_OUTAGE, RECOVERY = (
    "healthy",
    "partial outage",
    "full outage",
    "recovery",
)
PHASES = (HEALTHY, PARTIAL_OUTAGE, FULL_OUTAGE, RECOVERY)


@dataclass(frozen=True, slots=True)
class Timeline:
    """``duration`` seconds from ``start`` (monotonic), cut into equal phases."""

    start: float
    duration: float

    @property
    def phase_length(self) -> float:
        """Seconds per phase."""
        return self.duration / len(PHASES)

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def index_at(self, elapsed: float) -> int:
        """The phase number (0..3) at ``elapsed`` seconds."""
        return min(max(int(elapsed / self.phase_length), 0), len(PHASES) - 1)

    def phase_at(self, elapsed: float) -> str:
        """The phase at ``elapsed`` seconds."""
        return PHASES[self.index_at(elapsed)]

    def phase(self) -> str:
        """The current phase."""
        return self.phase_at(self.elapsed())

    def into_phase(self) -> float:
        """Seconds since the current phase began."""
        elapsed = self.elapsed()
        return elapsed - self.index_at(elapsed) * self.phase_length
