"""A Redis primary and replica the full demo owns, for its failover phase.

Both run from the machine's ``redis-server`` on free loopback ports, keep nothing on disk and
are killed at the end. :meth:`RedisPair.switchover` is a planned failover as an operator (or
Sentinel) does it: pause writes on the primary, let the replica catch up, promote it, demote
the old primary to its replica, point new connections at the new primary, resume writes.
Connections already open stay on the old node, as they would behind a DNS name: their next
write is refused with ``READONLY``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from .tcpproxy import FaultProxy

__all__ = ["RedisPair", "redis_server_binary"]

_START_TIMEOUT = 5.0
_CATCH_UP_TIMEOUT = 1.0
_PAUSE_MS = 2000  # the most a switchover holds writes; it takes milliseconds


def redis_server_binary() -> str | None:
    """Where ``redis-server`` is, if installed."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisPair:
    """A primary and its replica on loopback; :attr:`primary` is whichever leads now."""

    def __init__(self, binary: str) -> None:
        import redis

        self._dir = tempfile.TemporaryDirectory(prefix="resilience-demo-redis-")
        self._processes: list[subprocess.Popen[bytes]] = []
        self.ports = [_free_port(), _free_port()]
        try:
            for index, port in enumerate(self.ports):
                extra = [] if index == 0 else ["--replicaof", "127.0.0.1", str(self.ports[0])]
                self._processes.append(self._start(binary, port, extra))
            self._clients = [
                redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
                for port in self.ports
            ]
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.leader = 0

    def _start(self, binary: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 (our own arguments)
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--dbfilename", f"{port}.rdb",
             # a replica syncs at once instead of after Redis' default 5s diskless delay
             "--repl-diskless-sync-delay", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                linked = self._clients[1].info("replication").get("master_link_status") == "up"
                if self._clients[0].ping() and linked:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the demo's Redis primary and replica did not start in 5s")
            time.sleep(0.05)

    @property
    def primary(self) -> tuple[str, int]:
        """The address of the node that takes writes now."""
        return "127.0.0.1", self.ports[self.leader]

    @property
    def primary_client(self) -> redis.Redis:
        """A direct client of the current primary."""
        return self._clients[self.leader]

    def switchover(self, proxy: FaultProxy) -> float:
        """Hand the primary role to the replica; returns the seconds writes were paused."""
        old, new = self._clients[self.leader], self._clients[1 - self.leader]
        paused = time.monotonic()
        old.client_pause(_PAUSE_MS, all=False)  # writes only: reads go on
        try:
            self._catch_up(old, new)
            new.replicaof("NO", "ONE")
            old.replicaof("127.0.0.1", self.ports[1 - self.leader])
            proxy.upstream = ("127.0.0.1", self.ports[1 - self.leader])
            self.leader = 1 - self.leader
        finally:
            old.client_unpause()
        return time.monotonic() - paused

    @staticmethod
    def _catch_up(old: redis.Redis, new: redis.Redis) -> None:
        """Wait until the replica has every write the primary acknowledged."""
        target = int(old.info("replication")["master_repl_offset"])
        deadline = time.monotonic() + _CATCH_UP_TIMEOUT
        while int(new.info("replication").get("slave_repl_offset", 0)) < target:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not catch up within 1s: no switchover")
            time.sleep(0.005)

    def stop(self) -> None:
        """Kill both servers and remove their directory."""
        for client in getattr(self, "_clients", []):
            with contextlib.suppress(Exception):
                client.close()
        for process in self._processes:
            process.kill()
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._dir.cleanup()
