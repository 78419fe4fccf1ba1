"""Running active health checks: each within its timeout, none able to stop the others.

A check may return ``False``, raise anything, hang, or ignore cancellation: the runner
records a failure and goes on. Async checks run as their own tasks and sync checks in their
own daemon threads, so one that never returns is left behind (it cannot be killed) and never
blocks the loop, the other checks or interpreter exit. While a run is still hanging, the check
is not started again: each later due time is recorded as a failure at once, so a hung check
holds at most one thread or task. Failures are logged at most once per service per
``LOG_EVERY`` seconds, with the number of failures left unlogged in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._core.exceptions import ConfigError
from .._core.validate import check_int
from .._telemetry.errortext import error_text

if TYPE_CHECKING:
    from .monitor import HealthMonitor

__all__ = [
    "LOG_EVERY",
    "CheckLog",
    "CheckRunner",
    "HealthCheck",
    "client_check_arg",
    "http_check_args",
    "run_check",
]

_log = logging.getLogger("resilience_otel.health")

LOG_EVERY = 60.0
"""Seconds between two logged failures of one service's checks."""

HealthCheck = Callable[[], object] | Callable[[], Awaitable[object]]
"""A check: returns (or resolves to) anything but ``False`` when healthy; raising fails it."""

Outcome = tuple[bool, str]
"""Whether the check passed, and what went wrong when it did not."""


def _describe(error: BaseException) -> str:
    text = error_text(error)  # URLs redacted, Redis/PostgreSQL values scrubbed
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _in_thread(check: Callable[[], object]) -> asyncio.Future[object]:
    """Run ``check()`` in a daemon thread; its outcome resolves the returned future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[object] = loop.create_future()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        result: object = None
        error: BaseException | None = None
        try:
            result = check()
        except Exception as exc:
            error = exc
        except BaseException as exc:  # SystemExit in a check: fail it, and end this thread
            error = RuntimeError(f"check raised {type(exc).__name__}")
            _deliver(loop, settle, result, error)
            raise
        _deliver(loop, settle, result, error)

    threading.Thread(target=target, name="health-check", daemon=True).start()
    return future


def _deliver(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[object, BaseException | None], None],
    result: object,
    error: BaseException | None,
) -> None:
    # RuntimeError: the loop closed while the check hung, and nobody waits for it any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, result, error)


def _consume(task: asyncio.Future[Any]) -> None:
    # A task given up on may end later with an error: retrieve it so asyncio does not log it.
    if not task.cancelled():
        task.exception()


def _start(check: Callable[[], object]) -> asyncio.Future[Any]:
    if inspect.iscoroutinefunction(check):
        return asyncio.ensure_future(check())
    return _in_thread(check)


async def run_check(
    check: Callable[[], object],
    limit: float,
    running: dict[Any, asyncio.Future[Any]] | None = None,
    key: object = None,
) -> Outcome:
    """Run ``check`` once within ``limit`` seconds; never raises an ``Exception``.

    Args:
        running: runs given up on, by ``key``; a check whose run is still there and not
            finished is not started again (it fails at once).
    """
    if running is not None and key in running:
        if not running[key].done():
            return False, f"the previous run is still hanging (more than {limit:g}s)"
        del running[key]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    try:
        pending = _start(check)
    except Exception as exc:
        return False, _describe(exc)
    while True:
        try:
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:  # the runner is stopping: take the check with it
            pending.cancel()
            raise
        if not done:
            if isinstance(pending, asyncio.Task):
                pending.cancel()  # a thread cannot be stopped: its future stays pending
            pending.add_done_callback(_consume)
            if running is not None:
                running[key] = pending
            return False, f"timed out after {limit:g}s"
        if pending.cancelled():
            return False, "the check was cancelled"
        error = pending.exception()
        if error is not None:
            return False, _describe(error)
        result = pending.result()
        if not inspect.isawaitable(result):
            return (False, "returned False") if result is False else (True, "")
        pending = asyncio.ensure_future(result)  # a sync function that returned a coroutine


class CheckLog:
    """Logs failed checks at most once per service per :data:`LOG_EVERY` seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def failed(self, service: str, detail: str, now: float) -> None:
        """Note one failed check of ``service``; log it unless one was logged lately."""
        with self._lock:
            last = self._last.get(service)
            if last is not None and now - last < LOG_EVERY:
                self._suppressed[service] = self._suppressed.get(service, 0) + 1
                return
            self._last[service] = now
            skipped = self._suppressed.pop(service, 0)
        more = f" ({skipped} more failures since the last report)" if skipped else ""
        _log.warning("health check of %r failed: %s%s", service, detail, more)


class CheckRunner:
    """Schedules a monitor's checks on their intervals, in a thread or as a task."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: dict[Any, asyncio.Future[Any]] = {}
        self._last_run: dict[tuple[str, int], float] = {}

    async def _loop(self) -> None:
        monitor = self.monitor
        while not self._stop.is_set():
            try:
                await self._round()
                pause = min(0.25, monitor.config.check_interval, *monitor._check_intervals())
            except Exception as exc:  # a bug here must not end every check: log and go on
                monitor._check_log.failed("(runner)", _describe(exc), monitor._clock.monotonic())
                pause = 0.25
            await asyncio.sleep(pause)

    async def _round(self) -> None:
        monitor = self.monitor
        due = monitor._due_checks(monitor._clock.monotonic(), self._last_run)
        if not due:
            return
        outcomes = await asyncio.gather(
            *(
                run_check(check, timeout, self._running, (name, id(check)))
                for name, check, timeout in due
            )
        )
        for (name, _, _), outcome in zip(due, outcomes, strict=True):
            monitor._record_outcome(name, outcome)

    def start_thread(self) -> None:
        """Run the schedule on its own event loop in a daemon thread."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._loop()), name="health-checks", daemon=True
        )
        self._thread.start()

    def start_task(self) -> None:
        """Run the schedule as a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        """Stop scheduling; a check still running is left to finish on its own."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._task is not None:
            self._task.cancel()


def http_check_args(url: object, expect: object) -> frozenset[int]:
    """Validate ``http_check``'s arguments; the set of accepted status codes."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"http_check(url=...) must be an http:// or https:// URL, got {url!r}", field="url"
        )
    if isinstance(expect, int) or not isinstance(expect, Iterable):
        raise ConfigError(
            f"http_check(expect=...) must be a collection of status codes such as {{200, 204}}, "
            f"got {expect!r}",
            field="expect",
        )
    codes = frozenset(expect)
    for code in codes:
        check_int("http_check(expect=...) item", code, 100, 599)
    return codes


def client_check_arg(name: str, target: object, method: str, what: str) -> None:
    """Raise ``TypeError`` unless ``target`` has a callable ``method`` (duck-typed clients)."""
    inner = getattr(target, "raw", target)  # the package's wrappers keep the client as .raw
    if not callable(getattr(inner, method, None)):
        raise TypeError(f"{name} must be {what}, got {target!r}")
