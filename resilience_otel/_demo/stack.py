"""A local Prometheus and Alertmanager for the full demo, when they are installed.

Prometheus scrapes the demo's ``/metrics`` every second and evaluates the shipped alert
rules, rendered with a small ``for_scale`` and ``window_scale`` so they fire and resolve
within the run; Alertmanager sends its notifications to a webhook receiver in this process,
and :class:`AlertBoard` turns them
into "fired" and "resolved" events. Without the binaries (or the rules module) the demo runs
without this part and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .promstack import (
    ManagedProcess,
    WebhookReceiver,
    have_binaries,
    start_alertmanager,
    start_prometheus,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "AlertBoard",
    "AlertLine",
    "Stack",
    "for_scale_of",
    "start_stack",
    "start_stack_async",
    "stop_quietly",
]

_ALERTMANAGER_CONFIG = """\
route:
  receiver: demo
  group_by: [alertname, service]
  group_wait: 500ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: demo
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def for_scale_of(phase_length: float) -> float:
    """The ``for:`` scale that lets the alerts fire within phases of ``phase_length`` s.

    A 15 s phase gives 0.05: ``ResilienceCircuitBreakerOpen`` (``for: 1m``) then fires after
    3 s of an open breaker, ``ResilienceErrorRateHigh`` (``for: 5m``) after 15 s.
    """
    return min(0.1, max(0.002, phase_length / 300))


@dataclass
class Stack:
    """The running Prometheus, Alertmanager and webhook receiver."""

    prometheus: ManagedProcess
    alertmanager: ManagedProcess
    receiver: WebhookReceiver
    for_scale: float

    def stop(self) -> None:
        """Stop all three (Prometheus first, so it sends nothing more)."""
        self.prometheus.stop()
        self.alertmanager.stop()
        self.receiver.stop()


def start_stack(metrics_port: int, for_scale: float, interval: str = "1s") -> Stack | str:
    """Start the stack scraping ``127.0.0.1:metrics_port`` every ``interval`` (also the rule
    evaluation interval); a reason string when it cannot."""
    try:
        from ..alerts import render_rules
    except ImportError as exc:
        return f"skipped: the alert rules cannot be loaded ({exc})"
    if not have_binaries():
        return "skipped: install the prometheus and prometheus-alertmanager packages to see alerts"
    receiver = WebhookReceiver()
    try:
        alertmanager = start_alertmanager(_ALERTMANAGER_CONFIG.format(url=receiver.url))
    except (OSError, RuntimeError) as exc:
        receiver.stop()
        return f"skipped: Alertmanager did not start ({exc})"
    try:
        prometheus = start_prometheus(
            targets=[f"127.0.0.1:{metrics_port}"],
            # Windows shrink too, so rate-based alerts also resolve before the run ends.
            rules=render_rules(for_scale=for_scale, window_scale=for_scale),
            alertmanager=f"127.0.0.1:{alertmanager.port}",
            interval=interval,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        alertmanager.stop()
        receiver.stop()
        return f"skipped: Prometheus did not start ({exc})"
    return Stack(prometheus, alertmanager, receiver, for_scale)


async def start_stack_async(metrics_port: int, for_scale: float, interval: str) -> Stack | str:
    """:func:`start_stack` in a worker thread; if the caller is cancelled (Ctrl-C) while it
    starts, the processes it started are stopped, whichever side finishes first."""
    lock = threading.Lock()
    state: dict[str, object] = {}

    def run() -> Stack | str:
        started = start_stack(metrics_port, for_scale, interval)
        with lock:
            state["started"] = started
            abandoned = "abandoned" in state
        if abandoned:
            stop_quietly(started if isinstance(started, Stack) else None)
        return started

    try:
        return await asyncio.to_thread(run)
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = True
            started = state.get("started")
        stop_quietly(started if isinstance(started, Stack) else None)
        raise


@dataclass(frozen=True, slots=True)
class AlertLine:
    """One alert as the views show it."""

    name: str
    service: str
    severity: str
    state: str
    fired_at: float
    resolved_at: float | None


class AlertBoard:
    """Follows the notifications the webhook receiver got; reports each change once.

    Args:
        receiver: where Alertmanager posts.
        start: the scenario's start (monotonic); times are relative to it.
        report: called with a line for every alert that fires or resolves.
    """

    def __init__(
        self, receiver: WebhookReceiver, start: float, report: Callable[[str], None]
    ) -> None:
        self._receiver = receiver
        self._start = start
        self._report = report
        self._alerts: dict[str, AlertLine] = {}
        self._lock = threading.Lock()

    def poll(self) -> None:
        """Read what arrived since the last poll and report the changes."""
        now = time.monotonic() - self._start
        for alert in self._receiver.alerts():
            self._update(alert, now)

    def _update(self, alert: dict[str, Any], now: float) -> None:
        key = str(alert.get("fingerprint", ""))
        state = "firing" if alert.get("status") == "firing" else "resolved"
        labels = alert.get("labels", {})
        with self._lock:
            known = self._alerts.get(key)
            if known is not None and (known.state == state or known.state == "resolved"):
                return  # a repeat (or a stale "firing" after the resolution): nothing new
            if known is None and state == "resolved":
                fired = now  # fired and resolved within one notification interval
            else:
                fired = known.fired_at if known is not None else now
            line = AlertLine(
                name=str(labels.get("alertname", "?")),
                service=str(labels.get("service", "-")),
                severity=str(labels.get("severity", "-")),
                state=state,
                fired_at=fired,
                resolved_at=now if state == "resolved" else None,
            )
            self._alerts[key] = line
        verb = "FIRING" if state == "firing" else "resolved"
        self._report(f"alert {verb}: {line.name} service={line.service} severity={line.severity}")

    def lines(self) -> list[AlertLine]:
        """Every alert seen, firing ones first, then by when they fired."""
        with self._lock:
            alerts = list(self._alerts.values())
        return sorted(alerts, key=lambda a: (a.state != "firing", a.fired_at, a.name))

    def counts(self) -> tuple[int, int]:
        """``(alerts that fired, of which resolved)``."""
        lines = self.lines()
        return len(lines), sum(1 for line in lines if line.state == "resolved")


def stop_quietly(stack: Stack | None) -> None:
    """Stop ``stack`` if there is one, ignoring processes that already went away."""
    if stack is not None:
        with contextlib.suppress(OSError):
            stack.stop()
