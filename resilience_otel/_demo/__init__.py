"""The ``resilience-otel demo`` scenarios.

``full`` (the default) runs embedded trading-style and AI-style HTTP APIs, plus Redis and
PostgreSQL when they are reachable, through healthy, partial outage, full outage and recovery
phases, with a live view, ``/metrics`` and ``/health`` endpoints and, when the binaries are
installed, a local Prometheus and Alertmanager evaluating the shipped alert rules. ``http``
is the small single-upstream scenario.
"""

from __future__ import annotations

import sys
from typing import TextIO

from . import http

__all__ = ["SCENARIOS", "run_demo"]

SCENARIOS: dict[str, str] = {
    "full": "trading and AI HTTP APIs, Redis and PostgreSQL (when reachable) through an outage, "
    "with a live view, metrics, health and alerts",
    "http": http.DESCRIPTION,
}


def run_demo(scenario: str, *, duration: float, out: TextIO | None = None) -> int:
    """Run ``scenario`` for ``duration`` seconds, printing to ``out`` (stdout by default).

    Returns:
        The process exit code: 0, 130 when interrupted with Ctrl-C (143 after SIGTERM in
        the full scenario); the clean-up runs in every case.

    Raises:
        ValueError: for an unknown scenario or a duration that is not positive.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration!r}")
    stream = out if out is not None else sys.stdout
    if scenario == "http":
        return http.run_http(duration, stream)
    from .full import run_full  # needs the demo extras; imported only when asked for

    return run_full(duration, stream)
