"""The standalone health server: one thread running an asyncio loop, whatever the load.

Each connection has ``read_timeout`` seconds to deliver a request head (and as long between
requests on a kept-alive connection), then it is closed: an idle or half-sent request costs a
socket and a small buffer, never a thread. At most ``max_connections`` are open at once; a
connection arriving when all are taken evicts the one that has waited longest for its request
head, so clients that connect and send nothing cannot lock probes out (they are answered in
milliseconds, never queued behind them). A client that disconnects mid-request is dropped
quietly. Only ``GET`` and ``HEAD`` are served; request bodies are not read. Routes run on the
server's thread: they read the monitor under its lock and never do I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .._core.validate import check_float, check_int, check_type

__all__ = ["HealthServer", "start_health_server"]

_log = logging.getLogger("resilience_otel.health")

MAX_HEAD = 16 * 1024
"""The longest request head (request line and headers) accepted, bytes."""

Router = Callable[[str], tuple[int, str, bytes]]


class _Connections:
    """Open connections in arrival order, and whether each is waiting for a request head."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self.open: set[asyncio.StreamWriter] = set()

    def admit(self, writer: asyncio.StreamWriter) -> None:
        if len(self.open) >= self.limit and self.waiting:
            oldest = next(iter(self.waiting))
            self.drop(oldest)
            oldest.close()
        self.open.add(writer)
        self.waiting[writer] = None

    def drop(self, writer: asyncio.StreamWriter) -> None:
        self.open.discard(writer)
        self.waiting.pop(writer, None)


def _parse(head: bytes) -> tuple[str, str, bool] | None:
    """``(method, target, keep_alive)`` of a request head, ``None`` when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    keep_alive = headers.get("connection", "keep-alive" if version == "HTTP/1.1" else "close")
    return method, target, keep_alive == "keep-alive" and not has_body


def _response(status: int, ctype: str, body: bytes, *, keep_alive: bool, head: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


class HealthServer:
    """A running standalone health server; :meth:`shutdown` stops it."""

    def __init__(self, router: Router, read_timeout: float, max_connections: int) -> None:
        self._router = router
        self._read_timeout = read_timeout
        self._connections = _Connections(max_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.port: int = 0
        """The port actually bound."""

    def _start(self, addr: str, port: int) -> None:
        # Bound here, so a bad address or a port in use raises in the caller's thread.
        family = socket.getaddrinfo(addr or None, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server((addr, port), family=family, backlog=128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        started = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(listener, started)),
            name="health-server",
            daemon=True,
        )
        self._thread.start()
        started.wait()

    async def _main(self, listener: socket.socket, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        accepting = asyncio.create_task(self._accept(listener))
        started.set()
        await self._stop.wait()
        self._closing = True
        accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await accepting
        listener.close()
        for writer in list(self._connections.open):
            writer.close()  # their handlers read EOF and end on their own (not cancelled)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)

    async def _accept(self, listener: socket.socket) -> None:
        # Our own accept loop (not asyncio.start_server): every accepted socket is ours at
        # once, so none is left open by a shutdown racing an accept.
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _ = await loop.sock_accept(listener)
            except OSError:  # e.g. out of file descriptors: back off, keep serving
                await asyncio.sleep(0.1)
                continue
            handler = loop.create_task(self._serve(connection))
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _serve(self, connection: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=connection, limit=MAX_HEAD)
        except OSError:
            connection.close()
            return
        connections = self._connections
        if self._closing:
            writer.close()
            return
        connections.admit(writer)
        try:
            while await self._answer_one(reader, writer):
                connections.waiting[writer] = None  # kept alive: waiting again, newest
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away, stalled, or sent something too long: just close
        except Exception:  # a bug in routing: one connection fails, the server stays up
            _log.exception("health server: error while answering a request")
        finally:
            connections.drop(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; whether the connection stays open."""
        async with asyncio.timeout(self._read_timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        self._connections.waiting.pop(writer, None)
        request = _parse(head)
        if request is None:
            writer.write(_response(400, "text/plain", b"bad request", keep_alive=False, head=False))
            return False
        method, target, keep_alive = request
        if method in ("GET", "HEAD"):
            status, ctype, body = self._router(target)
        else:
            status, ctype, body, keep_alive = 405, "text/plain", b"method not allowed", False
        writer.write(_response(status, ctype, body, keep_alive=keep_alive, head=method == "HEAD"))
        async with asyncio.timeout(self._read_timeout):  # a client that does not read
            await writer.drain()
        return keep_alive

    def shutdown(self) -> None:
        """Stop serving, close every connection and the socket."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # already stopped
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def start_health_server(
    router: Router, *, port: object, addr: object, read_timeout: object, max_connections: object
) -> HealthServer:
    """Validate the arguments of ``serve_health`` and start its server."""
    number = check_int("serve_health(port=...)", port, 0, 65_535)
    check_type("serve_health(addr=...)", addr, str)
    timeout = check_float("serve_health(read_timeout=...)", read_timeout, 0.0, 300.0, low_open=True)
    limit = check_int("serve_health(max_connections=...)", max_connections, 1, 100_000)
    server = HealthServer(router, timeout, limit)
    server._start(str(addr), number)
    return server
