"""The performance goals, judged on one run's results.

Each goal is judged on wall-clock time (what a caller waits for) and, as a
cross-check that other load on the machine cannot skew, on the client's CPU time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .modes import ModeResult
from .report import Row, Stats, Target, fmt, signed

__all__ = ["evaluate"]

FULL_VS_HAND_BUILT = 0.33
OFF_VS_HTTPX_RETRIES = 2.0
CONCURRENT_THROUGHPUT = 0.92
REJECTION_SPEEDUP = 20.0

Judge = Callable[[Callable[[Row], Stats]], tuple[bool, str]]


def _wall(row: Row) -> Stats:
    return row.wall


def _cpu(row: Row) -> Stats:
    return row.cpu


def _row(result: ModeResult, name: str) -> Row:
    return next(row for row in result.rows if row.name == name)


def _multiple(ours: float, theirs: float) -> str:
    # A baseline overhead at or below zero is noise; a multiple of it means nothing.
    return f"{fmt(ours / theirs, 2)}x" if theirs > 0 else "no multiple (reference <= 0)"


def _judged(name: str, judge: Judge, informational: bool = False) -> Target:
    passed, detail = judge(_wall)
    passed_cpu, detail_cpu = judge(_cpu)
    return Target(name, passed, f"{detail}; CPU: {detail_cpu}", passed_cpu, informational)


def _full_vs_hand_built(mode: str, result: ModeResult | None) -> Target:
    name = f"{mode}: ours-full overhead <= {FULL_VS_HAND_BUILT}x hand-built overhead"
    if result is None:
        return Target(name, None, "mode not run")

    def judge(clock: Callable[[Row], Stats]) -> tuple[bool, str]:
        ours = clock(_row(result, "ours-full")).overhead_us
        theirs = clock(_row(result, "hand-built")).overhead_us
        assert ours is not None
        assert theirs is not None
        # A ratio of medians: per-round ratios of two small differences blow up on noise.
        detail = f"{signed(ours)} µs vs {signed(theirs)} µs = {_multiple(ours, theirs)}"
        return theirs > 0 and ours <= FULL_VS_HAND_BUILT * theirs, detail

    return _judged(name, judge)


def _off_vs_httpx_retries(mode: str, result: ModeResult | None, informational: bool) -> Target:
    name = f"{mode}: ours-off overhead <= {OFF_VS_HTTPX_RETRIES:g}x httpx-retries overhead"
    if result is None:
        return Target(name, None, "mode not run", informational=informational)

    def judge(clock: Callable[[Row], Stats]) -> tuple[bool, str]:
        ours = clock(_row(result, "ours-off")).overhead_us
        theirs = clock(_row(result, "httpx-retries")).overhead_us
        assert ours is not None
        assert theirs is not None
        detail = f"{signed(ours)} µs vs {signed(theirs)} µs = {_multiple(ours, theirs)}"
        return ours <= OFF_VS_HTTPX_RETRIES * max(theirs, 0.0), detail

    return _judged(name, judge, informational)


def _concurrent(result: ModeResult | None) -> list[Target]:
    targets = []
    for contender in ("ours-off", "ours-full"):
        name = f"concurrent: {contender} throughput >= {CONCURRENT_THROUGHPUT}x raw"
        if result is None:
            targets.append(Target(name, None, "mode not run"))
            continue

        def judge(clock: Callable[[Row], Stats], contender: str = contender) -> tuple[bool, str]:
            stats, raw = clock(_row(result, contender)), clock(_row(result, "raw"))
            speed = stats.speed_ratio
            assert speed is not None
            detail = f"{fmt(stats.rps, 0)} vs raw {fmt(raw.rps, 0)} req/s = {fmt(speed, 3)}x"
            return speed >= CONCURRENT_THROUGHPUT, detail

        targets.append(_judged(name, judge))
    return targets


def _rejection(result: ModeResult | None) -> list[Target]:
    rows = {
        "ours-off": ("ours-off rejected", False),
        "ours-full": ("ours-full rejected", False),
        # The same rejection without httpx.Client's own per-call work (building the request,
        # redirects, auth, hooks), which any transport-level breaker pays alike.
        "ours-off at the transport (handle_request)": ("ours-off rejected, transport only", True),
    }
    targets = []
    for label, (row_name, informational) in rows.items():
        name = (
            f"failure: {label} open-breaker rejection >= {REJECTION_SPEEDUP:g}x cheaper "
            "than a loopback GET"
        )
        if result is None:
            targets.append(Target(name, None, "mode not run", informational=informational))
            continue

        def judge(clock: Callable[[Row], Stats], row_name: str = row_name) -> tuple[bool, str]:
            stats = clock(_row(result, row_name))
            raw = clock(_row(result, "raw loopback GET"))
            speed = stats.speed_ratio
            assert speed is not None
            detail = (
                f"{fmt(stats.median_us)} µs vs GET {fmt(raw.median_us)} µs "
                f"= {fmt(speed, 1)}x cheaper"
            )
            return speed >= REJECTION_SPEEDUP, detail

        targets.append(_judged(name, judge, informational))
    return targets


def evaluate(results: Mapping[str, ModeResult]) -> list[Target]:
    """Every target, in the order they are printed."""
    targets = [_full_vs_hand_built(m, results.get(m)) for m in ("mock", "sync", "async")]
    targets.append(_off_vs_httpx_retries("mock", results.get("mock"), informational=False))
    targets.append(_off_vs_httpx_retries("sync", results.get("sync"), informational=True))
    targets += _concurrent(results.get("concurrent"))
    targets += _rejection(results.get("failure"))
    return targets
