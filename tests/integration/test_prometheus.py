"""Prometheus exposition of the resilience metrics: names and labels as scraped over HTTP.

One module-scoped run drives success, failure, retries, a breaker that opens, a rejection and
dead letters (one of them dropped) through real transports against the fault server, then
scrapes ``/metrics`` from :func:`resilience_otel.prometheus.setup_prometheus` over loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from resilience_otel import CircuitOpenError, InMemoryDeadLetterQueue, ResilientTransport
from resilience_otel._telemetry import semconv as sc
from resilience_otel.prometheus import PrometheusSetup, setup_prometheus

from .conftest import fast_policy
from .faultserver import FaultServer

pytestmark = pytest.mark.integration

PROMTOOL = "/usr/bin/promtool"

# The design table: series name -> its label names (exporter's otel_scope_* labels aside).
EXPECTED_LABELS: dict[str, frozenset[str]] = {
    "resilience_calls_total": frozenset({"service", "client", "outcome", "error_class"}),
    "resilience_call_duration_seconds_bucket": frozenset({"service", "client", "outcome", "le"}),
    "resilience_call_duration_seconds_sum": frozenset({"service", "client", "outcome"}),
    "resilience_call_duration_seconds_count": frozenset({"service", "client", "outcome"}),
    "resilience_retries_total": frozenset({"service", "client", "reason"}),
    "resilience_retries_exhausted_total": frozenset({"service", "client"}),
    "resilience_circuit_breaker_state": frozenset({"service", "state"}),
    "resilience_circuit_breaker_transitions_total": frozenset(
        {"service", "from_state", "to_state"}
    ),
    "resilience_dead_letters_total": frozenset({"service", "reason"}),
    "resilience_dead_letters_dropped_total": frozenset({"service"}),
}
HISTOGRAMS = {sc.CALL_DURATION[0], sc.HTTP_CLIENT_REQUEST_DURATION[0]}
EXERCISED = [
    sc.CALLS[0],
    sc.CALL_DURATION[0],
    sc.RETRIES[0],
    sc.RETRIES_EXHAUSTED[0],
    sc.BREAKER_STATE[0],
    sc.BREAKER_TRANSITIONS[0],
    sc.DEAD_LETTERS[0],
    sc.DEAD_LETTERS_DROPPED[0],
    sc.HTTP_CLIENT_REQUEST_DURATION[0],
]


@dataclass
class Scrape:
    """The exposition text and its samples, by series name."""

    text: str
    samples: dict[str, list[Sample]]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample of ``name`` whose labels include ``labels``."""
        found = [s for s in self.samples.get(name, []) if labels.items() <= s.labels.items()]
        assert len(found) == 1, (name, labels, found)
        return found[0].value


def parse(text: str) -> Scrape:
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return Scrape(text, samples)


def drive(setup: PrometheusSetup, server: FaultServer) -> tuple[ResilientTransport, ...]:
    """Success, retries then success, exhausted retries, an opened breaker and a rejection."""
    server.script("/ok", ["200"])
    server.script("/flaky", ["503", "200"])
    server.script("/down", ["503", "503", "503"])
    server.script("/trips", ["503"])
    queue = InMemoryDeadLetterQueue(maxlen=1)  # the second dead letter drops the first
    main = ResilientTransport(
        policy=fast_policy(), meter_provider=setup.meter_provider, dead_letters=queue
    )
    trips_policy = dataclasses.replace(
        fast_policy(max_attempts=1, failure_threshold=1), service="trips"
    )
    trips = ResilientTransport(
        policy=trips_policy, meter_provider=setup.meter_provider, dead_letters=queue
    )
    with httpx.Client(transport=main, base_url=server.base_url) as client:
        assert client.get("/ok").status_code == 200
        assert client.get("/flaky").status_code == 200
        assert client.get("/down").status_code == 503
    with httpx.Client(transport=trips, base_url=server.base_url) as client:
        assert client.get("/trips").status_code == 503
        with pytest.raises(CircuitOpenError):
            client.get("/trips")
    assert queue.dropped >= 1
    return main, trips  # breakers are reported while their transports live


@pytest.fixture(scope="module")
def scrape() -> Iterator[Scrape]:
    """Run the workload once and scrape /metrics over real HTTP."""
    setup = setup_prometheus(port=0, set_global=False)
    try:
        with FaultServer() as server:
            alive = drive(setup, server)
            assert setup.port
            response = httpx.get(f"http://127.0.0.1:{setup.port}/metrics", timeout=5.0)
            assert response.status_code == 200
            assert alive
        yield parse(response.text)
    finally:
        setup.shutdown()


# -- names and labels ------------------------------------------------------------------------
@pytest.mark.parametrize("series", sorted(EXPECTED_LABELS))
def test_series_has_exactly_the_design_labels(scrape: Scrape, series: str) -> None:
    """Each resilience series has the design table's label names (plus otel_scope_*)."""
    samples = scrape.samples.get(series)
    assert samples, f"{series} missing from the scrape"
    for sample in samples:
        names = {k for k in sample.labels if not k.startswith("otel_scope_")}
        assert names == EXPECTED_LABELS[series], (series, sample.labels)


@pytest.mark.parametrize("name", EXERCISED)
def test_every_exercised_semconv_name_is_exposed(scrape: Scrape, name: str) -> None:
    """Every PROMETHEUS_NAMES entry the run exercised appears under that exact name."""
    prometheus_name = sc.PROMETHEUS_NAMES[name]
    if name in HISTOGRAMS:
        suffixes = ("_bucket", "_sum", "_count")
        assert all(prometheus_name + s in scrape.samples for s in suffixes), prometheus_name
    else:
        assert prometheus_name in scrape.samples, prometheus_name


def test_http_duration_series_have_semconv_labels(scrape: Scrape) -> None:
    """http_client_request_duration_seconds uses the HTTP semconv labels, never a URL."""
    allowed = {
        "http_request_method",
        "server_address",
        "server_port",
        "url_scheme",
        "http_response_status_code",
        "error_type",
        "le",
    }
    samples = scrape.samples["http_client_request_duration_seconds_count"]
    for sample in samples:
        names = {k for k in sample.labels if not k.startswith("otel_scope_")}
        assert {"http_request_method", "server_address", "server_port", "url_scheme"} <= names
        assert names <= allowed, sample.labels
    statuses = {s.labels["http_response_status_code"] for s in samples}
    assert statuses == {"200", "503"}
    assert not any("/" in value for s in samples for value in s.labels.values())


# -- values ------------------------------------------------------------------------------------
def test_call_outcomes_are_counted(scrape: Scrape) -> None:
    """Two successes, one transient failure per service, one rejection."""
    calls = "resilience_calls_total"
    assert scrape.value(calls, service="faults", outcome="success", error_class="none") == 2
    assert scrape.value(calls, service="faults", outcome="failure", error_class="transient") == 1
    assert scrape.value(calls, service="trips", outcome="failure", error_class="transient") == 1
    assert scrape.value(calls, service="trips", outcome="rejected", error_class="none") == 1


def test_retries_and_exhaustion_are_counted(scrape: Scrape) -> None:
    """/flaky retried once, /down twice and then exhausted."""
    assert scrape.value("resilience_retries_total", service="faults", reason="server_error") == 3
    assert scrape.value("resilience_retries_exhausted_total", service="faults") == 1


def test_breaker_state_gauge_is_one_for_the_current_state(scrape: Scrape) -> None:
    """The tripped service reads open=1, its other states 0; the other service closed=1."""
    states = {
        s.labels["state"]: s.value
        for s in scrape.samples["resilience_circuit_breaker_state"]
        if s.labels["service"] == "trips"
    }
    assert states == {**dict.fromkeys(sc.BREAKER_STATE_VALUES, 0.0), "open": 1.0}
    assert scrape.value("resilience_circuit_breaker_state", service="faults", state="closed") == 1


def test_transition_and_dead_letters_are_counted(scrape: Scrape) -> None:
    """closed -> open once; dead letters by reason; one dropped from the full queue."""
    transitions = "resilience_circuit_breaker_transitions_total"
    assert scrape.value(transitions, service="trips", from_state="closed", to_state="open") == 1
    dead = "resilience_dead_letters_total"
    assert scrape.value(dead, service="faults", reason="retries_exhausted") == 1
    assert scrape.value(dead, service="trips", reason="retries_exhausted") == 1
    assert scrape.value(dead, service="trips", reason="circuit_open") == 1
    dropped = sum(s.value for s in scrape.samples["resilience_dead_letters_dropped_total"])
    assert dropped == 2


def test_call_duration_histogram_is_complete(scrape: Scrape) -> None:
    """resilience_call_duration_seconds has buckets up to +Inf matching its count."""
    labels = {"service": "faults", "outcome": "success"}
    buckets = [
        s
        for s in scrape.samples["resilience_call_duration_seconds_bucket"]
        if labels.items() <= s.labels.items()
    ]
    bounds = {s.labels["le"] for s in buckets}
    assert bounds == {str(float(b)) for b in sc.CALL_DURATION_BUCKETS} | {"+Inf"}
    infinite = next(s for s in buckets if s.labels["le"] == "+Inf")
    assert infinite.value == scrape.value("resilience_call_duration_seconds_count", **labels) == 2


# -- promtool ----------------------------------------------------------------------------------
def test_promtool_accepts_the_exposition(scrape: Scrape) -> None:
    """`promtool check metrics` exits 0 on the scraped text."""
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=scrape.text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- WSGI and ASGI apps ------------------------------------------------------------------------
@pytest.fixture
def served_setup() -> Iterator[PrometheusSetup]:
    """A setup without a server, after one successful call through a transport."""
    setup = setup_prometheus(set_global=False)
    try:
        transport = ResilientTransport(
            httpx.MockTransport(lambda request: httpx.Response(200)),
            policy=fast_policy(),
            meter_provider=setup.meter_provider,
        )
        with httpx.Client(transport=transport) as client:
            client.get("http://api.test/ok")
        yield setup
    finally:
        setup.shutdown()


def test_wsgi_app_serves_the_exposition(served_setup: PrometheusSetup) -> None:
    """The WSGI app answers 200 with the resilience series in the text format."""
    environ: dict[str, Any] = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.append((status, headers))

    body = b"".join(served_setup.wsgi_app()(environ, start_response)).decode()
    assert started[0][0].startswith("200")
    assert dict(started[0][1])["Content-Type"].startswith("text/plain")
    scrape = parse(body)
    assert scrape.value("resilience_calls_total", service="faults", outcome="success") == 1


@pytest.mark.anyio
async def test_asgi_app_serves_the_exposition(served_setup: PrometheusSetup) -> None:
    """The ASGI app answers 200 with the resilience series in the text format."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(served_setup.asgi_app()(scope, receive, send), timeout=10)
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    body = b"".join(m.get("body", b"") for m in bodies).decode()
    scrape = parse(body)
    assert scrape.value("resilience_calls_total", service="faults", outcome="success") == 1


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
