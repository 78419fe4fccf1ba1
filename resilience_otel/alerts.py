"""Prometheus alert and recording rules for the resilience metrics, defined as data.

The rules live here as :class:`RuleGroup` values built from the metric names of the contract;
:func:`render_rules` turns them into a Prometheus rule file (YAML from a small deterministic
emitter: no YAML library needed). The committed ``alerts/resilience-rules.yml`` is
``render_rules()`` with the defaults; regenerate it with::

    resilience-otel alerts render --output alerts/resilience-rules.yml

Every series is aggregated ``by (job, service)`` (``instance`` too where a process speaks for
itself), so the OTel exporter's ``otel_scope_*`` labels never leak into alerts. Unavailable
calls are ``outcome="failure"`` with a TRANSIENT or CRITICAL error class plus every rejected
call; PERMANENT failures are the caller's fault and count as available.
"""

from __future__ import annotations

from ._cli.alerts import add_alerts_cli as add_cli
from ._monitoring.alerts.render import render_rules
from ._monitoring.alerts.rules import (
    RUNBOOK_URL,
    SLO_WINDOWS,
    AlertRule,
    RecordingRule,
    RuleGroup,
    error_ratio,
    format_duration,
    rule_groups,
)

__all__ = [
    "RUNBOOK_URL",
    "SLO_WINDOWS",
    "AlertRule",
    "RecordingRule",
    "RuleGroup",
    "add_cli",
    "error_ratio",
    "format_duration",
    "render_rules",
    "rule_groups",
]
