"""Run a local Prometheus and Alertmanager (Debian's ``prometheus`` and
``prometheus-alertmanager`` binaries) on loopback, for the demo and the end-to-end tests.

Everything binds 127.0.0.1 on free ports, lives in a temporary directory and is stopped by
``stop()`` (or the context manager).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ManagedProcess",
    "WebhookReceiver",
    "free_port",
    "have_binaries",
    "start_alertmanager",
    "start_prometheus",
]

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def have_binaries() -> bool:
    """Whether both Prometheus and Alertmanager are installed."""
    return shutil.which(PROMETHEUS) is not None and shutil.which(ALERTMANAGER) is not None


class ManagedProcess:
    """A server process with its port and working directory; ``stop()`` ends it."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, workdir: Path, log: Path
    ) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir
        self.log = log
        self.name = Path(
            str(process.args[0] if isinstance(process.args, list) else process.args)
        ).name

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate (then kill) the process and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for ``/-/ready``; raise with the log's tail if the process died or hung."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/-/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready:\n{tail}")


def _spawn(argv: list[str], workdir: Path, port: int) -> ManagedProcess:
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)  # noqa: S603
    managed = ManagedProcess(process, port, workdir, log)
    managed.wait_ready()
    return managed


def start_prometheus(
    *,
    targets: Sequence[str],
    rules: str | None = None,
    alertmanager: str | None = None,
    interval: str = "1s",
    job: str = "resilience",
) -> ManagedProcess:
    """Start Prometheus scraping ``targets`` (``host:port``) every ``interval``, evaluating
    ``rules`` (rule-file YAML text) and sending alerts to ``alertmanager`` (``host:port``)."""
    workdir = Path(tempfile.mkdtemp(prefix="resilience-prometheus-"))
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    if rules is not None:
        (workdir / "rules.yml").write_text(rules)
        config["rule_files"] = [str(workdir / "rules.yml")]
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML
    port = free_port()
    argv = [
        PROMETHEUS,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        # The first notifications go out before Alertmanager is discovered and are dropped;
        # resend at the evaluation pace instead of once a minute.
        f"--rules.alert.resend-delay={interval}",
    ]
    return _spawn(argv, workdir, port)


def start_alertmanager(config: str) -> ManagedProcess:
    """Start Alertmanager with ``config`` (YAML text), clustering off."""
    workdir = Path(tempfile.mkdtemp(prefix="resilience-alertmanager-"))
    (workdir / "alertmanager.yml").write_text(config)
    port = free_port()
    argv = [
        ALERTMANAGER,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return _spawn(argv, workdir, port)


class WebhookReceiver:
    """Records the notifications Alertmanager posts to ``url``."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                with receiver._cond:
                    receiver.notifications.append(json.loads(body or b"{}"))
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where Alertmanager should post."""
        return f"http://127.0.0.1:{self.port}/"

    def alerts(self) -> Iterator[dict[str, Any]]:
        """Every alert of every notification received so far."""
        with self._cond:
            notifications = list(self.notifications)
        for notification in notifications:
            yield from notification.get("alerts", [])

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        """Wait until an alert satisfying ``predicate`` arrives; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for notification in self.notifications:
                    found: list[dict[str, Any]] = [
                        a for a in notification.get("alerts", []) if predicate(a)
                    ]
                    if found:
                        return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching alert within {timeout}s")
                self._cond.wait(remaining)

    def stop(self) -> None:
        """Stop the receiver."""
        self._server.shutdown()
        self._server.server_close()
