"""Grafana dashboards: build them from code, write them to disk, import them into Grafana.

The dashboards are defined in :mod:`._dashboards` with grafana-foundation-sdk; the committed
files in ``dashboards/`` are their output (a test fails on drift). On the command line::

    resilience-otel dashboards generate [--output-dir dashboards]
    resilience-otel dashboards import --url URL [--token T | --user U --password P]
                                      [--folder NAME] [--message TEXT]

The credentials may come from ``GRAFANA_TOKEN`` or ``GRAFANA_USER`` and ``GRAFANA_PASSWORD``
instead, so no secret need be on the command line.

Everything here needs the ``grafana`` extra (grafana-foundation-sdk, grafana-client), imported
only when a function runs, so the rest of the package and its CLI work without it.

Importing is idempotent: each dashboard is fetched first and only saved when its JSON (ignoring
Grafana's ``id`` and ``version``) or its folder differ, so a second import reports every
dashboard ``unchanged`` and sends no save at all (Grafana's version history stays clean).
"""

from __future__ import annotations

from ._cli.grafana import add_grafana_cli as add_cli
from ._monitoring.grafana import (
    DEFAULT_FOLDER,
    DEFAULT_MESSAGE,
    DashboardImport,
    GrafanaImportError,
    ImportReport,
    build_dashboards,
    import_dashboards,
    render_dashboard,
    write_dashboards,
)

__all__ = [
    "DEFAULT_FOLDER",
    "DEFAULT_MESSAGE",
    "DashboardImport",
    "GrafanaImportError",
    "ImportReport",
    "add_cli",
    "build_dashboards",
    "import_dashboards",
    "render_dashboard",
    "write_dashboards",
]
