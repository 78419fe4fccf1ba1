"""Smoke test of ``resilience-otel demo``: the http scenario run as a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\s*\d+(?:\.\d+)?  (healthy|partial outage|full outage|recovery)\s.*\s(\w+)$")
SUMMARY_ITEM = re.compile(r"^  ([a-z][a-z ]*[a-z])\s+(\S+)$")


@dataclass(frozen=True)
class DemoRun:
    """The finished demo process and its output split into lines."""

    returncode: int
    lines: list[str]
    stderr: str

    def index(self, text: str) -> int:
        """Index of the first line containing ``text``."""
        return next(i for i, line in enumerate(self.lines) if text in line)

    def rows(self) -> list[tuple[int, str, str]]:
        """``(line index, phase, breaker state)`` for each per-second row."""
        found: list[tuple[int, str, str]] = []
        for i, line in enumerate(self.lines):
            match = ROW.match(line)
            if match:
                found.append((i, match.group(1), match.group(2)))
        return found

    def summary(self) -> dict[str, str]:
        """The ``name value`` items printed under the ``summary`` line."""
        start = self.lines.index("summary")
        items: dict[str, str] = {}
        for line in self.lines[start + 1 :]:
            match = SUMMARY_ITEM.match(line)
            if match:
                items[match.group(1)] = match.group(2)
        return items


@pytest.fixture(scope="module")
def demo() -> DemoRun:
    """Run the demo once for 4 seconds; every test reads the same output."""
    proc = subprocess.run(
        [sys.executable, "-m", "resilience_otel.cli", "demo", "--duration", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return DemoRun(proc.returncode, proc.stdout.splitlines(), proc.stderr)


def test_exits_cleanly(demo: DemoRun) -> None:
    """The demo exits with status 0 and writes nothing to stderr."""
    assert (demo.returncode, demo.stderr) == (0, "")


def test_prints_one_row_per_second_through_every_phase(demo: DemoRun) -> None:
    """A 4-second run prints four rows, one per phase, in order."""
    phases = [phase for _, phase, _ in demo.rows()]
    assert phases == ["healthy", "partial outage", "full outage", "recovery"]


def test_breaker_opens_during_the_outage(demo: DemoRun) -> None:
    """The breaker's first opening is printed after the healthy phase, before recovery."""
    rows = demo.rows()
    last_healthy = max(i for i, phase, _ in rows if phase == "healthy")
    first_recovery = min(i for i, phase, _ in rows if phase == "recovery")
    opened = demo.index("-> breaker alpaca: closed -> open")
    assert last_healthy < opened < first_recovery


def test_breaker_is_closed_again_at_the_end(demo: DemoRun) -> None:
    """The last row and the summary both show the breaker closed."""
    last_state = demo.rows()[-1][2]
    assert (last_state, demo.summary()["breaker"]) == ("closed", "closed")


def test_summary_counts_retries(demo: DemoRun) -> None:
    """The partial outage makes the client retry."""
    assert int(demo.summary()["retries"]) > 0


def test_summary_counts_rejections(demo: DemoRun) -> None:
    """The open breaker rejects calls without reaching the upstream."""
    assert int(demo.summary()["rejections"]) > 0


def test_summary_adds_up(demo: DemoRun) -> None:
    """Every request ends as a success, a failure or a rejection."""
    s = {name: int(value) for name, value in demo.summary().items() if value.isdigit()}
    assert s["requests"] == s["successes"] + s["failures"] + s["rejections"]


def test_dead_letters_are_replayed(demo: DemoRun) -> None:
    """Every dead letter is replayed successfully against the recovered upstream."""
    dead = int(demo.summary()["dead letters"])
    assert dead > 0
    assert (
        demo.lines[-1] == f"replayed {dead} of {dead} dead letters (0 failed again and stay queued)"
    )
