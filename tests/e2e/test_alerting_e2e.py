"""End to end: a workload using the package, a real Prometheus evaluating the shipped rules
(test-sized ``for:`` and windows via render), a real Alertmanager routing with the example
configuration, and a webhook receiver. An outage must page, recovery must resolve, and every
dashboard query must return data from that Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from resilience_otel._demo.promstack import (
    ManagedProcess,
    WebhookReceiver,
    have_binaries,
    start_alertmanager,
    start_prometheus,
)
from resilience_otel.alerts import render_rules
from resilience_otel.grafana import build_dashboards
from tests.integration.faultserver import FaultServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.02  # 1m -> 1.2s for: 5m windows -> 6s
QUOTE = "/quotes/AAPL"
PARTIAL = ["503", "503", "200"] * 3000  # with 2 attempts: every other call exhausts its retries


def _alertmanager_config(url: str) -> str:
    """The shipped example, pointed at the test's receiver, with test-sized grouping timers.

    Inhibition is left out: this test wants to see each alert, not the most useful one.
    """
    text = (ROOT / "alerts" / "alertmanager.example.yml").read_text()
    text = text.replace("http://127.0.0.1:5001/", url)
    text = re.sub(r"(group_wait|group_interval): \S+", r"\1: 1s", text)
    return re.sub(r"\ninhibit_rules:.*?\nreceivers:", "\nreceivers:", text, flags=re.S)


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    """Upstream, workload process, Prometheus, Alertmanager and webhook, all on loopback."""
    if not have_binaries():
        pytest.fail("prometheus and prometheus-alertmanager are missing: run `make debs`")
    hook = WebhookReceiver()
    with FaultServer() as upstream:
        workload = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "e2e" / "workload.py"), upstream.url(QUOTE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert workload.stdout is not None
        port = json.loads(workload.stdout.readline())["metrics_port"]
        rules = render_rules(for_scale=SCALE, window_scale=SCALE)
        am: ManagedProcess | None = None
        prom: ManagedProcess | None = None
        try:
            am = start_alertmanager(_alertmanager_config(hook.url))
            prom = start_prometheus(
                targets=[f"127.0.0.1:{port}"], rules=rules, alertmanager=f"127.0.0.1:{am.port}"
            )
            yield {"upstream": upstream, "hook": hook, "prometheus": prom}
        finally:
            for process in (prom, am):
                if process is not None:
                    process.stop()
            assert workload.stdin is not None
            workload.stdin.close()
            workload.wait(timeout=10)
            hook.stop()


def _is(name: str, status: str) -> Any:
    return lambda alert: alert["labels"]["alertname"] == name and alert["status"] == status


def test_an_outage_pages_through_alertmanager_and_recovery_resolves(stack: dict[str, Any]) -> None:
    """An outage fires error-rate, retries-exhausted and breaker alerts; recovery resolves them."""
    upstream: FaultServer = stack["upstream"]
    hook: WebhookReceiver = stack["hook"]
    time.sleep(3)  # a healthy baseline first
    upstream.script(QUOTE, PARTIAL)
    error_rate = hook.wait_for(_is("ResilienceErrorRateHigh", "firing"), 60)
    exhausted = hook.wait_for(_is("ResilienceRetriesExhausted", "firing"), 60)
    upstream.clear()
    upstream.set_default("503")
    breaker = hook.wait_for(_is("ResilienceCircuitBreakerOpen", "firing"), 60)
    for alert, severity in ((error_rate, "warning"), (exhausted, "warning"), (breaker, "critical")):
        assert alert["labels"]["service"] == "quotes"
        assert alert["labels"]["job"] == "resilience"
        assert alert["labels"]["severity"] == severity
        annotations = alert["annotations"]
        assert "quotes" in annotations["summary"]
        assert "quotes" in annotations["description"]
        name = alert["labels"]["alertname"]
        assert annotations["runbook_url"].endswith("#" + name.lower())
    upstream.set_default("200")
    for name in (
        "ResilienceCircuitBreakerOpen",
        "ResilienceErrorRateHigh",
        "ResilienceRetriesExhausted",
    ):
        hook.wait_for(_is(name, "resolved"), 90)
    receivers = {n["receiver"] for n in hook.notifications}
    assert {"pager", "chat"} <= receivers  # routed by severity


def _panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for uid, dashboard in build_dashboards().items():
        for panel in dashboard["panels"]:
            for item in [panel, *panel.get("panels", [])]:
                for target in item.get("targets", []):
                    if target.get("expr"):
                        found.append((uid, item.get("title", "?"), target["expr"]))
    return found


def _grafana_to_promql(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "30s").replace("${__rate_interval}", "30s")
    expr = re.sub(r"\$\{?(job|instance)\}?", ".*", expr)
    return re.sub(r"\$\{?service\}?", "quotes", expr)


def test_every_dashboard_query_returns_data(stack: dict[str, Any]) -> None:
    """Every panel query runs against the real Prometheus without error and returns series."""
    prom: ManagedProcess = stack["prometheus"]
    empty, failed = [], []
    for uid, title, expr in _panel_queries():
        reply = httpx.get(prom.url + "/api/v1/query", params={"query": _grafana_to_promql(expr)})
        body = reply.json()
        if reply.status_code != 200 or body.get("status") != "success":
            failed.append((uid, title, body.get("error")))
        elif not body["data"]["result"]:
            empty.append((uid, title, expr))
    assert failed == []
    assert empty == []
