"""The ``resilience-otel`` command line.

One subcommand per task, each handled by one small ``_cmd_*`` function::

    resilience-otel demo [--scenario full|http] [--duration 60]
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from . import alerts, grafana
from ._demo import SCENARIOS, run_demo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]


def _positive_seconds(text: str) -> float:
    """argparse ``type`` for durations: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    scenario: str = args.scenario
    duration: float = args.duration
    return run_demo(scenario, duration=duration)


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scenarios = "\n".join(f"  {name:<8}{text}" for name, text in SCENARIOS.items())
    parser = commands.add_parser(
        "demo",
        help="watch breakers, retries, dead letters, health and alerts through an outage",
        description="Run a scenario against local flaky upstreams and show what happens.",
        epilog=f"scenarios:\n{scenarios}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="full",
        help="which scenario to run (default: %(default)s; listed below)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long the scenario runs, split into four equal phases (default: %(default)g)",
    )
    parser.set_defaults(handler=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``resilience-otel`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="resilience-otel",
        description="Resilient, observable outbound calls: tools and demos.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    alerts.add_cli(commands)
    grafana.add_cli(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
