"""Smoke tests of ``resilience-otel demo``: each scenario run once as a real subprocess.

The ``full`` scenario runs for 12 s with whatever this machine has (Redis, PostgreSQL,
Prometheus and Alertmanager are used when present); its endpoints are queried while it runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PHASES = ["healthy", "partial outage", "full outage", "recovery"]
FULL_PHASES = [*PHASES, "failover"]
PHASE_HEADER = re.compile(r"^phase (\d)/5: ([a-z ]+) \(")
FAILOVER_WRITES = re.compile(
    r"^  (\d+) (?:RPUSHes|INSERTs) acknowledged, (\d+) stored: (\d+) lost, (\d+) applied twice"
    r"(?: \((\d+) in flight when the run stopped\))?$"
)
EVENT = re.compile(r"^  \[\s*[\d.]+s\] (.*)$")
TRANSITION = re.compile(r"^breaker ([\w-]+): (\w+) -> (\w+)$")
SUMMARY_ROW = re.compile(r"^  ([a-z][\w-]*) +(http|redis|postgresql) +([\d -]+?)  (\w+)$")
SUMMARY_FIELDS = ("calls", "ok", "failed", "rejected", "retries", "exhausted", "dead",
                  "replayed", "pending", "opened", "closed")  # fmt: skip


@dataclass
class FullRun:
    """The finished ``full`` demo: exit status, output lines, and what its endpoints said."""

    returncode: int
    lines: list[str]
    stderr: str
    probes: dict[str, httpx.Response | str] = field(default_factory=dict)

    def index(self, prefix: str) -> int:
        """Index of the first line starting with ``prefix``."""
        return next(i for i, line in enumerate(self.lines) if line.startswith(prefix))

    def events(self) -> list[tuple[int, str]]:
        """``(line index, text)`` of every timestamped event."""
        return [(i, m.group(1)) for i, line in enumerate(self.lines) if (m := EVENT.match(line))]

    def summary(self) -> dict[str, dict[str, int | None]]:
        """The summary table: service -> field -> number (``None`` for ``-``)."""
        start = self.lines.index("summary")
        table: dict[str, dict[str, int | None]] = {}
        for line in self.lines[start + 2 :]:
            match = SUMMARY_ROW.match(line)
            if not match:
                break
            cells = [None if c == "-" else int(c) for c in match.group(3).split()]
            table[match.group(1)] = dict(zip(SUMMARY_FIELDS, cells, strict=True))
        return table


def _probe(run: FullRun, line: str) -> None:
    """Query the endpoint a ``serving`` line names; keep the response (or the error)."""
    name, url = line.split()[1:3]
    try:
        run.probes[name] = httpx.get(url, timeout=5.0)
    except httpx.HTTPError as exc:
        run.probes[name] = f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> FullRun:
    """Run the full demo once for 12 s; query /metrics and /health when phase 2 begins."""
    errors = tmp_path_factory.mktemp("demo") / "stderr.txt"
    with errors.open("w") as stderr:  # a file, so a chatty stderr can never block the demo
        proc = subprocess.Popen(
            [sys.executable, "-m", "resilience_otel.cli", "demo", "--duration", "12"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    # A hung demo is terminated (it cleans up on SIGTERM) rather than left running.
    watchdog = threading.Timer(90, proc.terminate)
    watchdog.start()
    run = FullRun(returncode=-1, lines=[], stderr="")
    serving: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            run.lines.append(line)
            if line.startswith("serving "):
                serving.append(line)
            if line.startswith("phase 2/5"):  # calls have been made by then
                for endpoint in serving:
                    _probe(run, endpoint)
        run.returncode = proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    run.stderr = errors.read_text()
    return run


def test_full_exits_cleanly(full: FullRun) -> None:
    """The demo exits with status 0 and writes nothing to stderr."""
    assert (full.returncode, full.stderr) == (0, "")


def test_full_shows_every_phase_in_order(full: FullRun) -> None:
    """The five phase headers appear once each, in order."""
    headers = [m.group(2) for line in full.lines if (m := PHASE_HEADER.match(line))]
    assert headers == FULL_PHASES


def test_full_says_which_backends_it_found(full: FullRun) -> None:
    """Redis and PostgreSQL each get a line, and the run says what it talks to."""
    assert any(line.startswith("Redis") for line in full.lines)
    assert any(line.startswith("PostgreSQL") for line in full.lines)
    assert full.lines[full.index("running: ")].startswith("running: HTTP")


def test_full_serves_metrics_during_the_run(full: FullRun) -> None:
    """/metrics answered during the run with the resilience call counter."""
    response = full.probes["metrics"]
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200
    assert "resilience_calls_total" in response.text


def test_full_serves_health_during_the_run(full: FullRun) -> None:
    """/health answered during the run with the demo's services."""
    response = full.probes["health"]
    assert isinstance(response, httpx.Response), response
    services = {s["service"] for s in json.loads(response.text)["services"]}
    assert {"trading-quotes", "trading-orders", "ai"} <= services


def test_full_breaker_opens_in_the_outage_and_closes_in_the_recovery(full: FullRun) -> None:
    """Some breaker opens after the healthy phase and closes again during the recovery."""
    recovery = full.index("phase 4/5")
    opened, closed = set(), set()
    for i, text in full.events():
        match = TRANSITION.match(text)
        if match and match.group(3) == "open" and full.index("phase 2/5") < i < recovery:
            opened.add(match.group(1))
        if match and match.group(3) == "closed" and i > recovery:
            closed.add(match.group(1))
    assert opened & closed, (opened, closed)


def test_full_counts_retries_and_rejections(full: FullRun) -> None:
    """The partial outage causes retries; the open breakers reject calls."""
    summary = full.summary()
    assert sum(row["retries"] or 0 for row in summary.values()) > 0
    assert sum(row["rejected"] or 0 for row in summary.values()) > 0


def test_full_summary_adds_up(full: FullRun) -> None:
    """For every service, calls = successes + failures + rejections."""
    for service, row in full.summary().items():
        assert row["calls"] == (row["ok"] or 0) + (row["failed"] or 0) + (row["rejected"] or 0), (
            service
        )


def test_full_dead_letters_fill_and_are_all_replayed(full: FullRun) -> None:
    """Dead letters are recorded in the outage and every one is replayed in the recovery."""
    queued = {s: row for s, row in full.summary().items() if row["dead"] is not None}
    assert sum(row["dead"] or 0 for row in queued.values()) > 0
    assert {s: (row["replayed"], row["pending"]) for s, row in queued.items()} == {
        s: (row["dead"], 0) for s, row in queued.items()
    }
    assert any(text.startswith("trading-quotes: replayed ") for _, text in full.events())


def test_full_reports_the_stack_and_its_alerts(full: FullRun) -> None:
    """The stack line says whether Prometheus/Alertmanager ran; if they did, alerts fired."""
    stack = full.lines[full.index("stack: ")]
    alerts = full.lines[full.index("alerts")]
    if "running" in stack:
        fired = re.match(r"alerts via Alertmanager: (\d+) fired", alerts)
        assert fired is not None, alerts
        assert int(fired.group(1)) >= 1, alerts
    else:
        assert "skipped" in stack
        assert alerts == "alerts: no Prometheus/Alertmanager in this run"


@pytest.mark.parametrize(
    ("service", "refusal", "switched"),
    [
        ("cache", "READONLY", r"cache: Redis \d+ demoted, replica \d+ promoted"),
        ("orders-db", "25006", r"orders-db: PostgreSQL \d+ demoted \(read-only\)"),
    ],
)
def test_full_failover_retires_connections_and_loses_or_doubles_no_write(
    full: FullRun, service: str, refusal: str, switched: str
) -> None:
    """A primary changes under load: refused writes are resent once, none is lost.

    ``make test`` installs redis-server and PostgreSQL, so the demo runs servers of its own.
    """
    failover = full.index("phase 5/5")
    events = [text for i, text in full.events() if i > failover]
    assert any(re.match(switched, t) for t in events), events
    assert (
        f"{service}: {refusal} from a demoted primary: connections retired, the write "
        "resent on a new one" in events
    )
    fact = full.lines[full.index(f"failover of {service} at ") + 1]
    match = FAILOVER_WRITES.match(fact)
    assert match is not None, fact
    acknowledged, stored, lost, doubled, in_flight = (int(g or 0) for g in match.groups())
    assert acknowledged > 0
    assert (lost, doubled) == (0, 0)
    # one worker per service: at most its last write was on the wire when the run stopped
    assert stored == acknowledged + in_flight
    assert in_flight <= 1


def test_full_ends_with_where_to_look_next(full: FullRun) -> None:
    """The last section points at the README, examples, dashboards and alerts."""
    tail = "\n".join(full.lines[full.index("where to look next") :])
    for place in ("README.md", "examples/", "dashboards/", "alerts/"):
        assert place in tail


# -- the http scenario ---------------------------------------------------------------------------
HTTP_ROW = re.compile(r"^\s*\d+(?:\.\d+)?  (healthy|partial outage|full outage|recovery)\s")


@pytest.fixture(scope="module")
def http_lines() -> tuple[int, list[str]]:
    """Run the http scenario once for 4 seconds: its exit status and output lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "resilience_otel.cli", "demo", "--scenario", "http",
         "--duration", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout.splitlines()


def test_http_prints_a_row_per_second_through_every_phase(
    http_lines: tuple[int, list[str]],
) -> None:
    """The http scenario exits 0 after one row per phase, in order."""
    returncode, lines = http_lines
    phases = [m.group(1) for line in lines if (m := HTTP_ROW.match(line))]
    assert (returncode, phases) == (0, PHASES)


def test_http_replays_its_dead_letters(http_lines: tuple[int, list[str]]) -> None:
    """The http scenario ends by replaying its dead letters against the recovered upstream."""
    assert re.fullmatch(r"replayed (\d+) of \1 dead letters \(0 failed again.*", http_lines[1][-1])
