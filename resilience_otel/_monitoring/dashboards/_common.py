"""Shared constants, PromQL helpers and panel builders of the dashboards."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from ..._telemetry import semconv as sc

OVERVIEW_UID = "resilience-overview"
SERVICE_UID = "resilience-service"
TAGS = ["resilience", "resilience-otel"]

CALLS = sc.PROMETHEUS_NAMES[sc.CALLS[0]]
CALL_DURATION = sc.PROMETHEUS_NAMES[sc.CALL_DURATION[0]]
RETRIES = sc.PROMETHEUS_NAMES[sc.RETRIES[0]]
RETRIES_EXHAUSTED = sc.PROMETHEUS_NAMES[sc.RETRIES_EXHAUSTED[0]]
BREAKER_STATE = sc.PROMETHEUS_NAMES[sc.BREAKER_STATE[0]]
BREAKER_TRANSITIONS = sc.PROMETHEUS_NAMES[sc.BREAKER_TRANSITIONS[0]]
DEAD_LETTERS = sc.PROMETHEUS_NAMES[sc.DEAD_LETTERS[0]]
DEAD_LETTERS_DROPPED = sc.PROMETHEUS_NAMES[sc.DEAD_LETTERS_DROPPED[0]]
HEALTH_STATUS = sc.PROMETHEUS_NAMES[sc.HEALTH_STATUS[0]]
HEALTH_SCORE = sc.PROMETHEUS_NAMES[sc.HEALTH_SCORE[0]]
HEALTH_ERROR_RATIO = sc.PROMETHEUS_NAMES[sc.HEALTH_ERROR_RATIO[0]]
HEALTH_RESPONSE_TIME = sc.PROMETHEUS_NAMES[sc.HEALTH_RESPONSE_TIME[0]]
HTTP_DURATION = sc.PROMETHEUS_NAMES[sc.HTTP_CLIENT_REQUEST_DURATION[0]]
DB_DURATION = sc.PROMETHEUS_NAMES[sc.DB_CLIENT_OPERATION_DURATION[0]]

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
# Label matchers every selector carries; the service dashboard adds the service.
ALL = 'job=~"$job", instance=~"$instance"'
ONE = ALL + ', service=~"$service"'
# Rejected calls fail in microseconds; left in, they would pull latency down during outages.
SERVED = ', outcome!="rejected"'
# The health monitor's response time gauge: label "percentile", values "50" and "95".
P95 = f'{sc.PERCENTILE}="95"'
FIRING_ALERTS = f'ALERTS{{{ALL}, alertstate="firing", alertname=~"Resilience.*"}}'

# (state, rank, colour): the rank orders states from good to bad.
HEALTH_STATES = (("healthy", 0, "green"), ("degraded", 1, "orange"), ("unhealthy", 2, "red"))
BREAKER_STATES = (
    ("closed", 0, "green"),
    ("forced_closed", 1, "blue"),
    ("half_open", 2, "orange"),
    ("open", 3, "red"),
    ("forced_open", 4, "purple"),
)

PanelBuilder = timeseries.Panel | stat.Panel | statetimeline.Panel | table.Panel
Section = tuple[str, Sequence[PanelBuilder]]


# -- PromQL ---------------------------------------------------------------------------------------
def _rate(metric: str, sel: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{sel}}}{RATE}))"


def _ratio(bad_sel: str, sel: str, by: str = "") -> str:
    """Share of calls matching ``bad_sel``; 0 rather than no data when none match."""
    total = _rate(CALLS, sel, by)
    return f"({_rate(CALLS, bad_sel, by)} or {total} * 0) / {total}"


def _availability(sel: str, by: str = "") -> str:
    # PERMANENT failures (4xx) count as available: the upstream answered.
    return "1 - " + _ratio(sel + ', outcome!="success", error_class!="permanent"', sel, by)


def _error_ratio(sel: str, by: str = "") -> str:
    return _ratio(sel + ', outcome!="success"', sel, by)


def _quantile(q: float, metric: str, sel: str, by: str = "") -> str:
    buckets = f"rate({metric}_bucket{{{sel}}}{RATE})"
    return f"histogram_quantile({q}, sum by ({by}{', ' if by else ''}le) ({buckets}))"


def _worst(metric: str, label: str, states: Sequence[tuple[str, int, str]], sel: str) -> str:
    """Rank of the worst current state per service (see the module docstring)."""
    ranked = " or ".join(
        f'clamp_max({metric}{{{sel}, {label}="{state}"}} > 0, 1) * {rank}'
        for state, rank, _ in states
    )
    return f"max by (service) ({ranked})"


# -- panel pieces ---------------------------------------------------------------------------------
def _query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    )


def _instant(expr: str, ref: str = "A") -> prometheus.Dataquery:
    return _query(expr, ref=ref).instant().format(PromQueryFormat.TABLE)


def _mappings(states: Sequence[tuple[str, int, str]]) -> list[dm.ValueMapping]:
    options = {
        str(rank): dm.ValueMappingResult(text=state, color=color, index=rank)
        for state, rank, color in states
    }
    return [dm.ValueMap(options=options)]


def _thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


def _fixed_color(color: str) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


def _service_link(service: str) -> db.DashboardLink:
    """A data link to the service dashboard for ``service``, keeping variables and time."""
    keep = "&".join(f"${{{name}:queryparam}}" for name in ("datasource", "job", "instance"))
    return (
        db.DashboardLink("Service detail")
        .type(dm.DashboardLinkType.LINK)
        .url(f"/d/{SERVICE_UID}?var-service={service}&{keep}&${{__url_time_range}}")
    )


def _drill(panel: timeseries.Panel | statetimeline.Panel) -> PanelBuilder:
    """Link each series of a per-service panel to that service's detail dashboard."""
    return panel.data_links([_service_link("${__field.labels.service}")])


def _availability_steps() -> db.ThresholdsConfig:
    # Red below HEALTH_ALERT_THRESHOLD's default, orange below the "degraded" threshold.
    return _thresholds((None, "red"), (0.95, "orange"), (0.99, "green"))


def _score_steps() -> db.ThresholdsConfig:
    return _thresholds((None, "red"), (0.5, "orange"), (0.8, "green"))


def _timeseries(
    title: str,
    description: str,
    unit: str,
    *queries: prometheus.Dataquery,
    width: int = 12,
    stack: bool = False,
    percent: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(list(queries))
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
    )
    if stack:
        panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(40)
    if percent:
        panel.min(0).max(1)
    return panel


def _stat(
    title: str,
    description: str,
    unit: str,
    query: prometheus.Dataquery,
    *,
    width: int = 6,
    steps: db.ThresholdsConfig | None = None,
    mappings: list[dm.ValueMapping] | None = None,
    calc: str = "lastNotNull",
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .with_target(query)
        .span(width)
        .height(5)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs([calc]).values(False))
        .thresholds(steps or _thresholds((None, "text")))
    )
    if mappings:
        panel.mappings(mappings)
    return panel


def _timeline(
    title: str,
    description: str,
    query: prometheus.Dataquery,
    states: Sequence[tuple[str, int, str]],
) -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .unit("none")
        .datasource(DATASOURCE)
        .with_target(query)
        .span(12)
        .height(8)
        .mappings(_mappings(states))
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .thresholds(_thresholds((None, "text")))
        .show_value(cm.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
    )


def _organize(exclude: Sequence[str], rename: dict[str, str]) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": dict.fromkeys(exclude, True), "renameByName": rename},
    )


def _table(
    title: str, description: str, *queries: prometheus.Dataquery, width: int = 24
) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .unit("none")
        .datasource(DATASOURCE)
        .targets(list(queries))
        .span(width)
        .height(8)
    )


# -- shared panels -------------------------------------------------------------------------------
def _health_timeline(sel: str) -> statetimeline.Panel:
    return _timeline(
        "Health status",
        "Health status per service over time (resilience_health_status), the worst across "
        "instances: healthy, degraded or unhealthy as the health monitor judges it.",
        _query(_worst(HEALTH_STATUS, "status", HEALTH_STATES, sel), "{{service}}"),
        HEALTH_STATES,
    )


def _breaker_timeline(sel: str) -> statetimeline.Panel:
    return _timeline(
        "Circuit breaker state",
        "Circuit breaker state per service over time (resilience_circuit_breaker_state); with "
        "per-host breakers the worst breaker of the service is shown.",
        _query(_worst(BREAKER_STATE, "state", BREAKER_STATES, sel), "{{service}}"),
        BREAKER_STATES,
    )


def _latency_quantiles(sel: str) -> timeseries.Panel:
    return _timeseries(
        "Call latency (p50, p95, p99)",
        "Quantiles of the logical call duration, all attempts and backoff waits included "
        "(resilience_call_duration_seconds); calls rejected by an open breaker are left out.",
        "s",
        *(
            _query(_quantile(q, CALL_DURATION, sel + SERVED), f"p{round(q * 100)}", ref)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
        ),
    )


def _dead_letters(sel: str) -> timeseries.Panel:
    return _timeseries(
        "Dead letters",
        "Calls recorded as dead letters per second by reason, and dead letters dropped because "
        "the queue was full (dropped letters are lost: size the queue or drain it).",
        "ops",
        _query(_rate(DEAD_LETTERS, sel, "service, reason"), "{{service}} {{reason}}", "A"),
        _query(_rate(DEAD_LETTERS_DROPPED, sel, "service"), "{{service}} dropped", "B"),
        width=8,
    )


# -- variables and layout ------------------------------------------------------------------------
def _variables(*, service: bool) -> list[Builder[dm.VariableModel]]:
    variables: list[Builder[dm.VariableModel]] = [
        db.DatasourceVariable("datasource")
        .label("Data source")
        .description("The Prometheus data source that scrapes the services.")
        .type("prometheus"),
        _label_variable("job", "Job", f"label_values({CALLS}, job)"),
        _label_variable("instance", "Instance", f'label_values({CALLS}{{job=~"$job"}}, instance)'),
    ]
    if service:
        variables.append(
            _label_variable("service", "Service", f"label_values({CALLS}{{{ALL}}}, service)")
            .multi(False)
            .include_all(False)
        )
    return variables


def _label_variable(name: str, label: str, query: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .description(f"Filters every panel by the {name} label.")
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _assemble(
    uid: str,
    title: str,
    description: str,
    variables: list[Builder[dm.VariableModel]],
    sections: Sequence[Section],
) -> db.Dashboard:
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .readonly()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(variables)
        .link(
            db.DashboardLink("Resilience dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["resilience"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    panel_id = 0  # ids only need to be unique within a dashboard; stable by construction order
    for row_title, panels in sections:
        panel_id += 1
        board.with_row(db.Row(row_title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board.with_panel(panel.id(panel_id))
    return board
