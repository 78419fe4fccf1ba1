"""Prometheus alert and recording rules for the resilience metrics, defined as data.

The rules live here as :class:`RuleGroup` values built from the metric names in ``_semconv``;
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

import argparse
import inspect
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import _semconv as sc
from ._exceptions import ConfigError

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

RUNBOOK_URL: Final = "alerts/RUNBOOK.md"
# (long, short, burn-rate factor) pairs from the Google SRE workbook, "Alerting on SLOs".
_PAGE_BURNS: Final = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
_TICKET_BURNS: Final = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
SLO_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

_CALLS: Final = sc.PROMETHEUS_NAMES[sc.CALLS[0]]
_DURATION: Final = sc.PROMETHEUS_NAMES[sc.CALL_DURATION[0]]
_RETRIES: Final = sc.PROMETHEUS_NAMES[sc.RETRIES[0]]
_EXHAUSTED: Final = sc.PROMETHEUS_NAMES[sc.RETRIES_EXHAUSTED[0]]
_BREAKER: Final = sc.PROMETHEUS_NAMES[sc.BREAKER_STATE[0]]
_DEAD: Final = sc.PROMETHEUS_NAMES[sc.DEAD_LETTERS[0]]
_DROPPED: Final = sc.PROMETHEUS_NAMES[sc.DEAD_LETTERS_DROPPED[0]]
_HEALTH: Final = sc.PROMETHEUS_NAMES[sc.HEALTH_STATUS[0]]
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
def _num(value: float) -> str:
    """A PromQL number literal without float noise (``1 - 0.99`` -> ``0.01``)."""
    return format(round(value, 12), ".12g")


def _percent(ratio: float) -> str:
    return _num(ratio * 100) + "%"


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


# -- validation ----------------------------------------------------------------------------------
def _check(field: str, value: object, low: float, high: float = math.inf, *, low_open: bool = True,
           why: str = "") -> float:  # fmt: skip
    """Return ``value`` as a float if it is a finite number above ``low`` and below ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be a number, got {value!r}", field=field)
    number = float(value)
    above = number > low if low_open else number >= low
    below = number < high
    if not (math.isfinite(number) and above and below):
        lower = f"{'>' if low_open else '>='} {_num(low)}"
        upper = "" if math.isinf(high) else f" and < {_num(high)}"
        raise ConfigError(f"{field} must be {lower}{upper}{why}, got {value!r}", field=field)
    return number


# Below this the fast-burn page (14.4x the error budget) would need more than 100% errors.
_MIN_AVAILABILITY: Final = 1.0 - 1.0 / _PAGE_BURNS[0][2]
_WHY: Final = " (so that 14.4x its error budget stays below 100% and the fast burn can page)"


# -- expressions ---------------------------------------------------------------------------------
def _sel(name: str, **labels: str) -> str:
    """``name{a="b", c=~"d|e"}``; a value starting with ``~`` or ``!`` picks that matcher."""
    matchers = []
    for key, value in labels.items():
        op = {"~": "=~", "!": "!="}.get(value[:1], "=")
        matchers.append(f'{key}{op}"{value.lstrip("~!") if op != "=" else value}"')
    return f"{name}{{{', '.join(matchers)}}}" if matchers else name


def _new_or_increase(selector: str, window: str) -> str:
    """Events over ``window``, counting series born inside it from zero.

    OTel creates a counter series at its first event, already at 1; ``increase`` alone would
    miss that first event, so a series absent ``window`` ago counts with its full value.
    """
    return (
        f"sum by ({_BY}) (\n  sum without () (\n    {selector}\n"
        f"    unless {selector} offset {window}\n  )\n  or increase({selector}[{window}])\n)"
    )


def _ratio_rule(window: str) -> RecordingRule:
    failed = _sel(_CALLS, outcome="failure", error_class="~transient|critical")
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


def _burn(pairs: tuple[tuple[str, str, float], ...], budget: str) -> str:
    terms = [
        f"(\n  {error_ratio(long)} > ({_num(factor)} * {budget})\n  and\n"
        f"  {error_ratio(short)} > ({_num(factor)} * {budget})\n)"
        for long, short, factor in pairs
    ]
    return "\nor\n".join(terms)


# -- the rules -----------------------------------------------------------------------------------
_SVC: Final = "{{ $labels.service }}"
_JOB: Final = "(job {{ $labels.job }})"
_VALUE: Final = "{{ $value }}"
_PCT: Final = "{{ $value | humanizePercentage }}"
_NUM: Final = "{{ $value | humanize }}"


def _alert(name: str, severity: str, for_: float, expr: str, summary: str, text: str) -> AlertRule:
    return AlertRule(alert="Resilience" + name, severity=severity, for_=for_, expr=expr,
                     summary=summary, description=text)  # fmt: skip


def _groups(availability: float, latency: float, factor: float, retry_ratio: float,
            dead_letters: float) -> tuple[RuleGroup, ...]:  # fmt: skip
    target, budget, limit = _percent(availability), _percent(1 - availability), _num(dead_letters)
    budget_ratio, p95_target, times = _num(1 - availability), _num(latency), _num(factor)
    seen = f"last_over_time({_CALLS}[1h])"
    breaker = f"sum by ({_BY}) ({_sel(_BREAKER, state='~open|half_open')}) > 0"
    unhealthy = f"max by (job, instance, service) ({_sel(_HEALTH, status='unhealthy')}) == 1"
    slow = f"{_P95} > {p95_target}\nand\n{_P95}\n  > {times} * avg_over_time({_P95}[1d])"
    storm = (
        f"sum by ({_BY}) (rate({_RETRIES}[5m]))\n/\nsum by ({_BY}) (rate({_CALLS}[5m]))\n"
        f"> {_num(retry_ratio)}"
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
            _alert("ErrorBudgetBurnFast", "critical", 120, _burn(_PAGE_BURNS, budget_ratio),
                   f"{_SVC} is burning its error budget fast",
                   f"{_PCT} of the calls to {_SVC} {_JOB} failed over the last 1h or 6h: over "
                   f"14.4x or 6x the {budget} error budget of the {target} availability target; "
                   "a 30-day budget lasts at most 5 days at this rate."),
            _alert("ErrorBudgetBurnSlow", "warning", 900, _burn(_TICKET_BURNS, budget_ratio),
                   f"{_SVC} is burning its error budget",
                   f"{_PCT} of the calls to {_SVC} {_JOB} failed over the last 1d or 3d: over "
                   f"3x or 1x the {budget} error budget of the {target} availability target; "
                   "the 30-day budget will run out."),
            _alert("CriticalErrors", "critical", 60,
                   _new_or_increase(_sel(_CALLS, error_class="critical"), "5m") + " > 0",
                   f"Critical errors calling {_SVC}",
                   f"{_NUM} call(s) to {_SVC} {_JOB} ended in a CRITICAL error in the last 5m "
                   "(certificate, disk full, out of memory, data corruption, READONLY): these "
                   "are never retried and need a person."),
            _alert("ServiceUnhealthy", "critical", 120, unhealthy, f"{_SVC} is unhealthy",
                   f"The health monitor of {{{{ $labels.instance }}}} {_JOB} has reported {_SVC} "
                   f"unhealthy for more than 2m (status gauge {_VALUE}): its breaker is open, "
                   "its availability is below the health threshold or its active checks fail."),
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
    dead_letter_threshold: float = 10,
) -> tuple[RuleGroup, ...]:
    """The rules grouped by concern, recording rules first (arguments: :func:`render_rules`).

    Raises:
        ConfigError: naming the argument and the value when one is out of range.
    """
    return _groups(
        _check("availability", availability, _MIN_AVAILABILITY, 1.0, why=_WHY),
        _check("latency_p95_seconds", latency_p95_seconds, 0.0),
        _check("latency_baseline_factor", latency_baseline_factor, 1.0, low_open=False),
        _check("retry_ratio", retry_ratio, 0.0),
        _check("dead_letter_threshold", dead_letter_threshold, 0.0, low_open=False),
    )


# -- YAML ----------------------------------------------------------------------------------------
_PLAIN: Final = re.compile(r"[A-Za-z]([\w.:/#-]*[\w./#-])?|\d+(ms|[smhdwy])(\d+(ms|[smhdwy]))*")
_NUMBER: Final = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_KEYWORDS: Final = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})


def _scalar(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _block(key: str, text: str, indent: str) -> list[str]:
    body = [f"{indent}  {line}" if line else "" for line in text.splitlines()]
    return [f"{indent}{key}: |-", *body]


_RANGE: Final = re.compile(r"\[(\d+)(ms|s|m|h|d|w)\]")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _scale_ranges(expr: str, scale: float) -> str:
    """Shrink every range window (``[5m]`` -> ``[6s]`` at 0.02), never below 4s (a rate
    needs two samples at a 1s scrape interval)."""
    if scale == 1.0:
        return expr

    def shrink(match: re.Match[str]) -> str:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] * scale
        return f"[{format_duration(max(seconds, 4.0))}]"

    return _RANGE.sub(shrink, expr)


def _rule_yaml(
    rule: RecordingRule | AlertRule, for_scale: float, runbook: str, window_scale: float = 1.0
) -> list[str]:
    pad = " " * 8
    expr = _scale_ranges(rule.expr, window_scale)
    if isinstance(rule, RecordingRule):
        return [f"      - record: {_scalar(rule.record)}", *_block("expr", expr, pad)]
    annotations = {
        "summary": rule.summary,
        "description": rule.description,
        "runbook_url": f"{runbook}#{rule.anchor}",
    }
    return [
        f"      - alert: {_scalar(rule.alert)}",
        *_block("expr", expr, pad),
        f"{pad}for: {format_duration(rule.for_ * for_scale)}",
        f"{pad}labels:",
        f"{pad}  severity: {_scalar(rule.severity)}",
        f"{pad}annotations:",
        *(f"{pad}  {key}: {_scalar(value)}" for key, value in annotations.items()),
    ]


def render_rules(
    *,
    availability: float = 0.95,
    latency_p95_seconds: float = 1.0,
    latency_baseline_factor: float = 2.0,
    retry_ratio: float = 0.2,
    for_scale: float = 1.0,
    dead_letter_threshold: float = 10,
    runbook_url: str = RUNBOOK_URL,
    window_scale: float = 1.0,
) -> str:
    """The Prometheus rule file (YAML) for these thresholds.

    Args:
        availability: the availability objective, below 1 and above 1 - 1/14.4 (so the
            fast-burn page can fire); its error budget ``1 - availability`` drives the
            error-rate and burn-rate alerts. ``HEALTH_ALERT_THRESHOLD`` in the CLI.
        latency_p95_seconds: the p95 call duration above which latency may be degraded.
        latency_baseline_factor: ... and over this many times its average of the last day (>= 1).
        retry_ratio: retries per call above which retries storm (> 0; 0.2 = one per 5 calls).
        for_scale: multiplies every ``for:`` (> 0; tests use e.g. 0.01).
        dead_letter_threshold: dead letters per service in 15 minutes above which they
            accumulate (>= 0).
        runbook_url: where ``RUNBOOK.md`` is served; each alert links ``<url>#<alertname>``.
        window_scale: multiplies every range window (> 0, at most 1; demos and end-to-end
            tests use e.g. 0.02 so alerts also resolve within seconds). Recording rules keep
            their nominal names (``..._rate5m``).

    Raises:
        ConfigError: naming the option and the value when one is out of range.
    """
    scale = _check("for_scale", for_scale, 0.0)
    windows = _check("window_scale", window_scale, 0.0)
    if windows > 1.0:  # longer windows than the shipped ones make no sense
        raise ConfigError(
            f"window_scale must be > 0 and <= 1, got {window_scale!r}", field="window_scale"
        )
    if not isinstance(runbook_url, str) or not runbook_url.strip() or "#" in runbook_url:
        raise ConfigError(f"runbook_url must be a URL without '#', got {runbook_url!r}",
                          field="runbook_url")  # fmt: skip
    thresholds = {
        "availability": availability,
        "latency_p95_seconds": latency_p95_seconds,
        "latency_baseline_factor": latency_baseline_factor,
        "retry_ratio": retry_ratio,
        "dead_letter_threshold": dead_letter_threshold,
    }
    groups = rule_groups(**thresholds)
    scales = [("for_scale", scale)] + ([("window_scale", windows)] if windows != 1.0 else [])
    settings = ", ".join(f"{k}={_num(v)}" for k, v in [*thresholds.items(), *scales])
    lines = [
        "# Generated by resilience_otel.alerts.render_rules(); do not edit by hand.",
        f"# {settings}",
        "# The committed alerts/resilience-rules.yml (defaults) is regenerated with:",
        "#   resilience-otel alerts render --output alerts/resilience-rules.yml",
        "groups:",
    ]
    for group in groups:
        lines += [f"  - name: {_scalar(group.name)}", "    rules:"]
        for rule in group.rules:
            lines += _rule_yaml(rule, scale, runbook_url, windows)
    return "\n".join(lines) + "\n"


# -- command line --------------------------------------------------------------------------------
# (option, render_rules keyword, metavar, help); the defaults come from render_rules itself.
_CLI_OPTIONS: Final = (
    ("--availability", "availability", "RATIO", "availability objective; default: "
     "$HEALTH_ALERT_THRESHOLD, else %s"),
    ("--latency-p95", "latency_p95_seconds", "SECONDS", "p95 call duration target (default %s)"),
    ("--latency-baseline-factor", "latency_baseline_factor", "FACTOR",
     "p95 must also be this many times its 1-day average (default %s)"),
    ("--retry-ratio", "retry_ratio", "RATIO", "retries per call that make a storm (default %s)"),
    ("--dead-letter-threshold", "dead_letter_threshold", "COUNT",
     "dead letters per service in 15m that alert (default %s)"),
    ("--for-scale", "for_scale", "FACTOR", "multiply every for:, e.g. 0.01 in tests (default %s)"),
    ("--window-scale", "window_scale", "FACTOR",
     "multiply every range window, e.g. 0.02 in demos (default %s)"),
    ("--runbook-url", "runbook_url", "URL", "where RUNBOOK.md is served (default %s)"),
)  # fmt: skip


def _cmd_render(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.render_parser
    options = {f: getattr(args, f) for _, f, _, _ in _CLI_OPTIONS if getattr(args, f) is not None}
    names = {f: o for o, f, _, _ in _CLI_OPTIONS}
    env = os.environ.get("HEALTH_ALERT_THRESHOLD", "").strip()
    if "availability" not in options and env:  # the design's knob for the same objective
        names["availability"] = f"HEALTH_ALERT_THRESHOLD={env!r}"
        options["availability"] = float(env) if _NUMBER.fullmatch(env) else env
    try:
        text = render_rules(**options)
    except ConfigError as exc:
        parser.error(f"{names.get(exc.field or '', exc.field)}: {exc}")
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def add_cli(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``resilience-otel alerts render`` on the CLI's subcommands."""
    alerts = commands.add_parser("alerts", help="Prometheus alert rules")
    sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    render = sub.add_parser(
        "render",
        help="write the Prometheus rule file",
        description="Render the Prometheus rule file (YAML) for these thresholds.",
    )
    defaults = inspect.signature(render_rules).parameters
    for option, field, metavar, text in _CLI_OPTIONS:
        kind = str if field == "runbook_url" else float
        help_text = text % defaults[field].default
        render.add_argument(option, dest=field, type=kind, metavar=metavar, help=help_text)
    render.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    render.set_defaults(handler=_cmd_render, render_parser=render)
