"""A test-owned ``redis-server`` on a free loopback port that a test may kill and restart.

    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        server.stop()    # SIGTERM (then SIGKILL), waited for
        server.start()   # again, on the same port

Persistence is off (``--save "" --appendonly no``) and the working directory is temporary, so
nothing survives the test. The process is always reaped, even when the test fails.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["REDIS_SERVER", "RedisServer", "free_port"]

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.2) -> bool:
    """Whether a Redis server on ``port`` answers ``PING`` (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1 on a fixed port chosen at construction.

    Args:
        port: the port to use; a free one by default. :meth:`start` reuses it after a stop.
        startup_timeout: seconds to wait for the server to answer ``PING``.
    """

    def __init__(self, port: int | None = None, *, startup_timeout: float = 10.0) -> None:
        self.host = "127.0.0.1"
        self.port = free_port() if port is None else port
        self.startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="resilience-redis-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        # start/stop/close may come from a timer thread: one at a time, so none leaks a process
        self._lock = threading.RLock()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING.

        Raises:
            RuntimeError: after :meth:`close` (a late restart must not leak a process), or
                when the server exits or does not answer in time.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"redis-server on port {self.port} is closed")
            if not self.running:
                self._spawn()

    def _spawn(self) -> None:
        command = [
            REDIS_SERVER,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self._dir / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.startup_timeout
        while not _ping(self.port):
            if self._process.poll() is not None:
                stderr = self._process.stderr.read() if self._process.stderr else b""
                self._reap()
                raise RuntimeError(
                    f"redis-server exited on port {self.port}: {stderr.decode(errors='replace')}"
                    f"{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout``; wait until it is gone."""
        with self._lock:
            process = self._process
            if process is None:
                return
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._reap()

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would, and wait until it is gone."""
        with self._lock:
            process = self._process
            if process is None:
                return
            if process.poll() is None:
                process.kill()
                process.wait()
            self._reap()

    def close(self) -> None:
        """Stop the server for good and remove its directory."""
        with self._lock:
            self._closed = True
            try:
                self.stop()
            finally:
                shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _reap(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self._dir / "redis.log").read_text(errors="replace").splitlines()
            return "\n" + "\n".join(lines[-10:])
        return ""
