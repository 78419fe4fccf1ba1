"""The Grafana dashboards, built with grafana-foundation-sdk (Grafana 11.6 build).

Two dashboards: ``resilience-overview`` (every service at a glance) and ``resilience-service``
(one service in depth). Conventions, as Grafana's dashboard linter and the monitoring mixins
apply them: a ``datasource`` variable that every panel and query uses, ``job`` and ``instance``
variables that every selector filters on, ``$__rate_interval`` in every ``rate``, a unit and a
description on every panel, stable uids. Metric names come from :mod:`._semconv`.

Multi-state gauges (health status, breaker state) are drawn as one numeric series per service:
each state is mapped to a rank (``clamp_max(gauge > 0, 1) * rank``) and the worst rank across
instances wins; value mappings turn the ranks back into state names.

The ``All`` value of ``job``/``instance`` is ``.*`` rather than the linter's ``.+``: series that
carry no job/instance label (such as ``ALERTS`` from rules that aggregate them away) must still
show when nothing is filtered.
"""

from __future__ import annotations

from ._common import OVERVIEW_UID, SERVICE_UID
from .overview import overview_dashboard
from .service import service_dashboard

__all__ = ["OVERVIEW_UID", "SERVICE_UID", "overview_dashboard", "service_dashboard"]
