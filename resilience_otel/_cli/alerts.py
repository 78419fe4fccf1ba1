"""``resilience-otel alerts render``: the Prometheus rule file from the command line.

Each numeric option is parsed for its kind (ratio, seconds, factor, count) with the bounds
:func:`resilience_otel.alerts.render_rules` enforces, so a bad value is reported by argparse
naming the option, the value and the allowed range. ``HEALTH_ALERT_THRESHOLD`` is read exactly
as the health monitor reads it, so both accept the same values.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .._config.policy import HealthConfig
from .._core.exceptions import ConfigError
from .._monitoring.alerts.params import BOUNDS
from .._monitoring.alerts.render import render_rules
from .common import CommandError, number, whole_number

if TYPE_CHECKING:
    import argparse

__all__ = ["add_alerts_cli"]

# (option, render_rules keyword, metavar, kind, help); defaults come from render_rules itself.
_NUMERIC_OPTIONS: Final = (
    ("--availability", "availability", "RATIO", "a ratio",
     "availability objective (default: $HEALTH_ALERT_THRESHOLD, else %s)"),
    ("--latency-p95", "latency_p95_seconds", "SECONDS", "seconds",
     "p95 call duration target (default %s)"),
    ("--latency-baseline-factor", "latency_baseline_factor", "FACTOR", "a factor",
     "p95 must also be this many times its 1-day average (default %s)"),
    ("--retry-ratio", "retry_ratio", "RATIO", "a ratio",
     "retries per call that make a storm (default %s)"),
    ("--dead-letter-threshold", "dead_letter_threshold", "COUNT", "a count",
     "dead letters per service in 15m that alert (default %s)"),
    ("--for-scale", "for_scale", "FACTOR", "a factor",
     "multiply every for:, e.g. 0.01 in tests (default %s)"),
    ("--window-scale", "window_scale", "FACTOR", "a factor",
     "multiply every range window, e.g. 0.02 in demos (default %s)"),
)  # fmt: skip


def add_alerts_cli(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``resilience-otel alerts render`` on the CLI's subcommands."""
    alerts = commands.add_parser("alerts", help="Prometheus alert rules")
    sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    render = sub.add_parser(
        "render",
        help="write the Prometheus rule file",
        description="Render the Prometheus rule file (YAML) for these thresholds.",
    )
    defaults = inspect.signature(render_rules).parameters
    for option, field, metavar, kind, text in _NUMERIC_OPTIONS:
        bound = BOUNDS[field]
        parse = (
            whole_number(int(bound.low), int(bound.high))
            if bound.integer
            else number(kind, bound.admits, bound.describe())
        )
        allowed = bound.describe() if bound.integer else f"{kind} {bound.describe()}"
        help_text = f"{text % defaults[field].default}; {allowed}"
        render.add_argument(option, dest=field, type=parse, metavar=metavar, help=help_text)
    render.add_argument(
        "--runbook-url",
        metavar="URL",
        help=f"where RUNBOOK.md is served (default {defaults['runbook_url'].default})",
    )
    render.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    render.set_defaults(handler=_cmd_render, command_parser=render)


def _cmd_render(args: argparse.Namespace) -> int:
    options: dict[str, object] = {
        field: getattr(args, field)
        for _, field, *_ in _NUMERIC_OPTIONS
        if getattr(args, field) is not None
    }
    if "availability" not in options:
        threshold = _health_alert_threshold()
        if threshold is not None:
            options["availability"] = threshold
    if args.runbook_url is not None:
        options["runbook_url"] = args.runbook_url
    try:
        text = render_rules(**options)  # type: ignore[arg-type]
    except ConfigError as exc:  # the numbers were checked by argparse: only --runbook-url
        raise CommandError(f"argument --runbook-url: {exc}") from exc
    _write(args.output, text)
    return 0


def _health_alert_threshold() -> float | None:
    """``HEALTH_ALERT_THRESHOLD`` as the health monitor reads it; ``None`` when unset."""
    raw = os.environ.get("HEALTH_ALERT_THRESHOLD", "")
    if not raw.strip():
        return None
    try:
        return HealthConfig.from_env({"HEALTH_ALERT_THRESHOLD": raw}).alert_threshold
    except ConfigError as exc:  # names the variable and its value
        raise CommandError(str(exc)) from exc


def _write(output: str | None, text: str) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CommandError(f"argument --output: cannot write {output!r}: {reason}") from exc
