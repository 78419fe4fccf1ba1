"""The ``full`` demo scenario: trading and AI APIs, Redis and PostgreSQL through an outage.

Order of events: serve ``/metrics`` and ``/health``; probe Redis and PostgreSQL while a local
Prometheus and Alertmanager start (when installed); start the embedded upstreams, the fault
proxies and the clients; run the four phases with a live view; replay dead letters in the
recovery; wait briefly for alerts to resolve; print the summary and where to look next. Every
server, key and table the run made is removed at the end, also after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import TYPE_CHECKING, Any, TextIO

from .. import HealthConfig, HealthMonitor
from .._deadletters.base import InMemoryDeadLetterQueue
from ..health import http_check, serve_health
from . import workload
from .backends import Backends, OutageDriver, PostgresSide, RedisSide, probe_backends
from .failover import Failover, drive_failover, failover_facts
from .ownservers import start_own_servers
from .phases import FULL_PHASES, Timeline
from .stack import AlertBoard, AlertLine, Stack, for_scale_of, start_stack_async, stop_quietly
from .stats import EventLog, LogToEvents, Recorder, Row, Sampler
from .upstreams import AiApi, TradingApi, Upstream
from .view import Frame, LiveView, PlainView, summary_lines, summary_table

if TYPE_CHECKING:
    from rich.console import Console

    from .tcpproxy import FaultProxy
    from .workload import Letters, Service, Sinks

__all__ = ["run_full"]

REFRESH = 0.25  # seconds between redraws
NEXT_STEPS = (
    "where to look next",
    "  README.md      the quick start; the guides are in docs/ (make docs serves them):",
    "                 concepts.md, guides/health.md, guides/dead-letters.md,",
    "                 guides/shared-breakers.md, reference/telemetry.md",
    "  examples/      trading_client.py, ai_client.py, cache_and_repository.py, otel_setup.py",
    "  dashboards/    resilience-overview.json, resilience-service.json; import them with",
    "                 resilience-otel dashboards import --url http://grafana:3000 --token ...",
    "  alerts/        resilience-rules.yml (render your own: resilience-otel alerts render),",
    "                 promtool tests in alerts/tests/",
    "  again          resilience-otel demo --duration 120   |   --scenario http",
)


def run_full(duration: float, out: TextIO) -> int:
    """Run the scenario for ``duration`` seconds, printing to ``out``; returns the exit code
    (0, 130 after Ctrl-C, 143 after SIGTERM)."""
    run = _Run(duration, out)
    try:
        asyncio.run(run.main())
    except KeyboardInterrupt:
        run.say("interrupted: upstreams, clients and local servers stopped; demo data removed")
        return 130
    except asyncio.CancelledError:  # SIGTERM: cleaned up the same way
        run.say("terminated: upstreams, clients and local servers stopped; demo data removed")
        return 143
    return 0


def _console(out: TextIO) -> Console | None:
    """A rich console when ``out`` is a terminal (and rich is installed), else ``None``."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    console = Console(file=out)
    return console if console.is_terminal else None


class _Run:
    """One run of the scenario; the steps are methods so each stays short."""

    def __init__(self, duration: float, out: TextIO) -> None:
        self.duration = duration
        self.phase_length = duration / len(FULL_PHASES)
        self.out = out
        self.console = _console(out)
        self.endpoints: list[str] = []
        self.meter_provider: Any = None
        self.registry: Any = None
        self.monitor = HealthMonitor(self._health_config())
        self.metrics_port: int | None = None
        self.stack: Stack | None = None
        self.backends = Backends(None, None, ())

    def say(self, text: str = "") -> None:
        """Print a line."""
        print(text, file=self.out, flush=True)

    def _health_config(self) -> HealthConfig:
        window = min(10.0, max(1.0, self.phase_length / 2))
        return HealthConfig(window=window, window_buckets=10, minimum_calls=5,
                            check_interval=min(5.0, max(0.5, self.phase_length / 4)),
                            check_timeout=0.5)  # fmt: skip

    async def main(self) -> None:
        """The whole run; SIGTERM cancels it like Ctrl-C does, so the clean-up runs too."""
        task = asyncio.current_task()
        if task is not None:
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        self.say(f"resilience-otel demo: full scenario, {self.duration:g}s in five phases of "
                 f"{self.phase_length:g}s ({', '.join(FULL_PHASES)})")  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            self._serve_endpoints(stack)
            await self._prepare(stack)
            rows, facts = await self._scenario(stack)
            self._summary(rows, facts)
        for line in NEXT_STEPS:
            self.say(line)

    def _serve_endpoints(self, stack: contextlib.AsyncExitStack) -> None:
        """Metrics (when the prometheus extra is there) and the health endpoints."""
        try:
            from .._monitoring.prometheus import setup_prometheus
        except ImportError:
            self.say("metrics: skipped (install the prometheus extra)")
        else:
            prom = setup_prometheus(port=0, set_global=False)
            stack.callback(prom.shutdown)
            self.meter_provider, self.registry = prom.meter_provider, prom.registry
            self.metrics_port = prom.port
            self.monitor = HealthMonitor(self._health_config(), meter_provider=prom.meter_provider)
            self.endpoints.append(f"metrics http://127.0.0.1:{prom.port}/metrics")
        health = serve_health(self.monitor, port=0, registry=self.registry)
        stack.callback(health.shutdown)
        self.endpoints.append(f"health http://127.0.0.1:{health.port}/health")
        for endpoint in self.endpoints:
            self.say(f"serving {endpoint}")

    async def _prepare(self, stack: contextlib.AsyncExitStack) -> None:
        """Probe Redis and PostgreSQL while Prometheus and Alertmanager start."""
        scale = for_scale_of(self.phase_length)
        if self.metrics_port is None:
            started: Stack | str = "skipped: no /metrics to scrape"
            self.backends = await probe_backends()
        else:
            self.backends, started = await asyncio.gather(
                probe_backends(),
                start_stack_async(self.metrics_port, scale, self._interval()),
            )
        for note in self.backends.notes:
            self.say(note)
        found = [name for name, where in (("Redis", self.backends.redis),
                 ("PostgreSQL", self.backends.postgres)) if where]  # fmt: skip
        self.say("running: " + " + ".join(["HTTP", *found]) + ("" if found else " only"))
        if isinstance(started, str):
            self.say(f"stack: Prometheus/Alertmanager {started}")
            return
        self.stack = started
        stack.callback(stop_quietly, started)
        self.endpoints.append(f"prometheus {started.prometheus.url}/alerts")
        self.say(f"stack: Prometheus {started.prometheus.url} and Alertmanager "
                 f"{started.alertmanager.url} running, shipped rules with for_scale={scale:.3g}, "
                 f"notifications to {started.receiver.url}")  # fmt: skip

    def _interval(self) -> str:
        """Prometheus' scrape and evaluation interval: faster for short phases."""
        return "500ms" if self.phase_length < 5 else "1s"

    async def _backends(
        self, stack: contextlib.AsyncExitStack
    ) -> tuple[RedisSide | None, PostgresSide | None]:
        redis_side = pg_side = None
        pair, primary = await start_own_servers(self.backends, self.say)
        if self.backends.redis is not None:
            redis_side = RedisSide(self.backends.redis, pair)
            stack.push_async_callback(self._close_redis, redis_side)
        if self.backends.postgres is not None:
            try:
                pg_side = await PostgresSide.open(self.backends.postgres, primary)
            except Exception as exc:  # found a moment ago, but not usable for the demo
                self.say(f"PostgreSQL: skipped ({type(exc).__name__}: {exc})")
                if primary is not None:
                    await asyncio.to_thread(primary.stop)
            else:
                stack.push_async_callback(self._close_postgres, pg_side)
        return redis_side, pg_side

    async def _close_redis(self, side: RedisSide) -> None:
        deleted = await side.close()
        self.say(f"cleaned up: {deleted} Redis keys under {side.prefix}")

    async def _close_postgres(self, side: PostgresSide) -> None:
        await side.close()
        self.say(f"cleaned up: dropped table {side.table}")

    def _order_letters(self, stack: contextlib.AsyncExitStack, side: RedisSide | None) -> Letters:
        """Orders' dead letters: a Redis stream when Redis is there, else in memory."""
        if side is None:
            return InMemoryDeadLetterQueue(maxlen=5000)
        from .._deadletters.redis_stream import RedisStreamDeadLetterQueue

        queue = RedisStreamDeadLetterQueue(
            side.direct, stream=side.prefix + "dead-letters:trading-orders", maxlen=5000,
            meter_provider=self.meter_provider,
        )  # fmt: skip
        stack.callback(queue.close)
        self.say(f"dead letters of trading-orders go to the Redis stream {queue.stream}")
        return queue

    async def _scenario(self, stack: contextlib.AsyncExitStack) -> tuple[list[Row], list[str]]:
        redis_side, pg_side = await self._backends(stack)
        order_letters = self._order_letters(stack, redis_side)
        timeline = Timeline(time.monotonic(), self.duration, FULL_PHASES)
        failover = Failover.of(redis_side, pg_side)
        trading = TradingApi(timeline, slow_ack=1.0)
        ai = AiApi(timeline, retry_after="1", hang=3.0)
        trading_up = stack.enter_context(Upstream(trading))
        ai_up = stack.enter_context(Upstream(ai))
        view = self._view(timeline)
        events = EventLog(timeline.start, on_event=view.event)
        recorder = Recorder(events)
        sinks = workload.Sinks((recorder, self.monitor), self.meter_provider)
        services = self._services(stack, sinks, trading_up.url, ai_up.url, order_letters,
                                  redis_side, pg_side, (timeline, failover))  # fmt: skip
        self.monitor.add_check("trading-quotes", http_check(trading_up.url + "/health"))
        self.monitor.add_check("ai", http_check(ai_up.url + "/health"))
        await self.monitor.astart()
        stack.callback(self.monitor.stop)
        board = AlertBoard(self.stack.receiver, timeline.start, events.add) if self.stack else None
        watch = _Watch(view, timeline, services, Sampler(recorder, self.monitor), events, board)
        proxies = [s.proxy for s in (redis_side, pg_side) if s is not None]
        with view, LogToEvents(events).installed():
            await self._run_phases(watch, recorder, proxies, failover)
        facts = [f"trading API: {len(trading.orders)} orders placed, {trading.duplicates} resent "
                 "orders answered from their Idempotency-Key (never placed twice)",
                 f"AI API: {ai.requests} requests, {ai.rate_limited} answered 429 with "
                 "Retry-After"]  # fmt: skip
        refused = {s: recorder.snapshot(s).failovers for s in ("cache", "orders-db")}
        facts += await failover_facts(failover, refused)
        return watch.rows(), facts + watch.alert_facts()

    async def _run_phases(
        self,
        watch: _Watch,
        recorder: Recorder,
        proxies: list[FaultProxy],
        failover: Failover,
    ) -> None:
        """Run the clients through the phases, replay what is left, let alerts settle."""
        timeline, services, events = watch.timeline, watch.services, watch.events
        stop = asyncio.Event()
        tasks = workload.start(services, timeline, recorder, events, stop)
        if proxies:
            tasks.append(asyncio.create_task(OutageDriver(timeline, proxies).run(stop)))
        tasks.append(asyncio.create_task(drive_failover(failover, timeline, events, stop)))
        try:
            await watch.until(self.duration)
        finally:
            await workload.halt(tasks, stop)
        watch.close_phases()
        await workload.replay_leftovers(services, recorder, events)
        await watch.linger()

    def _services(
        self,
        stack: contextlib.AsyncExitStack,
        sinks: Sinks,
        trading_url: str,
        ai_url: str,
        order_letters: Letters,
        redis_side: RedisSide | None,
        pg_side: PostgresSide | None,
        failover: tuple[Timeline, Failover],
    ) -> list[Service]:
        policy = workload.policies(self.phase_length)
        services = workload.http_services(
            stack, trading_url=trading_url, ai_url=ai_url, policy=policy, sinks=sinks,
            order_letters=order_letters,
        )  # fmt: skip
        if redis_side is not None:
            services.append(workload.cache_service(redis_side, policy["cache"], sinks, *failover))
        if pg_side is not None:
            services.append(workload.db_service(pg_side, policy["orders-db"], sinks, *failover))
        return services

    def _view(self, timeline: Timeline) -> LiveView | PlainView:
        if self.console is None:
            return PlainView(self.out, timeline)
        return LiveView(self.console, timeline, self.endpoints)

    def _summary(self, rows: list[Row], facts: list[str]) -> None:
        if self.console is not None:
            self.console.print(summary_table(rows))
        else:
            for line in summary_lines(rows):
                self.say(line)
        for fact in facts:
            self.say(fact)


class _Watch:
    """Redraws the view every :data:`REFRESH` seconds and polls the alerts."""

    def __init__(
        self,
        view: LiveView | PlainView,
        timeline: Timeline,
        services: list[Service],
        sampler: Sampler,
        events: EventLog,
        board: AlertBoard | None,
    ) -> None:
        self.view, self.timeline, self.services = view, timeline, services
        self.sampler, self.events, self.board = sampler, events, board

    def rows(self) -> list[Row]:
        """A row per service, now."""
        return [
            self.sampler.row(s.name, s.client, s.breaker.state.value,
                             has_queue=s.dead_letters is not None)
            for s in self.services
        ]  # fmt: skip

    def frame(self) -> Frame:
        """What to show now."""
        elapsed = self.timeline.elapsed()
        if self.board is not None:
            self.board.poll()
        alerts = self.board.lines() if self.board is not None else []
        index = self.timeline.index_at(elapsed)
        return Frame(min(elapsed, self.timeline.duration), index, self.rows(), alerts,
                     self.events.recent())  # fmt: skip

    async def until(self, end: float) -> None:
        """Redraw until ``end`` seconds into the run, and just after each phase boundary."""
        length = self.timeline.phase_length
        while (elapsed := self.timeline.elapsed()) < end:
            self.view.show(self.frame())
            boundary = (int(elapsed / length) + 1) * length + 0.001
            await asyncio.sleep(max(0.0, min(REFRESH, boundary - elapsed, end - elapsed)))
        self.view.show(self.frame())

    def close_phases(self) -> None:
        """Close the last phase (its table, in the plain view)."""
        self.view.finish(self.frame())

    async def linger(self) -> None:
        """With the stack, give firing alerts a moment to resolve."""
        if self.board is None:
            return
        self.events.add("traffic stopped; waiting briefly for alerts to resolve")
        linger = min(3.0, max(1.5, self.timeline.phase_length / 4))
        await self.until(self.timeline.duration + linger)
        # Prometheus learns where Alertmanager is only some seconds after it starts: in a
        # very short run, give the first notification a little longer to arrive.
        deadline = self.timeline.duration + linger + 6.0
        while not self.board.lines() and self.timeline.elapsed() < deadline:
            await self.until(self.timeline.elapsed() + REFRESH)

    def alert_facts(self) -> list[str]:
        """The closing lines about alerts: per alert, where it fired and resolved."""
        if self.board is None:
            return ["alerts: no Prometheus/Alertmanager in this run"]
        fired, resolved = self.board.counts()
        lines = [f"alerts via Alertmanager: {fired} fired, {resolved} resolved"]
        by_name: dict[str, list[AlertLine]] = {}
        for alert in self.board.lines():
            by_name.setdefault(alert.name, []).append(alert)
        for name, alerts in sorted(by_name.items()):
            done = sum(1 for a in alerts if a.state == "resolved")
            services = ", ".join(sorted(a.service for a in alerts))
            lines.append(f"  {name:<37} fired {len(alerts)}, resolved {done}: {services}")
        return lines
