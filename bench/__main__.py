"""``python -m bench``: per-request overhead of the resilient httpx transports.

Contenders run in one process, interleaved in rounds (order shuffled per round with a seeded
RNG); each mode prints a markdown table, then the targets are judged. Absolute microseconds
are not comparable between runs on a noisy machine; ratios and overhead differences within one
run are.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .modes import MODES, TASKS, ModeResult, Settings, run_mode
from .report import Target, fmt, latency_table, markdown_table, throughput_table
from .server import ServerProcess
from .targets import evaluate

# (rounds, requests per block) per mode; --rounds / --requests override them.
# Many short blocks rather than few long ones: the median then shrugs off bursts of load
# from other processes. Concurrent blocks are a multiple of the task count.
DEFAULTS = {
    "mock": (25, 200),
    "sync": (20, 150),
    "async": (20, 150),
    "concurrent": (7, 400),
    "failure": (15, 200),
}
QUICK = {
    "mock": (8, 100),
    "sync": (5, 60),
    "async": (5, 60),
    "concurrent": (3, 200),
    "failure": (4, 60),
}
_DESCRIPTION = "Per-request overhead of the resilient httpx transports against alternatives."
NEEDS_SERVER = {"sync", "async", "concurrent", "failure"}

_TITLES = {
    "mock": "mock: httpx.MockTransport upstream (pure overhead, sync)",
    "sync": "sync: sequential requests to a loopback server (keep-alive)",
    "async": "async: sequential requests from one asyncio task to a loopback server",
    "concurrent": f"concurrent: {TASKS} asyncio tasks sharing one client, loopback server",
    "failure": "failure: open-breaker rejections and the cost of one retry",
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=_DESCRIPTION)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from {','.join(MODES)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, help="rounds per mode (default: per mode)")
    parser.add_argument(
        "--requests", type=int, help="requests per contender per round (default: per mode)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="warm-up calls per contender")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round order shuffles")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument("--quick", action="store_true", help="a short run (about 30 s)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    for flag in ("rounds", "requests", "warmup"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "warmup" else 1):
            parser.error(f"--{flag} must be positive, got {value}")
    args.modes = modes
    return args


def _cheap_sniffio_probe() -> str | None:
    """Keep httpcore's per-call ``import sniffio`` from scanning ``sys.path`` every time.

    Without sniffio installed (recent anyio no longer pulls it in), httpcore retries the
    import for every async lock and event it sets up: a failed import, a few per request,
    which on a slow machine costs more than the transports being compared. Marking the
    module absent makes that failure immediate, with the same outcome (asyncio).
    """
    if importlib.util.find_spec("sniffio") is not None:
        return None
    sys.modules["sniffio"] = None  # type: ignore[assignment]
    return (
        "sniffio is not installed, so httpcore re-attempts `import sniffio` on every async "
        "lock/event (several times per request); the bench marks it absent in sys.modules "
        "so that failure is immediate (same result: asyncio). Install sniffio in production."
    )


def _versions() -> str:
    names = ("httpx", "httpcore", "opentelemetry-sdk", "httpx-retries", "tenacity", "pybreaker")
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{text:<60}", end="", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _server(needed: bool) -> Iterator[str]:
    if not needed:
        yield ""
        return
    with ServerProcess() as server:
        yield server.url


def _mode_text(result: ModeResult) -> str:
    s = result.settings
    lines = [f"## {_TITLES[result.mode]}", ""]
    if result.mode == "concurrent":
        lines.append(
            f"{s['rounds']} rounds x {s['requests']} requests per contender "
            f"({s['tasks']} tasks sharing {s['pool']} keep-alive connections); "
            "ratio = per-round throughput / raw's, median over rounds."
        )
        lines += ["", throughput_table(result.rows)]
    elif result.mode == "failure":
        lines += _failure_text(result)
    else:
        lines.append(f"{s['rounds']} rounds x {s['requests']} requests per contender.")
        lines += ["", latency_table(result.rows)]
    return "\n".join(lines)


def _failure_text(result: ModeResult) -> list[str]:
    s = result.settings
    rejection = markdown_table(
        ["call", "median µs/call", "x cheaper than loopback GET", "CPU µs/call", "CPU x cheaper"],
        [
            [
                r.name,
                fmt(r.wall.median_us),
                "-" if r.name.startswith("raw") else fmt(r.wall.speed_ratio),
                fmt(r.cpu.median_us),
                "-" if r.name.startswith("raw") else fmt(r.cpu.speed_ratio),
            ]
            for r in result.rows
        ],
    )
    retry = markdown_table(
        ["contender", "first try ok µs", "503 then 200 µs", "retry cost µs", "CPU retry cost µs"],
        [
            [
                r.name,
                fmt(r.ok_us),
                fmt(r.retried_us),
                fmt(r.retry_cost_us),
                fmt(r.retry_cost_cpu_us),
            ]
            for r in result.retry_rows
        ],
    )
    return [
        f"{s['rounds']} rounds x {s['requests']} calls per row.",
        "",
        "### (a) rejection by an open breaker vs a raw loopback GET",
        "",
        "`ours-* rejected`: `client.get` on a client whose breaker was `force_open()`ed, "
        "raising `CircuitOpenError`; `transport only`: `handle_request` on a prebuilt request; "
        "`hand-built`: pybreaker open, `CircuitBreakerError` before httpx is reached.",
        "",
        rejection,
        "",
        "### (b) cost of one retry decision (MockTransport, waits made instant)",
        "",
        "A call whose first attempt gets a 503 and the second a 200, minus a call that succeeds "
        "at once (median of per-round differences); it includes the second exchange with the "
        "mock. Ours runs on `FakeClock`, tenacity gets a no-op sleep, httpx-retries' default "
        "`Retry` waits 0 s.",
        "",
        retry,
    ]


def _targets_text(targets: list[Target]) -> str:
    table = markdown_table(
        ["target", "wall clock", "CPU time", "numbers (wall; CPU)"],
        [[t.name, t.verdict, t.verdict_cpu, t.detail] for t in targets],
        numeric=False,
    )
    return "## Targets\n\n" + table


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    note = _cheap_sniffio_probe()
    table = QUICK if args.quick else DEFAULTS
    print("# resilience-otel transport benchmark\n")
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{_versions()}."
    )
    print(f"Load average at start: {_load()}. Seed {args.seed}.")
    print(
        "Contenders are interleaved in rounds (order shuffled per round); each gets a warm-up "
        "first and `gc.collect()` before every block (GC stays on while timing). Ratio and "
        "overhead are medians over rounds of (contender / raw) and (contender - raw) measured "
        "in the same round; the median µs and req/s columns are each contender's own median, "
        "so compare contenders through the paired columns. CPU columns are the client thread's "
        "CPU time (the server process is not in it, nor time spent descheduled by other "
        "load); targets are judged on both. "
        "Absolute µs are not comparable between runs; ratios and overhead differences within "
        "this run are.\n"
    )
    results: dict[str, ModeResult] = {}
    started = time.perf_counter()
    with _server(bool(NEEDS_SERVER & set(args.modes))) as url:
        for mode in args.modes:
            rounds, requests = table[mode]
            settings = Settings(
                rounds=args.rounds or rounds,
                requests=args.requests or requests,
                warmup=args.warmup,
                seed=args.seed,
                url=url,
                progress=_progress,
            )
            mode_started = time.perf_counter()
            results[mode] = run_mode(mode, settings)
            _progress("")
            print(_mode_text(results[mode]))
            print(f"\n_{mode}: {time.perf_counter() - mode_started:.0f} s_\n", flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    targets = evaluate(results)
    print(_targets_text(targets))
    print()
    if note:
        print(f"Note: {note}")
    print(f"Load average at end: {_load()}. Total {time.perf_counter() - started:.0f} s.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "python": platform.python_version(),
            "versions": _versions(),
            "seed": args.seed,
            "quick": args.quick,
            "modes": {mode: result.as_dict() for mode, result in results.items()},
            "targets": [
                t.__dict__ | {"verdict": t.verdict, "verdict_cpu": t.verdict_cpu} for t in targets
            ],
            "notes": [note] if note else [],
        }
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"Results written to {args.json}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
