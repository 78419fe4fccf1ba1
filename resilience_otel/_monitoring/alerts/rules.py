"""The alert and recording rules, built from thresholds (rendered to YAML by ``render``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ..._telemetry import semconv as sc
from .params import check, num

__all__ = [
    "RUNBOOK_URL",
    "SLO_WINDOWS",
    "AlertRule",
    "RecordingRule",
    "RuleGroup",
    "error_ratio",
    "format_duration",
    "rule_groups",
]

RUNBOOK_URL: Final = "alerts/RUNBOOK.md"
"""Where the runbook is served by default; each alert links ``<url>#<alertname>``."""

# (long, short, burn-rate factor) pairs from the Google SRE workbook, "Alerting on SLOs".
_PAGE_BURNS: Final = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
_TICKET_BURNS: Final = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
SLO_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""The windows of the error-ratio recording rules the burn-rate alerts read."""

_CALLS: Final = sc.PROMETHEUS_NAMES[sc.CALLS[0]]
_DURATION: Final = sc.PROMETHEUS_NAMES[sc.CALL_DURATION[0]]
_RETRIES: Final = sc.PROMETHEUS_NAMES[sc.RETRIES[0]]
_EXHAUSTED: Final = sc.PROMETHEUS_NAMES[sc.RETRIES_EXHAUSTED[0]]
_BREAKER: Final = sc.PROMETHEUS_NAMES[sc.BREAKER_STATE[0]]
_DEAD: Final = sc.PROMETHEUS_NAMES[sc.DEAD_LETTERS[0]]
_DROPPED: Final = sc.PROMETHEUS_NAMES[sc.DEAD_LETTERS_DROPPED[0]]
_HEALTH: Final = sc.PROMETHEUS_NAMES[sc.HEALTH_STATUS[0]]
_FAILOVERS: Final = sc.PROMETHEUS_NAMES[sc.FAILOVERS[0]]
_BY: Final = "job, service"
_P95: Final = f"job_service:{_DURATION}:p95_rate5m"


def error_ratio(window: str) -> str:
    """The name of the recording rule holding the share of unavailable calls over ``window``."""
    return f"job_service:resilience_call_errors:ratio_rate{window}"


@dataclass(frozen=True, slots=True)
class RecordingRule:
    """A recording rule: ``expr`` stored as the series ``record``."""

    record: str
    expr: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRule:
    """An alerting rule; ``for_`` is in seconds, before ``for_scale`` applies."""

    alert: str
    expr: str
    for_: float
    severity: str
    summary: str
    description: str

    @property
    def anchor(self) -> str:
        """The alert's section anchor in ``RUNBOOK.md`` (GitHub lowercases headings)."""
        return self.alert.lower()


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """A rule group: the rules of one concern, evaluated together."""

    name: str
    rules: tuple[RecordingRule | AlertRule, ...]


# -- numbers and durations -----------------------------------------------------------------------
def _percent(ratio: float) -> str:
    return num(ratio * 100) + "%"


_UNITS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def format_duration(seconds: float) -> str:
    """Prometheus duration syntax, to the millisecond: ``90`` -> ``1m30s``, ``0.6`` -> ``600ms``."""
    left = round(seconds * 1000)
    parts = []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# -- expressions ---------------------------------------------------------------------------------
def _sel(name: str, **labels: str) -> str:
    """``name{a="b", c=~"d|e"}``; a value starting with ``~`` or ``!`` picks that matcher."""
    matchers = []
    for key, value in labels.items():
        op = {"~": "=~", "!": "!="}.get(value[:1], "=")
        matchers.append(f'{key}{op}"{value.lstrip("~!") if op != "=" else value}"')
    return f"{name}{{{', '.join(matchers)}}}" if matchers else name


def _new_or_increase(selector: str, window: str, by: str = _BY) -> str:
    """Events over ``window`` summed ``by`` labels, counting series born inside it from zero.

    OTel creates a counter series at its first event, already at 1; ``increase`` alone would
    miss that first event, so a series absent ``window`` ago counts with its full value.
    """
    return (
        f"sum by ({by}) (\n  sum without () (\n    {selector}\n"
        f"    unless {selector} offset {window}\n  )\n  or increase({selector}[{window}])\n)"
    )


def _ratio_rule(window: str) -> RecordingRule:
    failed = _sel(_CALLS, outcome="failure", error_class="~transient|critical|failover")
    rejected = _sel(_CALLS, outcome="rejected")
    expr = (
        f"sum by ({_BY}) (\n  rate({failed}[{window}])\n  or rate({rejected}[{window}])\n"
        f"  or 0 * rate({_CALLS}[{window}])\n)\n/\nsum by ({_BY}) (rate({_CALLS}[{window}]))"
    )
    return RecordingRule(error_ratio(window), expr)


def _p95_rule() -> RecordingRule:
    bucket = _sel(f"{_DURATION}_bucket", outcome="!rejected")
    count = _sel(f"{_DURATION}_count", outcome="!rejected")
    expr = (
        f"histogram_quantile(0.95,\n  sum by ({_BY}, le) (rate({bucket}[5m]))\n)\n"
        f"and\nsum by ({_BY}) (rate({count}[5m])) > 0"
    )
    return RecordingRule(_P95, expr)


# A burn-rate condition never asks for more errors than this share of the calls.
_MAX_BURN_RATIO: Final = 0.9


def _reachable(pairs: tuple[tuple[str, str, float], ...], budget: float
               ) -> tuple[tuple[str, str, float], ...]:  # fmt: skip
    """``pairs`` with each factor lowered, to a tenth, until ``factor * budget`` is at most 90%.

    Below availability 1 - 1/14.4 the page's 14.4x would need more than 100% errors and could
    never fire: it becomes the fastest burn within 90% errors (9x at 0.9). Never below 1x: a
    slower burn leaves budget at the end of the 30 days, nothing to alert on.
    """
    capped = []
    for long, short, factor in pairs:
        if factor * budget > _MAX_BURN_RATIO:
            factor = max(1.0, math.floor(_MAX_BURN_RATIO / budget * 10) / 10)
        capped.append((long, short, factor))
    return tuple(capped)


def _burn(pairs: tuple[tuple[str, str, float], ...], budget: str) -> str:
    terms = [
        f"(\n  {error_ratio(long)} > ({num(factor)} * {budget})\n  and\n"
        f"  {error_ratio(short)} > ({num(factor)} * {budget})\n)"
        for long, short, factor in pairs
    ]
    return "\nor\n".join(terms)


# -- the rules -----------------------------------------------------------------------------------
_SVC: Final = "{{ $labels.service }}"
_JOB: Final = "(job {{ $labels.job }})"
_VALUE: Final = "{{ $value }}"
_PCT: Final = "{{ $value | humanizePercentage }}"
_NUM: Final = "{{ $value | humanize }}"
_DB: Final = f"{{{{ $labels.{sc.DB_SYSTEM_LABEL} }}}}"


def _alert(name: str, severity: str, for_: float, expr: str, summary: str, text: str) -> AlertRule:
    return AlertRule(alert="Resilience" + name, severity=severity, for_=for_, expr=expr,
                     summary=summary, description=text)  # fmt: skip


def _groups(availability: float, latency: float, factor: float, retry_ratio: float,
            dead_letters: float) -> tuple[RuleGroup, ...]:  # fmt: skip
    target, budget, limit = _percent(availability), _percent(1 - availability), num(dead_letters)
    budget_ratio, p95_target, times = num(1 - availability), num(latency), num(factor)
    page = _reachable(_PAGE_BURNS, round(1 - availability, 12))
    ticket = _reachable(_TICKET_BURNS, round(1 - availability, 12))
    page_x, ticket_x = (" or ".join(f"{num(f)}x" for *_, f in p) for p in (page, ticket))
    days = num(round(30 / min(f for *_, f in page), 1))
    seen = f"last_over_time({_CALLS}[1h])"
    failover = _new_or_increase(_FAILOVERS, "5m", f"{_BY}, {sc.DB_SYSTEM_LABEL}") + " > 0"
    breaker = f"sum by ({_BY}) ({_sel(_BREAKER, state='~open|half_open')}) > 0"
    unhealthy = f"max by (job, instance, service) ({_sel(_HEALTH, status='unhealthy')}) == 1"
    slow = f"{_P95} > {p95_target}\nand\n{_P95}\n  > {times} * avg_over_time({_P95}[1d])"
    storm = (
        f"sum by ({_BY}) (rate({_RETRIES}[5m]))\n/\nsum by ({_BY}) (rate({_CALLS}[5m]))\n"
        f"> {num(retry_ratio)}"
    )
    down = (
        f"(up == 0)\n* on (job, instance) group_right ()\n"
        f"  count by (job, instance, service) ({seen})"
    )
    return (
        RuleGroup("resilience-breaker", (
            _alert("CircuitBreakerOpen", "critical", 60, breaker, f"{_SVC} circuit breaker open",
                   f"{_VALUE} circuit breaker(s) of {_SVC} {_JOB} have been open or half-open for "
                   "more than 1m: calls are rejected without reaching the upstream."),
        )),
        # Rules in a group run in order: each alert sees this evaluation's recorded ratios.
        RuleGroup("resilience-availability", (
            *(_ratio_rule(window) for window in SLO_WINDOWS),
            _alert("ErrorRateHigh", "warning", 300, f"{error_ratio('5m')} > {budget_ratio}",
                   f"{_SVC} availability below {target}",
                   f"{_PCT} of the calls to {_SVC} {_JOB} failed or were rejected over the last "
                   f"5m; the availability target {target} allows {budget}."),
            _alert("ErrorBudgetBurnFast", "critical", 120, _burn(page, budget_ratio),
                   f"{_SVC} is burning its error budget fast",
                   f"{_PCT} of the calls to {_SVC} {_JOB} failed over the last 1h or 6h: over "
                   f"{page_x} the {budget} error budget of the {target} availability target; "
                   f"a 30-day budget lasts at most {days} days at this rate."),
            _alert("ErrorBudgetBurnSlow", "warning", 900, _burn(ticket, budget_ratio),
                   f"{_SVC} is burning its error budget",
                   f"{_PCT} of the calls to {_SVC} {_JOB} failed over the last 1d or 3d: over "
                   f"{ticket_x} the {budget} error budget of the {target} availability target; "
                   "the 30-day budget will run out."),
            _alert("CriticalErrors", "critical", 60,
                   _new_or_increase(_sel(_CALLS, error_class="critical"), "5m") + " > 0",
                   f"Critical errors calling {_SVC}",
                   f"{_NUM} call(s) to {_SVC} {_JOB} ended in a CRITICAL error in the last 5m "
                   "(certificate, disk full, out of memory, data corruption, MISCONF): these "
                   "are never retried and need a person."),
            _alert("ServiceUnhealthy", "critical", 120, unhealthy, f"{_SVC} is unhealthy",
                   f"The health monitor of {{{{ $labels.instance }}}} {_JOB} has reported {_SVC} "
                   f"unhealthy for more than 2m (status gauge {_VALUE}): its breaker is open, "
                   "its availability is below the health threshold or its active checks fail."),
        )),
        RuleGroup("resilience-failover", (
            _alert("FailoverDetected", "warning", 60, failover, f"{_SVC} failed over",
                   f"{_NUM} attempt(s) of {_SVC} {_JOB} reached a {_DB} node that is no longer "
                   "the primary in the last 5m (READONLY, 25006, ...): its connections were "
                   "retired and the statements resent to the new primary. Check which node is "
                   "primary now and whether writes failed."),
        )),
        RuleGroup("resilience-latency", (
            _p95_rule(),
            _alert("LatencyDegraded", "warning", 600, slow, f"{_SVC} responds slowly",
                   f"The p95 duration of calls to {_SVC} {_JOB} is "
                   f"{{{{ $value | humanizeDuration }}}}, above the {p95_target}s target and "
                   f"over {times}x its average of the last day."),
        )),
        RuleGroup("resilience-retries", (
            _alert("RetriesExhausted", "warning", 300,
                   f"sum by ({_BY}) (increase({_EXHAUSTED}[5m])) > 0",
                   f"Retries exhausted calling {_SVC}",
                   f"{_NUM} call(s) to {_SVC} {_JOB} failed after their last retry in the last "
                   "5m, and it keeps happening."),
            _alert("RetryStorm", "warning", 600, storm, f"Retry storm against {_SVC}",
                   f"Retries to {_SVC} {_JOB} amount to {_PCT} of its calls (limit "
                   f"{_percent(retry_ratio)}): they add load to a struggling upstream."),
        )),
        RuleGroup("resilience-dead-letters", (
            _alert("DeadLettersAccumulating", "warning", 300,
                   f"sum by ({_BY}) (increase({_DEAD}[15m])) > {limit}",
                   f"Dead letters accumulating for {_SVC}",
                   f"{_NUM} calls to {_SVC} {_JOB} became dead letters in the last 15m (more "
                   f"than {limit}); they wait for a replay."),
            _alert("DeadLettersDropped", "critical", 60, _new_or_increase(_DROPPED, "5m") + " > 0",
                   f"Dead letters dropped for {_SVC}",
                   f"The dead-letter queue of {_SVC} {_JOB} is full: {_NUM} dead letter(s) were "
                   "dropped in the last 5m and are lost."),
        )),
        RuleGroup("resilience-scrape", (
            _alert("TargetDown", "warning", 300, down, f"Metrics of {_SVC} cannot be scraped",
                   f"Prometheus cannot scrape {{{{ $labels.instance }}}} {_JOB}, which reports "
                   f"calls to {_SVC} (up = {_VALUE}): the other resilience alerts are blind."),
            _alert("MetricsAbsent", "info", 600,
                   f"count by ({_BY}) ({seen})\nunless\ncount by ({_BY}) ({_CALLS})",
                   f"No resilience metrics for {_SVC}",
                   f"{_VALUE} {_CALLS} series of {_SVC} {_JOB} seen in the last hour are gone: "
                   "the process restarted and made no call since, or stopped reporting."),
        )),
    )  # fmt: skip


def rule_groups(
    *,
    availability: float = 0.95,
    latency_p95_seconds: float = 1.0,
    latency_baseline_factor: float = 2.0,
    retry_ratio: float = 0.2,
    dead_letter_threshold: int = 10,
) -> tuple[RuleGroup, ...]:
    """The rules grouped by concern, recording rules first (arguments: :func:`render_rules`).

    Raises:
        ConfigError: naming the argument and the value when one is out of range.
    """
    return _groups(
        check("availability", availability),
        check("latency_p95_seconds", latency_p95_seconds),
        check("latency_baseline_factor", latency_baseline_factor),
        check("retry_ratio", retry_ratio),
        check("dead_letter_threshold", dead_letter_threshold),
    )
