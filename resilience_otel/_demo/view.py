"""How the full demo shows itself: a live terminal view (rich) when stdout is a terminal,
plain per-phase lines otherwise (tests, CI, pipes), and the closing summary."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from .phases import Timeline

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.table import Table

    from .stack import AlertLine
    from .stats import Counts, Row

__all__ = ["PHASE_NOTES", "Frame", "LiveView", "PlainView", "summary_lines", "summary_table"]

PHASE_NOTES = {
    "healthy": "every upstream answers; the breakers are closed",
    "partial outage": "some calls fail (503s, late order acks, 429 + Retry-After, flapping "
    "Redis/PostgreSQL connections): retries absorb most of them",
    "full outage": "the upstreams fail: breakers open, retries stop, dead letters fill",
    "recovery": "the upstreams are back: half-open probes close the breakers, dead letters "
    "are replayed",
    "failover": "Redis and PostgreSQL change primary under load: writes refused by the old "
    "primary (READONLY, 25006) retire their connections and go to the new one",
}
_COLUMNS = ("service", "status", "score", "breaker", "calls", "calls/s", "errors", "p95",
            "retries", "rejected", "dead", "replayed")  # fmt: skip
_ROW = "  {:<15}{:<10}{:>6}  {:<10}{:>6}{:>8}{:>8}{:>7}{:>8}{:>9}{:>6}{:>9}"
_SUMMARY_COLUMNS = ("service", "client", "calls", "ok", "failed", "rejected", "retries",
                    "exhausted", "dead", "replayed", "pending", "opened", "closed",
                    "breaker")  # fmt: skip
_SUMMARY_ROW = (
    "  {:<15}{:<11}" + "{:>7}{:>6}{:>7}{:>9}{:>8}{:>10}{:>6}{:>9}{:>8}{:>7}{:>7}" + "  {}"
)


@dataclass(frozen=True, slots=True)
class Frame:
    """What the view shows at one moment."""

    elapsed: float
    index: int
    rows: list[Row]
    alerts: list[AlertLine]
    events: list[tuple[float, str]]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _cells(row: Row, counts: Counts, seconds: float | None) -> tuple[str, ...]:
    """The :data:`_COLUMNS` of ``row``; ``counts`` over ``seconds`` gives calls/s (live
    rate when ``seconds`` is ``None``)."""
    rate = row.rate if seconds is None else counts.calls / max(seconds, 1e-9)
    dead = str(counts.dead) if row.has_queue else "-"
    replayed = str(counts.replayed) if row.has_queue else "-"
    return (row.service, row.status, f"{row.score:.2f}", row.breaker, str(counts.calls),
            f"{rate:.1f}", f"{row.error_rate:.0%}", _ms(row.p95), str(counts.retries),
            str(counts.rejected), dead, replayed)  # fmt: skip


class PlainView:
    """Plain lines: a header per phase, events as they happen, a table at each phase end."""

    def __init__(self, out: TextIO, timeline: Timeline) -> None:
        self._out = out
        self._timeline = timeline
        self._lock = threading.Lock()
        self._index = -1
        self._base: dict[str, Counts] = {}
        self._finished = False

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Nothing to restore: lines were printed as they came."""

    def say(self, text: str = "") -> None:
        """Print one line (thread-safe)."""
        with self._lock:
            print(text, file=self._out, flush=True)

    def event(self, stamp: float, text: str) -> None:
        """Print an event with its time."""
        self.say(f"  [{stamp:5.1f}s] {text}")

    def show(self, frame: Frame) -> None:
        """Print the phase table and the next header when the phase changed."""
        if frame.index == self._index or self._finished:
            return
        if self._index >= 0:
            self._table(frame.rows)
        self._index = frame.index
        self._base = {row.service: row.counts for row in frame.rows}
        length = self._timeline.phase_length
        phases = self._timeline.phases
        name = phases[frame.index]
        start, end = frame.index * length, (frame.index + 1) * length
        self.say(f"phase {frame.index + 1}/{len(phases)}: {name} ({start:g}s-{end:g}s)")
        self.say(f"  {PHASE_NOTES[name]}")

    def finish(self, frame: Frame) -> None:
        """Print the last phase's table; later frames print nothing."""
        if self._index >= 0 and not self._finished:
            self._table(frame.rows)
        self._finished = True

    def _table(self, rows: list[Row]) -> None:
        self.say(f"  end of {self._timeline.phases[self._index]}:")
        self.say(_ROW.format(*_COLUMNS))
        for row in rows:
            base = self._base.get(row.service)
            counts = row.counts if base is None else row.counts.minus(base)
            self.say(_ROW.format(*_cells(row, counts, self._timeline.phase_length)))


class LiveView:
    """A rich ``Live`` display redrawn on every :meth:`show`."""

    def __init__(self, console: Console, timeline: Timeline, endpoints: list[str]) -> None:
        from rich.live import Live

        self._console = console
        self._timeline = timeline
        self._endpoints = endpoints
        self._live: Live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.stop()

    def event(self, stamp: float, text: str) -> None:
        """Events are drawn from the frame; nothing to do as they happen."""

    def show(self, frame: Frame) -> None:
        """Redraw with ``frame``."""
        self._live.update(self._render(frame), refresh=True)

    def finish(self, frame: Frame) -> None:
        """Draw the last frame."""
        self.show(frame)

    def _render(self, frame: Frame) -> RenderableType:
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        phases = self._timeline.phases
        name = phases[frame.index]
        done = min(frame.elapsed / self._timeline.duration, 1.0)
        bar = "#" * int(done * 30) + "-" * (30 - int(done * 30))
        title = Text.assemble(
            ("resilience-otel demo  ", "bold"),
            (f"phase {frame.index + 1}/{len(phases)}: {name.upper()}", _PHASE_STYLE[name]),
            f"  [{bar}] {frame.elapsed:5.1f}s / {self._timeline.duration:g}s",
        )
        parts: list[RenderableType] = [title, Text(PHASE_NOTES[name], style="dim")]
        parts += [Text("  ".join(self._endpoints), style="cyan"), self._services(frame.rows)]
        parts.append(Panel(_alerts_text(frame.alerts), title="alerts via Alertmanager"))
        events = Text("\n".join(f"{t:5.1f}s  {text}" for t, text in frame.events) or "-")
        parts.append(Panel(events, title="events"))
        return Group(*parts)

    def _services(self, rows: list[Row]) -> Table:
        from rich.table import Table

        table = Table(expand=False, header_style="bold")
        for column in _COLUMNS:
            left = column in ("service", "status")
            table.add_column(column, justify="left" if left else "right", no_wrap=True)
        for row in rows:
            cells = list(_cells(row, row.counts, None))
            cells[1] = f"[{_STATUS_STYLE.get(row.status, '')}]{row.status}[/]"
            cells[3] = f"[{_BREAKER_STYLE.get(row.breaker, '')}]{row.breaker}[/]"
            table.add_row(*cells)
        return table


_PHASE_STYLE = {"healthy": "green", "partial outage": "yellow", "full outage": "bold red",
                "recovery": "cyan", "failover": "magenta"}  # fmt: skip
_STATUS_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}
_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def _alerts_text(alerts: list[AlertLine]) -> str:
    if not alerts:
        return "none yet"
    lines = []
    for alert in alerts[:8]:
        when = f"fired {alert.fired_at:.1f}s"
        if alert.resolved_at is not None:
            when += f", resolved {alert.resolved_at:.1f}s"
        state = "[bold red]FIRING[/]" if alert.state == "firing" else "[green]resolved[/]"
        lines.append(f"{state}  {alert.name}  {alert.service}  ({alert.severity}, {when})")
    return "\n".join(lines)


def _summary_cells(row: Row) -> tuple[object, ...]:
    c = row.counts
    return (row.service, row.client, c.calls, c.ok, c.failed, c.rejected, c.retries,
            c.exhausted, c.dead if row.has_queue else "-", c.replayed if row.has_queue else "-",
            c.pending if row.has_queue else "-", c.opened, c.closed, row.breaker)  # fmt: skip


def summary_lines(rows: list[Row]) -> list[str]:
    """The summary table as plain lines."""
    lines = ["summary", _SUMMARY_ROW.format(*_SUMMARY_COLUMNS)]
    return lines + [_SUMMARY_ROW.format(*_summary_cells(row)) for row in rows]


def summary_table(rows: list[Row]) -> Table:
    """The summary table for a terminal."""
    from rich.table import Table

    table = Table(title="summary", header_style="bold")
    for column in _SUMMARY_COLUMNS:
        left = column in ("service", "client")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(cell) for cell in _summary_cells(row)))
    return table
