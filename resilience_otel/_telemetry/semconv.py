"""Every telemetry name this package emits: metrics, units, attribute keys and their values.

Dashboards and alert rules may only use names defined here (a test checks). OTel names are
translated by the Prometheus exporter: dots become underscores, counters gain ``_total``,
the unit ``s`` becomes ``_seconds``.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)

# -- instrumentation scope ------------------------------------------------------------------
SCOPE_NAME: Final = "resilience_otel"

# -- metrics: (OTel name, unit, description) ----------------------------------------------------
CALLS: Final = ("resilience.calls", "{call}", "Logical calls by outcome and error class.")
CALL_DURATION: Final = (
    "resilience.call.duration",
    "s",
    "Duration of logical calls, all attempts and waits included.",
)
RETRIES: Final = ("resilience.retries", "{retry}", "Retries scheduled, by reason.")
RETRIES_EXHAUSTED: Final = (
    "resilience.retries_exhausted",
    "{call}",
    "Calls that ended on a retryable failure with no attempt left.",
)
BREAKER_STATE: Final = (
    "resilience.circuit_breaker.state",
    "{breaker}",
    "Circuit breakers in each state (1 for the current state of a service's breaker).",
)
BREAKER_TRANSITIONS: Final = (
    "resilience.circuit_breaker.transitions",
    "{transition}",
    "Circuit breaker state transitions.",
)
DEAD_LETTERS: Final = ("resilience.dead_letters", "{call}", "Calls recorded as dead letters.")
DEAD_LETTERS_DROPPED: Final = (
    "resilience.dead_letters.dropped",
    "{call}",
    "Dead letters dropped because the queue was full.",
)
FAILOVERS: Final = (
    "resilience.failovers",
    "{failover}",
    "Failovers detected: attempts refused by a node that is no longer the primary.",
)
HEALTH_STATUS: Final = (
    "resilience.health.status",
    "{service}",
    "1 for the current health status of a service.",
)
HEALTH_SCORE: Final = ("resilience.health.score", "1", "Health score of a service, 0..1.")
HEALTH_ERROR_RATIO: Final = (
    "resilience.health.error_ratio",
    "1",
    "Share of failed calls in the health window, 0..1.",
)
HEALTH_RESPONSE_TIME: Final = (
    "resilience.health.response_time",
    "s",
    "Response time of a service in the health window, by percentile (50, 95).",
)
DB_CLIENT_OPERATION_DURATION: Final = (
    "db.client.operation.duration",
    "s",
    "Duration of database client operations (one per logical operation, retries included).",
)
DB_DURATION_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
)  # fmt: skip
HTTP_CLIENT_REQUEST_DURATION: Final = (
    "http.client.request.duration",
    "s",
    "Duration of HTTP client requests (one per attempt).",
)
# OTel HTTP semconv advisory buckets (seconds).
HTTP_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
CALL_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

# Prometheus names after the exporter's translation (what dashboards and alerts use).
PROMETHEUS_NAMES: Final = {
    CALLS[0]: "resilience_calls_total",
    CALL_DURATION[0]: "resilience_call_duration_seconds",
    RETRIES[0]: "resilience_retries_total",
    RETRIES_EXHAUSTED[0]: "resilience_retries_exhausted_total",
    BREAKER_STATE[0]: "resilience_circuit_breaker_state",
    BREAKER_TRANSITIONS[0]: "resilience_circuit_breaker_transitions_total",
    DEAD_LETTERS[0]: "resilience_dead_letters_total",
    DEAD_LETTERS_DROPPED[0]: "resilience_dead_letters_dropped_total",
    FAILOVERS[0]: "resilience_failovers_total",
    HEALTH_STATUS[0]: "resilience_health_status",
    HEALTH_SCORE[0]: "resilience_health_score",
    HEALTH_ERROR_RATIO[0]: "resilience_health_error_ratio",
    HEALTH_RESPONSE_TIME[0]: "resilience_health_response_time_seconds",
    HTTP_CLIENT_REQUEST_DURATION[0]: "http_client_request_duration_seconds",
    DB_CLIENT_OPERATION_DURATION[0]: "db_client_operation_duration_seconds",
}

# -- metric attribute keys (Prometheus labels) and their allowed values ----------------------
SERVICE: Final = "service"
CLIENT: Final = "client"
OUTCOME: Final = "outcome"
ERROR_CLASS: Final = "error_class"
REASON: Final = "reason"
STATE: Final = "state"
FROM_STATE: Final = "from_state"
TO_STATE: Final = "to_state"
STATUS: Final = "status"
# Not "quantile": Prometheus reserves that label for summaries.
PERCENTILE: Final = "percentile"
# The failover counter's ``db.system.name`` attribute, as the Prometheus exporter names it.
DB_SYSTEM_LABEL: Final = "db_system_name"

CLIENT_VALUES: Final = frozenset({"http", "redis", "postgresql"})
OUTCOME_VALUES: Final = frozenset({"success", "failure", "rejected"})
ERROR_CLASS_VALUES: Final = frozenset({"none", "transient", "permanent", "critical", "failover"})
RETRY_REASON_VALUES: Final = frozenset(
    {"rate_limited", "timeout", "connection", "server_error", "client_error", "failover", "other"}
)
DB_SYSTEM_VALUES: Final = frozenset({"redis", "postgresql"})
DEAD_LETTER_REASON_VALUES: Final = frozenset(
    {"retries_exhausted", "circuit_open", "permanent", "critical"}
)
BREAKER_STATE_VALUES: Final = ("closed", "open", "half_open", "forced_open", "forced_closed")
HEALTH_STATUS_VALUES: Final = ("healthy", "degraded", "unhealthy")

# -- span attributes -----------------------------------------------------------------------------
HTTP_REQUEST_METHOD: Final = http_attributes.HTTP_REQUEST_METHOD
HTTP_REQUEST_METHOD_ORIGINAL: Final = http_attributes.HTTP_REQUEST_METHOD_ORIGINAL
HTTP_RESPONSE_STATUS_CODE: Final = http_attributes.HTTP_RESPONSE_STATUS_CODE
HTTP_REQUEST_RESEND_COUNT: Final = http_attributes.HTTP_REQUEST_RESEND_COUNT
SERVER_ADDRESS: Final = server_attributes.SERVER_ADDRESS
SERVER_PORT: Final = server_attributes.SERVER_PORT
URL_FULL: Final = url_attributes.URL_FULL
URL_SCHEME: Final = url_attributes.URL_SCHEME
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
DB_SYSTEM_NAME: Final = "db.system.name"
DB_OPERATION_NAME: Final = "db.operation.name"
DB_QUERY_TEXT: Final = "db.query.text"
DB_NAMESPACE: Final = "db.namespace"

RESILIENCE_SERVICE: Final = "resilience.service"
RESILIENCE_ATTEMPT: Final = "resilience.attempt"
RESILIENCE_ATTEMPTS: Final = "resilience.attempts"
RESILIENCE_BREAKER_STATE: Final = "resilience.breaker.state"
RESILIENCE_ERROR_CLASS: Final = "resilience.error_class"
RESILIENCE_RETRY_DELAY: Final = "resilience.retry.delay"
RESILIENCE_RETRY_REASON: Final = "resilience.retry.reason"
RESILIENCE_RETRY_AFTER: Final = "resilience.retry_after"
RESILIENCE_FROM_STATE: Final = "resilience.breaker.from_state"
RESILIENCE_TO_STATE: Final = "resilience.breaker.to_state"
RESILIENCE_DEAD_LETTER_REASON: Final = "resilience.dead_letter.reason"
DB_OPERATION_BATCH_SIZE: Final = "db.operation.batch.size"
DB_RESPONSE_STATUS_CODE: Final = "db.response.status_code"

# -- span events ---------------------------------------------------------------------------------
EVENT_RETRY: Final = "resilience.retry"
EVENT_ATTEMPT_FAILED: Final = "resilience.attempt_failed"
EVENT_REJECTED: Final = "resilience.circuit_open"
EVENT_STATE_CHANGE: Final = "resilience.breaker.state_change"
EVENT_DEAD_LETTER: Final = "resilience.dead_letter"
EVENT_CRITICAL: Final = "resilience.critical_error"
EVENT_FAILOVER: Final = "resilience.failover"

# Known HTTP methods per semconv; others are reported as "_OTHER".
HTTP_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
