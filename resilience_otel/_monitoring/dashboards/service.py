"""The Service detail dashboard."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from ..._telemetry import semconv as sc
from ._common import (
    ALL,
    BREAKER_STATE,
    BREAKER_STATES,
    BREAKER_TRANSITIONS,
    CALL_DURATION,
    CALLS,
    DB_DURATION,
    HEALTH_ERROR_RATIO,
    HEALTH_RESPONSE_TIME,
    HEALTH_SCORE,
    HEALTH_STATES,
    HEALTH_STATUS,
    HTTP_DURATION,
    ONE,
    P95,
    RETRIES,
    RETRIES_EXHAUSTED,
    SERVED,
    SERVICE_UID,
    PanelBuilder,
    Section,
    _assemble,
    _availability,
    _availability_steps,
    _breaker_timeline,
    _dead_letters,
    _error_ratio,
    _health_timeline,
    _latency_quantiles,
    _mappings,
    _quantile,
    _query,
    _rate,
    _score_steps,
    _stat,
    _thresholds,
    _timeseries,
    _variables,
    _worst,
)


# -- service detail ------------------------------------------------------------------------------
def _service_status() -> list[PanelBuilder]:
    return [
        _stat(
            "Health status",
            "Current health status of the service (resilience_health_status), worst instance.",
            "none",
            _query(_worst(HEALTH_STATUS, "status", HEALTH_STATES, ONE)),
            width=4,
            mappings=_mappings(HEALTH_STATES),
        ),
        _stat(
            "Health score",
            "Current health score, 0..1 (resilience_health_score), lowest instance.",
            "percentunit",
            _query(f"min({HEALTH_SCORE}{{{ONE}}})"),
            width=4,
            steps=_score_steps(),
        ),
        _stat(
            "Availability",
            "Share of calls the upstream answered (successes and permanent failures).",
            "percentunit",
            _query(_availability(ONE)),
            width=4,
            steps=_availability_steps(),
        ),
        _stat(
            "Circuit breaker",
            "Current circuit breaker state (resilience_circuit_breaker_state), worst breaker.",
            "none",
            _query(_worst(BREAKER_STATE, "state", BREAKER_STATES, ONE)),
            width=4,
            mappings=_mappings(BREAKER_STATES),
        ),
        _stat(
            "Error ratio (health window)",
            "Share of failed calls in the health monitor's window (resilience_health_error_ratio).",
            "percentunit",
            _query(f"max({HEALTH_ERROR_RATIO}{{{ONE}}})"),
            width=4,
            steps=_thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        _stat(
            "p95 response time (health window)",
            "95th percentile response time in the health monitor's window; above the latency "
            "target (1 s by default) the service is degraded.",
            "s",
            _query(f"max({HEALTH_RESPONSE_TIME}{{{ONE}, {P95}}})"),
            width=4,
            steps=_thresholds((None, "green"), (1, "orange")),
        ),
    ]


def _service_breaker() -> list[PanelBuilder]:
    return [
        _health_timeline(ONE),
        _breaker_timeline(ONE),
        _timeseries(
            "Circuit breaker transitions",
            "Circuit breaker state transitions per second, by from and to state.",
            "ops",
            _query(
                _rate(BREAKER_TRANSITIONS, ONE, "from_state, to_state"),
                "{{from_state}} → {{to_state}}",
            ),
        ),
        _timeseries(
            "Health response time",
            "Response time percentiles (50th, 95th) in the health monitor's window "
            "(resilience_health_response_time_seconds), slowest instance.",
            "s",
            _query(
                f"max by ({sc.PERCENTILE}) ({HEALTH_RESPONSE_TIME}{{{ONE}}})", "p{{percentile}}"
            ),
        ),
    ]


def _service_calls() -> list[PanelBuilder]:
    return [
        _timeseries(
            "Calls by outcome and error class",
            "Logical calls per second by outcome (success, failure, rejected) and error class "
            "(transient, permanent, critical, failover; none for successes and rejections).",
            "ops",
            _query(_rate(CALLS, ONE, "outcome, error_class"), "{{outcome}} / {{error_class}}"),
            stack=True,
        ),
        _timeseries(
            "Calls by client",
            "Logical calls per second by client: http, redis or postgresql.",
            "ops",
            _query(_rate(CALLS, ONE, "client"), "{{client}}"),
            stack=True,
        ),
        _timeseries(
            "Error ratio by client",
            "Share of calls per client that did not succeed (failed or rejected).",
            "percentunit",
            _query(_error_ratio(ONE, "client"), "{{client}}"),
            percent=True,
        ),
        _timeseries(
            "Availability by client",
            "Share of calls per client the upstream answered (successes and permanent failures).",
            "percentunit",
            _query(_availability(ONE, "client"), "{{client}}"),
            percent=True,
        ),
    ]


def _service_latency() -> list[PanelBuilder]:
    return [
        _latency_quantiles(ONE),
        _timeseries(
            "p95 latency by client and outcome",
            "95th percentile of the logical call duration by client and outcome; rejected calls "
            "fail fast, so their latency shows how quickly an open breaker answers.",
            "s",
            _query(
                _quantile(0.95, CALL_DURATION, ONE, "client, outcome"), "{{client}} {{outcome}}"
            ),
        ),
    ]


ATTEMPTS_NOTE = (
    " Attempt-level metrics follow the OTel semantic conventions and carry no service label: "
    "they cover every upstream of the selected job and instance."
)


def _service_attempts() -> list[PanelBuilder]:
    return [*_http_attempts(), *_db_attempts()]


def _http_attempts() -> list[PanelBuilder]:
    http_count = f"{HTTP_DURATION}_count"
    return [
        _timeseries(
            "HTTP attempts by status code",
            "Physical HTTP attempts per second by response status code and error type."
            + ATTEMPTS_NOTE,
            "ops",
            _query(
                _rate(http_count, ALL, "http_response_status_code, error_type"),
                "{{http_response_status_code}} {{error_type}}",
            ),
            width=8,
        ),
        _timeseries(
            "HTTP attempt errors by error type",
            "Failed HTTP attempts per second by error type (status code or exception class)."
            + ATTEMPTS_NOTE,
            "ops",
            _query(_rate(http_count, ALL + ', error_type!=""', "error_type"), "{{error_type}}"),
            width=8,
        ),
        _timeseries(
            "HTTP attempt latency p95 by server",
            "95th percentile duration of one HTTP attempt per server." + ATTEMPTS_NOTE,
            "s",
            _query(_quantile(0.95, HTTP_DURATION, ALL, "server_address"), "{{server_address}}"),
            width=8,
        ),
    ]


def _db_attempts() -> list[PanelBuilder]:
    db_count = f"{DB_DURATION}_count"
    return [
        _timeseries(
            "Database operations by operation",
            "Redis and PostgreSQL operations per second by system and operation name."
            + ATTEMPTS_NOTE,
            "ops",
            _query(
                _rate(db_count, ALL, "db_system_name, db_operation_name"),
                "{{db_system_name}} {{db_operation_name}}",
            ),
            width=8,
        ),
        _timeseries(
            "Database operation errors by error type",
            "Failed Redis and PostgreSQL operations per second by error type." + ATTEMPTS_NOTE,
            "ops",
            _query(
                _rate(db_count, ALL + ', error_type!=""', "db_system_name, error_type"),
                "{{db_system_name}} {{error_type}}",
            ),
            width=8,
        ),
        _timeseries(
            "Database operation latency p95 by operation",
            "95th percentile duration of one database operation, retries included." + ATTEMPTS_NOTE,
            "s",
            _query(
                _quantile(0.95, DB_DURATION, ALL, "db_system_name, db_operation_name"),
                "{{db_system_name}} {{db_operation_name}}",
            ),
            width=8,
        ),
    ]


def _service_retries() -> list[PanelBuilder]:
    return [
        _timeseries(
            "Retries by reason",
            "Retries scheduled per second by reason (rate_limited, timeout, connection, "
            "server_error, client_error, other).",
            "ops",
            _query(_rate(RETRIES, ONE, "reason"), "{{reason}}"),
            width=8,
            stack=True,
        ),
        _timeseries(
            "Retries exhausted by client",
            "Calls per second that ended on a retryable failure with no attempt left.",
            "ops",
            _query(_rate(RETRIES_EXHAUSTED, ONE, "client"), "{{client}}"),
            width=8,
        ),
        _dead_letters(ONE),
    ]


def _service_history() -> list[PanelBuilder]:
    daily, hourly = ("30d", "1d"), ("7d", "1h")
    panels: list[PanelBuilder] = [
        _stat(
            "Availability, last 30 days",
            "Mean of the daily availability over the last 30 days.",
            "percentunit",
            _query(_availability(ONE)),
            width=12,
            steps=_availability_steps(),
            calc="mean",
        ),
        _stat(
            "p95 latency, last 30 days",
            "Mean of the daily 95th percentile call duration over the last 30 days "
            "(rejected calls left out).",
            "s",
            _query(_quantile(0.95, CALL_DURATION, ONE + SERVED)),
            width=12,
            calc="mean",
        ),
        _timeseries(
            "Availability, last 7 days",
            "Hourly availability over the last 7 days, whatever the dashboard's time range.",
            "percentunit",
            _query(_availability(ONE), "availability"),
            percent=True,
        ),
        _timeseries(
            "Latency p95 and p99, last 7 days",
            "Hourly 95th and 99th percentile call duration over the last 7 days "
            "(rejected calls left out).",
            "s",
            _query(_quantile(0.95, CALL_DURATION, ONE + SERVED), "p95", "A"),
            _query(_quantile(0.99, CALL_DURATION, ONE + SERVED), "p99", "B"),
        ),
    ]
    # A minimum interval of a day (an hour) makes $__rate_interval span at least that long.
    for panel, (span, interval) in zip(panels, (daily, daily, hourly, hourly), strict=True):
        panel.time_from(span).interval(interval)
    return panels


def _service_sections() -> list[Section]:
    return [
        ("Status", _service_status()),
        ("Health and circuit breaker", _service_breaker()),
        ("Calls", _service_calls()),
        ("Latency", _service_latency()),
        ("Attempts (HTTP and database)", _service_attempts()),
        ("Retries and dead letters", _service_retries()),
        ("Historical performance", _service_history()),
    ]


def service_dashboard() -> db.Dashboard:
    """The ``resilience-service`` dashboard: one service in depth."""
    return _assemble(
        SERVICE_UID,
        "Service detail",
        "One upstream service in depth: health, circuit breaker, calls by outcome and client, "
        "latency, attempts, retries, dead letters and long-range performance.",
        _variables(service=True),
        _service_sections(),
    )
