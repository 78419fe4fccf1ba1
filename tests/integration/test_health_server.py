"""The standalone health server under hostile clients, over real loopback sockets: idle and
half-sent requests cost no thread and are cut at the read timeout, connections are bounded,
and clients that vanish mid-request leave no traceback."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.metrics import NoOpMeterProvider

from resilience_otel import ConfigError, HealthMonitor
from resilience_otel.health import HealthServer, serve_health

pytestmark = pytest.mark.integration

HALF_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: never complete


@pytest.fixture
def monitor() -> HealthMonitor:
    """A monitor whose gauges go nowhere."""
    return HealthMonitor(meter_provider=NoOpMeterProvider())


@pytest.fixture
def server(monitor: HealthMonitor) -> Iterator[HealthServer]:
    """serve_health on a free loopback port with a 1 s read timeout."""
    running = serve_health(monitor, read_timeout=1.0)
    yield running
    running.shutdown()


def half_sent(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each sent half a request head and then stay idle."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        sock.sendall(HALF_REQUEST)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset, as a crashing client or a dropped link does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def get_health(port: int) -> tuple[int, float]:
    """Status of a fresh ``GET /health`` and the seconds it took."""
    started = time.monotonic()
    response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5.0)
    return response.status_code, time.monotonic() - started


def test_idle_half_sent_requests_cost_no_threads_and_probes_still_answer(
    server: HealthServer,
) -> None:
    """300 idle half-sent requests: the thread count stays flat, /health answers within 1 s,
    and after the read timeout every idle socket has been closed by the server."""
    before = threading.active_count()
    sockets = half_sent(server.port, 300)
    try:
        time.sleep(0.2)  # let the server accept them all
        assert threading.active_count() <= before + 1
        status, seconds = get_health(server.port)
        assert status == 200
        assert seconds < 1.0
        assert threading.active_count() <= before + 1
        time.sleep(1.0)  # the read timeout
        assert all(closed_by_server(sock, within=1.0) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_a_full_server_evicts_the_longest_waiting_connection(monitor: HealthMonitor) -> None:
    """With every slot held by idle clients, a probe is answered at once and the oldest idle
    connection is closed (not the probe refused, nor queued behind the idle ones)."""
    running = serve_health(monitor, read_timeout=30.0, max_connections=10)
    sockets = half_sent(running.port, 10)
    try:
        time.sleep(0.1)
        status, seconds = get_health(running.port)
        assert (status, seconds < 1.0) == (200, True)
        assert closed_by_server(sockets[0], within=1.0)
        assert not closed_by_server(sockets[-1], within=0.1)
    finally:
        for sock in sockets:
            sock.close()
        running.shutdown()


def test_clients_that_vanish_mid_request_leave_no_traceback(
    server: HealthServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Resets during a half-sent head, right after a full request, and a half-closed client
    print nothing to stderr and log no error; the server keeps answering."""
    caplog.set_level(logging.DEBUG, logger="resilience_otel")
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(HALF_REQUEST)
        time.sleep(0.05)  # the server is waiting for the rest of the head
        reset(sock)
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(HALF_REQUEST + b"\r\n")
        reset(sock)  # gone before the answer is written
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(HALF_REQUEST)
        sock.shutdown(socket.SHUT_WR)  # EOF in the middle of the head
        time.sleep(0.05)
        sock.close()
    time.sleep(0.2)
    assert get_health(server.port)[0] == 200
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err
    assert "Error" not in captured.err
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_kept_alive_connection_answers_several_requests(server: HealthServer) -> None:
    """One HTTP/1.1 connection serves request after request (Prometheus scrapes keep alive)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        answers = [client.get(path).status_code for path in ("/health", "/livez", "/nope")]
    assert answers == [200, 200, 404]


def test_http_1_0_and_bad_requests_are_answered_and_closed(server: HealthServer) -> None:
    """HTTP/1.0 gets its answer and a close; a malformed request line gets 400 and a close."""
    for request, status in (
        (b"GET /livez HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"NONSENSE\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"POST /health HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", b"HTTP/1.1 405"),
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
            sock.sendall(request)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(status), reply


def test_shutdown_closes_the_port_and_open_connections(monitor: HealthMonitor) -> None:
    """After shutdown() idle connections are closed and nothing listens on the port."""
    running = serve_health(monitor, read_timeout=30.0)
    idle = half_sent(running.port, 3)
    started = time.monotonic()
    running.shutdown()
    assert time.monotonic() - started < 1.0
    assert all(closed_by_server(sock, within=1.0) for sock in idle)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=1.0).close()
    for sock in idle:
        sock.close()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"port": -1}, "port"),
        ({"port": 70_000}, "port"),
        ({"port": "8081"}, "port"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"read_timeout": float("nan")}, "read_timeout"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_serve_health_arguments_are_validated(
    monitor: HealthMonitor, kwargs: dict[str, object], name: str
) -> None:
    """A bad port, timeout or limit raises ConfigError naming it, before anything binds."""
    with pytest.raises(ConfigError, match=rf"serve_health\({name}=...\)"):
        serve_health(monitor, **kwargs)  # type: ignore[arg-type]


def test_a_port_in_use_is_reported_to_the_caller(
    server: HealthServer, monitor: HealthMonitor
) -> None:
    """Binding a taken port raises OSError in the caller, not in a background thread."""
    with pytest.raises(OSError, match="in use"):
        serve_health(monitor, port=server.port)
