"""The ``resilience-otel`` command line.

One subcommand per task, each handled by one small ``_cmd_*`` function::

    resilience-otel demo [--scenario full|http] [--duration 60]
    resilience-otel alerts render [--output FILE] ...
    resilience-otel dashboards generate|import ...

A user error (a bad option value, a path that cannot be written, a Grafana that cannot be
reached or refuses) is one line on standard error and exit status 2, like argparse's own
errors; a traceback means a bug.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Final, cast

from . import alerts, grafana
from ._cli.common import CliParser, CommandError, fail, number
from ._demo import SCENARIOS, run_demo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]


# A demo longer than a day is a typo; far longer ones overflow the event loop's timers.
_MAX_DEMO_SECONDS: Final = 86_400
_demo_seconds = number(
    "seconds", lambda s: 0 < s <= _MAX_DEMO_SECONDS, f"> 0 and <= {_MAX_DEMO_SECONDS}"
)


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
        type=_demo_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long the scenario runs, split into four equal phases (default: %(default)g)",
    )
    parser.set_defaults(handler=_cmd_demo, command_parser=parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``resilience-otel`` argument parser with every subcommand."""
    parser = CliParser(
        prog="resilience-otel",
        description="Resilient, observable outbound calls: tools and demos.",
    )
    # Subcommand parsers are CliParsers too (argparse uses the parent's class).
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    _add_demo(commands)
    alerts.add_cli(commands)
    grafana.add_cli(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); return the exit code.

    Raises:
        SystemExit: with status 2 after printing a one-line error for a user error, and as
            argparse raises it for ``--help``.
    """
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        fail(args.command_parser, str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
