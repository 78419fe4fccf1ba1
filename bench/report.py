"""Summaries, markdown tables and the target verdicts.

Absolute microseconds drift between runs on a shared machine; what is compared is always
computed within one round (a ratio or a difference to the baseline measured in that same
round) and then summarised by the median over rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .timing import Timing

__all__ = [
    "Row",
    "Stats",
    "Target",
    "fmt",
    "latency_table",
    "markdown_table",
    "paired_median",
    "signed",
    "summarise",
    "throughput_table",
]

_US = 1e6


@dataclass(frozen=True)
class Stats:
    """One clock's numbers for a contender (microseconds per request).

    Attributes:
        median_us: median over rounds.
        ratio: median over rounds of this / baseline (``None`` without a baseline).
        speed_ratio: median over rounds of baseline / this (throughput ratio, "x cheaper").
        overhead_us: median over rounds of this - baseline.
        overhead_iqr_us: interquartile range of those differences (their spread).
    """

    median_us: float
    ratio: float | None
    speed_ratio: float | None
    overhead_us: float | None
    overhead_iqr_us: tuple[float, float] | None

    @property
    def rps(self) -> float:
        return _US / self.median_us


@dataclass(frozen=True)
class Row:
    """One contender in one mode: wall-clock and CPU-time statistics, and the raw samples."""

    name: str
    wall: Stats
    cpu: Stats
    samples: list[Timing] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wall": asdict(self.wall) | {"rps": self.wall.rps},
            "cpu": asdict(self.cpu),
            "samples_us": [{"wall": s.wall * _US, "cpu": s.cpu * _US} for s in self.samples],
        }


@dataclass(frozen=True)
class Target:
    """A goal, whether it was met on wall-clock time (``None``: not run) and on CPU time."""

    name: str
    passed: bool | None
    detail: str
    passed_cpu: bool | None = None
    informational: bool = False

    @property
    def verdict(self) -> str:
        return _verdict(self.passed, self.informational)

    @property
    def verdict_cpu(self) -> str:
        return _verdict(self.passed_cpu, self.informational)


def _verdict(passed: bool | None, informational: bool) -> str:
    if passed is None:
        return "n/a"
    mark = "PASS" if passed else "FAIL"
    return f"{mark} (info)" if informational else mark


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def _stats(values: Sequence[float], base: Sequence[float] | None) -> Stats:
    ratio = speed_ratio = overhead = iqr = None
    if base is not None:
        pairs = list(zip(values, base, strict=True))
        ratio = statistics.median(v / b for v, b in pairs)
        speed_ratio = statistics.median(b / v for v, b in pairs)
        deltas = [(v - b) * _US for v, b in pairs]
        overhead = statistics.median(deltas)
        iqr = _quartiles(deltas)
    return Stats(statistics.median(values) * _US, ratio, speed_ratio, overhead, iqr)


def summarise(samples: Mapping[str, Sequence[Timing]], baseline: str | None = "raw") -> list[Row]:
    """Rows from per-round seconds per request; ratio and overhead against ``baseline``."""
    base = samples.get(baseline) if baseline is not None else None
    rows = []
    for name, values in samples.items():
        wall = _stats([t.wall for t in values], None if base is None else [t.wall for t in base])
        cpu = _stats([t.cpu for t in values], None if base is None else [t.cpu for t in base])
        rows.append(Row(name, wall, cpu, list(values)))
    return rows


def paired_median(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a - b``, in microseconds."""
    return statistics.median((x - y) * _US for x, y in zip(a, b, strict=True))


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def signed(value: float) -> str:
    """A difference with its sign (``+12.3``, ``-4.0``)."""
    return f"{value:+,.1f}"


def _iqr(stats: Stats) -> str:
    if stats.overhead_iqr_us is None:
        return "-"
    low, high = stats.overhead_iqr_us
    return f"{fmt(low)} .. {fmt(high)}"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: bool = True
) -> str:
    """A GitHub-flavoured markdown table; with ``numeric``, columns after the first are
    right-aligned."""
    align = ["---"] + ["---:" if numeric else "---"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def latency_table(rows: Sequence[Row]) -> str:
    return markdown_table(
        [
            "contender",
            "median µs/request",
            "ratio to raw",
            "overhead µs",
            "overhead IQR µs",
            "CPU µs/request",
            "CPU overhead µs",
        ],
        [
            [
                r.name,
                fmt(r.wall.median_us),
                fmt(r.wall.ratio, 2, "x"),
                fmt(r.wall.overhead_us),
                _iqr(r.wall),
                fmt(r.cpu.median_us),
                fmt(r.cpu.overhead_us),
            ]
            for r in rows
        ],
    )


def throughput_table(rows: Sequence[Row]) -> str:
    return markdown_table(
        [
            "contender",
            "req/s",
            "ratio to raw",
            "median µs/request",
            "overhead µs",
            "CPU µs/request",
            "CPU-time throughput ratio",
        ],
        [
            [
                r.name,
                fmt(r.wall.rps, 0),
                fmt(r.wall.speed_ratio, 3, "x"),
                fmt(r.wall.median_us),
                fmt(r.wall.overhead_us),
                fmt(r.cpu.median_us),
                fmt(r.cpu.speed_ratio, 3, "x"),
            ]
            for r in rows
        ],
    )
