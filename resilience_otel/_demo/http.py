"""The ``http`` demo scenario: a breaker, retries and dead letters facing a flaky upstream.

It serves a small quotes API on 127.0.0.1 that goes through four equal
phases (healthy, partial outage, full outage, recovery), calls it from four threads through a
:class:`ResilientTransport`, prints what happened every second, and at the end replays the
dead-letter queue against the recovered upstream.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self, TextIO

import httpx

from .. import (
    BreakerConfig,
    CircuitOpenError,
    InMemoryDeadLetterQueue,
    Observer,
    Policy,
    ResilientTransport,
    RetryBudgetConfig,
    RetryConfig,
)
from .phases import PHASES, Timeline
from .upstreams import send_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from .. import CircuitBreaker, DeadLetter, FailureKind, StateChange

__all__ = ["DESCRIPTION", "run_http"]

DESCRIPTION = "an HTTP quotes API that degrades, goes down and recovers, called by 4 threads"
SERVICE = "alpaca"
PATH = "/quotes/AAPL"
CALL_TIMEOUT = 0.5
WORKERS = 4
PAUSE = 0.02  # between requests of one worker, so the demo does not saturate the machine
QUOTE = {"symbol": "AAPL", "bid": 227.41, "ask": 227.48, "currency": "USD"}

_ROW = "{:>3}  {:<15}{:>6}{:>5}{:>6}{:>9}{:>10}{:>6}  {}"
HEADER = _ROW.format("t", "phase", "reqs", "ok", "fail", "retries", "rejected", "dead", "breaker")


def upstream_reply(phase: str, number: int, rng: random.Random) -> tuple[int, float]:
    """The ``(status, delay)`` of the upstream's ``number``-th request during ``phase``."""
    if phase == "partial outage":
        return (503 if rng.random() < 0.5 else 200), 0.0
    if phase == "full outage":
        # Every tenth request hangs past the call timeout, so the client has to cut it off.
        return 503, (CALL_TIMEOUT * 2 if number % 10 == 0 else 0.0)
    return 200, 0.0


class _QuotesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client reuses its connections
    disable_nagle_algorithm = True  # headers and body go out in two writes; do not stall them
    server: FlakyUpstream

    def handle(self) -> None:
        # A client that gave up on a slow reply has closed the connection: expected here.
        with contextlib.suppress(ConnectionError):
            super().handle()

    def do_GET(self) -> None:
        if self.path != PATH:
            self._reply(404, {"error": "unknown symbol"})
            return
        status, delay = self.server.next_reply()
        if delay and self.server.stopping.wait(delay):
            self.close_connection = True  # shutting down: drop the hanging request
            return
        self._reply(status, QUOTE if status == 200 else {"error": "service unavailable"})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        send_json(self, status, payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the demo reports per second instead of per request."""


class FlakyUpstream(ThreadingHTTPServer):
    """The scenario's upstream on a free loopback port, serving while the ``with`` lasts."""

    daemon_threads = True

    def __init__(self, timeline: Timeline) -> None:
        super().__init__(("127.0.0.1", 0), _QuotesHandler)
        self.timeline = timeline
        self.stopping = threading.Event()
        self._rng = random.Random(2024)  # seeded: the partial outage fails alike on every run
        self._lock = threading.Lock()
        self._served = 0
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="upstream", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def next_reply(self) -> tuple[int, float]:
        with self._lock:
            self._served += 1
            phase = self.timeline.phase_at(self.timeline.elapsed())
            return upstream_reply(phase, self._served, self._rng)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join()


class Tally:
    """Thread-safe named counters."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return self._counts.copy()


class Printer:
    """Writes whole lines from any thread without interleaving them."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            print(text, file=self._out, flush=True)


class DemoObserver(Observer):
    """Counts what the engine reports and prints breaker transitions as they happen."""

    def __init__(self, tally: Tally, say: Callable[[str], None]) -> None:
        self._tally = tally
        self._say = say

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self._tally.add("retries")

    def call_rejected(self, service: str, client: str, retry_after: float) -> None:
        self._tally.add("rejected")

    def retries_exhausted(self, service: str, client: str, attempts: int) -> None:
        self._tally.add("exhausted")

    def dead_lettered(self, letter: DeadLetter) -> None:
        self._tally.add("dead")

    def state_changed(self, service: str, change: StateChange) -> None:
        self._tally.add("transitions")
        self._say(f"  -> breaker {change.name}: {change.from_state} -> {change.to_state}")


def demo_policy(duration: float) -> Policy:
    """A policy sized so each phase of a ``duration``-second run shows its effect.

    The breaker judges the failure *rate*: at about 50% failed attempts the retries cope and
    it stays closed; once nearly everything fails it opens. The retry budget allows about one
    retry per call, which the partial outage needs (0.75 on average); the default 0.2 would
    cut retries off midway through a long run.
    """
    phase = duration / len(PHASES)
    breaker = BreakerConfig(
        failure_rate_threshold=0.75,
        minimum_calls=10,
        monitoring_period=min(1.0, phase / 2),
        reset_timeout=min(1.0, phase / 4),
        call_timeout=CALL_TIMEOUT,
    )
    retry = RetryConfig(
        max_attempts=3, base_delay=0.05, max_delay=0.2, budget=RetryBudgetConfig(ratio=1.0)
    )
    return Policy(service=SERVICE, breaker=breaker, retry=retry)


class _Workers:
    """Client threads calling the upstream in a loop until the ``with`` ends."""

    def __init__(self, client: httpx.Client, tally: Tally) -> None:
        self._client = client
        self._tally = tally
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"client-{n}", daemon=True)
            for n in range(WORKERS)
        ]

    def __enter__(self) -> None:
        for thread in self._threads:
            thread.start()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._client.get(PATH)
            except CircuitOpenError:
                pass  # the observer counts rejections
            except httpx.HTTPError:
                self._tally.add("failed")
            else:
                self._tally.add("ok" if response.is_success else "failed")
            self._tally.add("requests")
            self._stop.wait(PAUSE)


def _report(
    timeline: Timeline, tally: Tally, breaker: CircuitBreaker, say: Callable[[str], None]
) -> None:
    """Print one row per second until the scenario's duration is over."""
    say(HEADER)
    previous: Counter[str] = Counter()
    tick = 0.0
    while tick < timeline.duration:
        last, tick = tick, min(tick + 1.0, timeline.duration)
        time.sleep(max(0.0, timeline.start + tick - time.monotonic()))
        now = tally.snapshot()
        delta, previous = now - previous, now
        phase = timeline.phase_at((last + tick) / 2)
        say(
            _ROW.format(
                f"{tick:g}", phase, delta["requests"], delta["ok"], delta["failed"],
                delta["retries"], delta["rejected"], now["dead"], breaker.state,
            )
        )  # fmt: skip


_SUMMARY = (
    ("requests", "requests"), ("successes", "ok"), ("failures", "failed"),
    ("retries", "retries"), ("rejections", "rejected"), ("exhausted", "exhausted"),
    ("dead letters", "dead"), ("transitions", "transitions"),
)  # fmt: skip


def _summarise(tally: Tally, queue: InMemoryDeadLetterQueue, state: str) -> list[str]:
    counts = tally.snapshot()
    lines = ["summary"] + [f"  {label:<13}{counts[key]:>7}" for label, key in _SUMMARY]
    if queue.dropped:
        lines.append(f"  ({queue.dropped} dead letters dropped: the queue was full)")
    lines.append(f"  {'breaker':<13}{state:>7}")
    return lines


def _replay(queue: InMemoryDeadLetterQueue, client: httpx.Client) -> str:
    """Re-issue every dead-lettered call against the (now healthy) upstream."""

    def resend(letter: DeadLetter) -> None:
        method, _, url = letter.operation.partition(" ")
        client.request(method, url).raise_for_status()

    pending = len(queue)
    result = queue.replay(resend)
    return (
        f"replayed {result.succeeded} of {pending} dead letters "
        f"({result.failed} failed again and stay queued)"
    )


def _run_http(duration: float, say: Callable[[str], None]) -> None:
    timeline = Timeline(time.monotonic(), duration)
    tally = Tally()
    queue = InMemoryDeadLetterQueue()
    policy = demo_policy(duration)
    transport = ResilientTransport(
        policy=policy, dead_letters=queue, observers=[DemoObserver(tally, say)]
    )
    with (
        FlakyUpstream(timeline) as upstream,
        httpx.Client(transport=transport, base_url=upstream.url) as client,
    ):
        quarter = duration / len(PHASES)
        say(f"upstream {upstream.url}{PATH}, phases of {quarter:g}s: {', '.join(PHASES)}")
        with _Workers(client, tally):
            _report(timeline, tally, transport.breaker, say)
        for line in _summarise(tally, queue, transport.breaker.state):
            say(line)
        say(_replay(queue, client))


def run_http(duration: float, out: TextIO) -> int:
    """Run the scenario for ``duration`` seconds, printing to ``out``.

    Returns:
        The process exit code: 0, or 130 when interrupted with Ctrl-C.
    """
    say = Printer(out)
    say(f"resilience-otel demo: http scenario, {duration:g}s, service {SERVICE!r}")
    try:
        _run_http(duration, say)
    except KeyboardInterrupt:
        say("interrupted: upstream stopped, client threads joined")
        return 130
    return 0
