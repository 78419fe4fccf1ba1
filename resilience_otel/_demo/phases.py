"""The scenario clock shared by every demo: a run of ``duration`` seconds cut into equal
phases (healthy, partial outage, full outage, recovery; the full demo adds a failover)."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = [
    "FAILOVER",
    "FULL_OUTAGE",
    "FULL_PHASES",
    "HEALTHY",
    "PARTIAL_OUTAGE",
    "PHASES",
    "RECOVERY",
    "Timeline",
]

HEALTHY, PARTIAL_OUTAGE, FULL_OUTAGE, RECOVERY = (
    "healthy",
    "partial outage",
    "full outage",
    "recovery",
)
PHASES = (HEALTHY, PARTIAL_OUTAGE, FULL_OUTAGE, RECOVERY)
FAILOVER = "failover"
# The full demo ends with its Redis primary handing over to the replica under load.
FULL_PHASES = (*PHASES, FAILOVER)


@dataclass(frozen=True, slots=True)
class Timeline:
    """``duration`` seconds from ``start`` (monotonic), cut into equal ``phases``."""

    start: float
    duration: float
    phases: tuple[str, ...] = PHASES

    @property
    def phase_length(self) -> float:
        """Seconds per phase."""
        return self.duration / len(self.phases)

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def index_at(self, elapsed: float) -> int:
        """The phase number (from 0) at ``elapsed`` seconds."""
        return min(max(int(elapsed / self.phase_length), 0), len(self.phases) - 1)

    def phase_at(self, elapsed: float) -> str:
        """The phase at ``elapsed`` seconds."""
        return self.phases[self.index_at(elapsed)]

    def phase(self) -> str:
        """The current phase."""
        return self.phase_at(self.elapsed())

    def into_phase(self) -> float:
        """Seconds since the current phase began."""
        elapsed = self.elapsed()
        return elapsed - self.index_at(elapsed) * self.phase_length
