"""``resilience-otel dashboards generate|import``: the Grafana dashboards from the command line.

Credentials come from options or, so that no secret need be on the command line (where the
process list and the shell history show it), from ``GRAFANA_TOKEN`` or ``GRAFANA_USER`` and
``GRAFANA_PASSWORD``. Options win over the environment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .._core.exceptions import ConfigError
from .._monitoring.grafana import (
    _URL_RULE,
    DEFAULT_FOLDER,
    DEFAULT_MESSAGE,
    GrafanaImportError,
    _check_url,
    import_dashboards,
    write_dashboards,
)
from .common import CommandError

__all__ = ["add_grafana_cli"]

_CREDENTIALS_HELP = """\
credentials (options win over the environment):
  GRAFANA_TOKEN     service account token, sent as a bearer token
  GRAFANA_USER      user for basic authentication instead of a token
  GRAFANA_PASSWORD  password of --user or GRAFANA_USER
Prefer the variables: options show in the process list and the shell history."""


def add_grafana_cli(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``resilience-otel dashboards generate|import`` on ``commands``."""
    parser = commands.add_parser(
        "dashboards",
        help="generate the Grafana dashboards or import them into Grafana",
        description="Generate the Grafana dashboards as JSON or import them into Grafana "
        "(needs the grafana extra).",
    )
    actions = parser.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="write the dashboards as JSON files",
        description="Write each dashboard to DIR/<uid>.json.",
    )
    generate.add_argument(
        "--output-dir",
        type=Path,
        default=Path("dashboards"),
        metavar="DIR",
        help="directory to write to, created when missing (default: %(default)s)",
    )
    generate.set_defaults(handler=_cmd_generate, command_parser=generate)
    _add_import(actions)


def _add_import(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = actions.add_parser(
        "import",
        help="create or update the dashboards in a Grafana",
        description="Create or update the dashboards in a folder of a Grafana; unchanged "
        "dashboards are left alone.",
        epilog=_CREDENTIALS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument(
        "--url",
        required=True,
        type=_grafana_url,
        help="Grafana base URL, e.g. http://localhost:3000",
    )
    auth = load.add_mutually_exclusive_group()
    auth.add_argument("--token", help="service account token (default: $GRAFANA_TOKEN)")
    auth.add_argument(
        "--user", help="user for basic authentication instead of a token (default: $GRAFANA_USER)"
    )
    load.add_argument("--password", help="password of the user (default: $GRAFANA_PASSWORD)")
    load.add_argument(
        "--folder", default=DEFAULT_FOLDER, help="folder title (default: %(default)s)"
    )
    load.add_argument(
        "--message", default=DEFAULT_MESSAGE, help="version message (default: %(default)s)"
    )
    load.set_defaults(handler=_cmd_import, command_parser=load)


def _grafana_url(text: str) -> str:
    """argparse ``type`` for ``--url``: the same check as ``import_dashboards``."""
    try:
        return _check_url(text.strip())
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"must be {_URL_RULE}, got {text!r}") from exc


def _cmd_generate(args: argparse.Namespace) -> int:
    directory: Path = args.output_dir
    try:
        paths = write_dashboards(directory)
    except ImportError as exc:
        raise CommandError(_missing_extra(exc)) from exc
    except OSError as exc:
        taken = directory.exists() and not directory.is_dir()
        reason = "not a directory" if taken else exc.strerror or str(exc)
        raise CommandError(
            f"argument --output-dir: cannot write to {str(directory)!r}: {reason}"
        ) from exc
    for path in paths:
        print(path)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    token, user, password = _credentials(args)
    try:
        report = import_dashboards(
            args.url,
            token=token,
            user=user,
            password=password,
            folder=args.folder,
            message=args.message,
        )
    except ImportError as exc:
        raise CommandError(_missing_extra(exc)) from exc
    except (ValueError, GrafanaImportError) as exc:
        raise CommandError(str(exc)) from exc
    state = "created" if report.folder_created else "exists"
    print(f"folder {report.folder!r} ({state}, uid {report.folder_uid})")
    for item in report.dashboards:
        print(f"{item.action:<10}{item.uid}  {item.title}")
    return 0


def _credentials(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """(token, user, password) from the options, else from the environment; checked whole."""
    token: str | None = args.token
    user: str | None = args.user
    password: str | None = args.password
    if token is None and user is None:
        token, user = _env("GRAFANA_TOKEN"), _env("GRAFANA_USER")
        if token is not None and user is not None:
            raise CommandError(
                "both GRAFANA_TOKEN and GRAFANA_USER are set: unset one, or pick with "
                "--token or --user"
            )
    if user is None:
        if password is not None:
            why = (
                "not with --token or GRAFANA_TOKEN"
                if token is not None
                else "it needs --user or GRAFANA_USER"
            )
            raise CommandError(f"argument --password: only for a user ({why})")
        return token, None, None
    password = password if password is not None else _env("GRAFANA_PASSWORD")
    if password is None:
        raise CommandError(
            f"user {user!r} needs a password: pass --password or set GRAFANA_PASSWORD"
        )
    return None, user, password


def _env(name: str) -> str | None:
    """The variable's value; ``None`` when unset or empty."""
    return os.environ.get(name) or None


def _missing_extra(exc: ImportError) -> str:
    return f"{exc}; install the grafana extra: pip install 'resilience-otel[grafana]'"
