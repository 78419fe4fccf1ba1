"""A TCP fault proxy on loopback: put it between a client and Redis or PostgreSQL.

    with FaultProxy(("127.0.0.1", 6379)) as proxy:
        client = redis.Redis(port=proxy.port)
        proxy.set_mode(LATENCY, latency=0.05)   # every chunk forwarded late
        proxy.set_mode(RESET)                   # new and live connections get a TCP RST
        proxy.set_mode(BLACKHOLE)               # accepted, nothing forwarded either way
        proxy.set_mode(PASS)

Threads only; each direction of each connection is pumped by its own thread.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType

__all__ = ["BLACKHOLE", "LATENCY", "PASS", "RESET", "FaultProxy"]

PASS, LATENCY, RESET, BLACKHOLE = "pass", "latency", "reset", "blackhole"
_POLL = 0.05


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` with a switchable fault mode."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = PASS
        self.latency = 0.0
        self.connections = 0
        self.refused = 0  # connections reset at accept (RESET mode)
        """Client connections accepted so far."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_mode(self, mode: str, *, latency: float = 0.0) -> None:
        """Switch mode; ``RESET`` also resets every live connection at once."""
        if mode not in (PASS, LATENCY, RESET, BLACKHOLE):
            raise ValueError(f"mode must be pass, latency, reset or blackhole, got {mode!r}")
        self.mode, self.latency = mode, latency
        if mode == RESET:
            self.reset_all()

    def reset_all(self) -> None:
        """Send a TCP RST on every live client connection and close its upstream side."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _rst(client)
            _rst(upstream)

    def stop(self) -> None:
        """Stop accepting and drop every connection."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset_all()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=2)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            ready, _, _ = select.select([self._listener], [], [], _POLL)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.mode == RESET:
                _rst(client)
                self.refused += 1
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _rst(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                ready, _, _ = select.select([src], [], [], _POLL)
                if not ready:
                    continue
                if self.mode == BLACKHOLE:
                    time.sleep(_POLL)  # hold the bytes: neither side hears anything
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if self.mode == LATENCY and self.latency > 0:
                    time.sleep(self.latency)
                dst.sendall(data)
            except (OSError, ValueError):
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
