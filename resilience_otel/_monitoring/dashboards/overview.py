"""The Resilience overview dashboard."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import dashboard as dm

from ._common import (
    ALL,
    BREAKER_STATE,
    BREAKER_STATES,
    CALL_DURATION,
    CALLS,
    FIRING_ALERTS,
    HEALTH_ERROR_RATIO,
    HEALTH_RESPONSE_TIME,
    HEALTH_SCORE,
    HEALTH_STATES,
    HEALTH_STATUS,
    OVERVIEW_UID,
    P95,
    RETRIES,
    RETRIES_EXHAUSTED,
    SERVED,
    PanelBuilder,
    Section,
    _assemble,
    _availability,
    _availability_steps,
    _breaker_timeline,
    _dead_letters,
    _drill,
    _error_ratio,
    _fixed_color,
    _health_timeline,
    _instant,
    _latency_quantiles,
    _mappings,
    _organize,
    _quantile,
    _query,
    _rate,
    _score_steps,
    _service_link,
    _stat,
    _table,
    _thresholds,
    _timeseries,
    _variables,
    _worst,
)


# -- overview ------------------------------------------------------------------------------------
def _overview_status() -> list[PanelBuilder]:
    by_status = _stat(
        "Services by health status",
        "How many services are healthy, degraded and unhealthy right now "
        "(resilience_health_status, a service counted once per status it has on any instance).",
        "none",
        _query(
            f"count by (status) (max by (service, status) ({HEALTH_STATUS}{{{ALL}}}) == 1)",
            "{{status}}",
        ),
        width=8,
    )
    for state, _, color in HEALTH_STATES:
        by_status.override_by_name(state, [_fixed_color(color)])
    return [
        by_status,
        _stat(
            "Availability",
            "Share of calls that the upstreams answered, over all services: successes plus "
            "permanent (4xx-like) failures, divided by all calls including rejected ones.",
            "percentunit",
            _query(_availability(ALL)),
            width=4,
            steps=_availability_steps(),
        ),
        _stat(
            "Call rate",
            "Logical calls per second over all services (resilience_calls_total).",
            "ops",
            _query(_rate(CALLS, ALL)),
            width=4,
        ),
        _stat(
            "Open circuit breakers",
            "Services with at least one open (or forced open) circuit breaker right now.",
            "none",
            _query(
                f"count(max by (service) ({BREAKER_STATE}{{{ALL}, "
                f'state=~"open|forced_open"}}) > 0) or vector(0)'
            ),
            width=4,
            steps=_thresholds((None, "green"), (1, "red")),
        ),
        _stat(
            "Firing alerts",
            "Resilience alerts firing right now (ALERTS, alertname Resilience*).",
            "none",
            _query(f"count({FIRING_ALERTS}) or vector(0)"),
            width=4,
            steps=_thresholds((None, "green"), (1, "red")),
        ),
    ]


def _service_health_table() -> table.Panel:
    panel = _table(
        "Service health",
        "Current health of every service: status and score from the health monitor, error "
        "ratio and p95 response time over its window, and the circuit breaker state.",
        _instant(_worst(HEALTH_STATUS, "status", HEALTH_STATES, ALL), "A"),
        _instant(f"min by (service) ({HEALTH_SCORE}{{{ALL}}})", "B"),
        _instant(f"max by (service) ({HEALTH_ERROR_RATIO}{{{ALL}}})", "C"),
        _instant(f"max by (service) ({HEALTH_RESPONSE_TIME}{{{ALL}, {P95}}})", "D"),
        _instant(_worst(BREAKER_STATE, "state", BREAKER_STATES, ALL), "E"),
        width=12,
    )
    columns = ["Status", "Score", "Error ratio", "p95 response time", "Breaker"]
    panel.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    panel.with_transformation(
        _organize(
            ["Time"], {f"Value #{ref}": name for ref, name in zip("ABCDE", columns, strict=True)}
        )
    )
    panel.data_links([_service_link("${__data.fields.service}")])
    background = {"type": "color-background"}
    overrides: dict[str, dict[str, object]] = {
        "Status": {"mappings": _mappings(HEALTH_STATES), "custom.cellOptions": background},
        "Score": {
            "unit": "percentunit",
            "thresholds": _score_steps().build(),
            "custom.cellOptions": background,
        },
        "Error ratio": {"unit": "percentunit"},
        "p95 response time": {"unit": "s"},
        "Breaker": {"mappings": _mappings(BREAKER_STATES), "custom.cellOptions": background},
    }
    for name, properties in overrides.items():
        panel.override_by_name(
            name,
            [dm.DynamicConfigValue(id_val=key, value=value) for key, value in properties.items()],
        )
    return panel


def _overview_sections() -> list[Section]:
    return [
        ("System status", _overview_status()),
        (
            "Health",
            [
                _service_health_table(),
                _drill(_health_timeline(ALL)),
                _drill(
                    _timeseries(
                        "Health score",
                        "Health score per service, 0..1 (resilience_health_score), the lowest "
                        "across instances: availability, latency and breaker state combined.",
                        "percentunit",
                        _query(f"min by (service) ({HEALTH_SCORE}{{{ALL}}})", "{{service}}"),
                        percent=True,
                    )
                ),
                _drill(_breaker_timeline(ALL)),
            ],
        ),
        (
            "Traffic and errors",
            [
                _drill(
                    _timeseries(
                        "Call rate by service",
                        "Logical calls per second per service, retries not counted twice.",
                        "ops",
                        _query(_rate(CALLS, ALL, "service"), "{{service}}"),
                        width=8,
                    )
                ),
                _drill(
                    _timeseries(
                        "Error ratio by service",
                        "Share of calls per service that did not succeed (failed or rejected by an "
                        "open breaker), permanent failures included.",
                        "percentunit",
                        _query(_error_ratio(ALL, "service"), "{{service}}"),
                        width=8,
                        percent=True,
                    )
                ),
                _drill(
                    _timeseries(
                        "Availability by service",
                        "Share of calls per service the upstream answered (successes and permanent "
                        "failures); the health monitor alerts below 95 %.",
                        "percentunit",
                        _query(_availability(ALL, "service"), "{{service}}"),
                        width=8,
                        percent=True,
                    )
                ),
            ],
        ),
        (
            "Latency",
            [
                _latency_quantiles(ALL),
                _drill(
                    _timeseries(
                        "p95 latency by service",
                        "95th percentile of the logical call duration per service, retries and "
                        "backoff waits included, rejected calls left out.",
                        "s",
                        _query(
                            _quantile(0.95, CALL_DURATION, ALL + SERVED, "service"), "{{service}}"
                        ),
                    )
                ),
            ],
        ),
        (
            "Retries and dead letters",
            [
                _drill(
                    _timeseries(
                        "Retries by service",
                        "Retries scheduled per second per service (resilience_retries_total).",
                        "ops",
                        _query(_rate(RETRIES, ALL, "service"), "{{service}}"),
                        width=8,
                    )
                ),
                _drill(
                    _timeseries(
                        "Retries exhausted by service",
                        "Calls per second that ended on a retryable failure with no attempt left.",
                        "ops",
                        _query(_rate(RETRIES_EXHAUSTED, ALL, "service"), "{{service}}"),
                        width=8,
                    )
                ),
                _dead_letters(ALL),
            ],
        ),
        ("Alerts", [_firing_alerts()]),
    ]


def _firing_alerts() -> table.Panel:
    panel = _table(
        "Firing alerts",
        "Resilience alerts firing right now, with their labels (ALERTS from Prometheus).",
        _instant(FIRING_ALERTS),
    )
    panel.with_transformation(_organize(["Time", "Value", "__name__", "alertstate"], {}))
    return panel


def overview_dashboard() -> db.Dashboard:
    """The ``resilience-overview`` dashboard: every service at a glance."""
    return _assemble(
        OVERVIEW_UID,
        "Resilience overview",
        "Health, circuit breakers, traffic, latency, retries, dead letters and firing alerts "
        "of every service called through resilience-otel.",
        _variables(service=False),
        _overview_sections(),
    )
