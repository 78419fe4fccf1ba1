"""The TCP fault proxy, re-exported for the tests; it lives in the package
(:mod:`resilience_otel._demo.tcpproxy`) because the demo uses it too."""

from __future__ import annotations

from resilience_otel._demo.tcpproxy import BLACKHOLE, LATENCY, PASS, RESET, FaultProxy

__all__ = ["BLACKHOLE", "LATENCY", "PASS", "RESET", "FaultProxy"]
