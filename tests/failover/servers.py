"""Test-owned replicated Redis: a primary/replica pair, a controlled switchover, Sentinels.

    with RedisPair() as pair:                       # two redis-server processes, replicating
        with FaultProxy(pair.primary_address) as proxy:     # the "DNS name" clients use
            pair.switchover(proxy)                  # replica promoted, proxy re-pointed

Everything binds to 127.0.0.1 on free ports and lives in temporary directories; leaving the
context stops every process even when the test failed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from tests.integration.redis_server import REDIS_SERVER, RedisServer, free_port
from tests.support.faultproxy import FaultProxy

from .workload import Switch

__all__ = ["HOST", "MASTER_NAME", "RedisPair", "SentinelServer", "Sentinels", "wait_until"]

HOST = "127.0.0.1"
MASTER_NAME = "mymaster"


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.02)


def admin(port: int) -> redis.Redis:
    """A plain client straight to a node (no proxy, no resilience) for set-up and checks."""
    return redis.Redis(host=HOST, port=port, socket_timeout=5, decode_responses=True)


def role(port: int) -> str:
    """``master`` or ``slave``, as the node at ``port`` reports itself."""
    with admin(port) as client:
        return str(client.info("replication")["role"])


class RedisPair:
    """A primary and a replica (``REPLICAOF``); :meth:`switchover` swaps their roles."""

    def __init__(self) -> None:
        self.primary = RedisServer()
        self.replica = RedisServer()

    @property
    def primary_address(self) -> tuple[str, int]:
        """Where the primary listens."""
        return HOST, self.primary.port

    def __enter__(self) -> RedisPair:
        try:
            self.primary.start()
            self.replica.start()
            for node in (self.primary, self.replica):
                with admin(node.port) as client:
                    # a full sync waits 5 s by default for more replicas to share it
                    client.config_set("repl-diskless-sync-delay", 0)
            with admin(self.replica.port) as replica:
                replica.execute_command("REPLICAOF", HOST, self.primary.port)
            wait_until(self._linked, 10.0, "replica linked to the primary")
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

    def close(self) -> None:
        """Stop both servers and remove their directories."""
        try:
            self.primary.close()
        finally:
            self.replica.close()

    def _linked(self) -> bool:
        with admin(self.replica.port) as replica:
            return bool(replica.info("replication").get("master_link_status") == "up")

    def switchover(self, proxy: FaultProxy) -> Switch:
        """Promote the replica without losing an acknowledged write; return when done.

        Writes are paused on the primary (``CLIENT PAUSE WRITE``: they wait, unexecuted) until
        the replica has every byte of the replication stream; then the replica is promoted,
        the old primary made its replica, the proxy re-pointed (new connections only, as a
        DNS change would: connections already open stay on the old node) and writes resumed,
        so the paused ones run on the old node, now a replica, and are refused with READONLY.

        Returns:
            when writes were paused and when they resumed (``time.monotonic()``).
        """
        old, new = self.primary, self.replica
        with admin(old.port) as old_client, admin(new.port) as new_client:
            began = time.monotonic()
            old_client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
            try:
                target = int(old_client.info("replication")["master_repl_offset"])
                wait_until(lambda: _replica_offset(new_client) >= target, 5.0, "replica caught up")
                new_client.execute_command("REPLICAOF", "NO", "ONE")
                old_client.execute_command("REPLICAOF", HOST, new.port)
                proxy.upstream = (HOST, new.port)
            finally:
                old_client.execute_command("CLIENT", "UNPAUSE")
        self.primary, self.replica = new, old
        return Switch(began, time.monotonic())


def _replica_offset(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("replication")
    return int(info.get("slave_repl_offset", info.get("master_repl_offset", 0)))


class SentinelServer:
    """One ``redis-server --sentinel`` process monitoring ``mymaster``, with its own config."""

    def __init__(self, master_port: int, quorum: int) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="resilience-sentinel-"))
        self._config = self._dir / "sentinel.conf"
        # Sentinel rewrites its config file, so each process gets its own writable one.
        self._config.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    f"port {self.port}",
                    f"dir {self._dir}",
                    f"logfile {self._dir / 'sentinel.log'}",
                    f"sentinel monitor {MASTER_NAME} {HOST} {master_port} {quorum}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} 2000",
                    f"sentinel failover-timeout {MASTER_NAME} 10000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    "",
                ]
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until it answers PING."""
        self._process = subprocess.Popen(
            [REDIS_SERVER, str(self._config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10.0, f"sentinel on port {self.port} answers")

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"sentinel on port {self.port} exited:{self.log_tail()}")
        with contextlib.suppress(redis.RedisError), admin(self.port) as client:
            return bool(client.ping())
        return False

    def close(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self) -> str:
        """The end of the sentinel's log, for failure messages."""
        with contextlib.suppress(OSError):
            lines = (self._dir / "sentinel.log").read_text(errors="replace").splitlines()
            return "\n" + "\n".join(lines[-15:])
        return ""


class Sentinels:
    """``count`` Sentinels watching a :class:`RedisPair`, ready to fail over."""

    def __init__(self, pair: RedisPair, count: int = 3) -> None:
        self.pair = pair
        self.nodes = [SentinelServer(pair.primary.port, quorum=2) for _ in range(count)]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the Sentinels listen (what ``redis.sentinel.Sentinel`` is given)."""
        return [(HOST, node.port) for node in self.nodes]

    def __enter__(self) -> Sentinels:
        try:
            for node in self.nodes:
                node.start()
            wait_until(self._ready, 20.0, "every sentinel sees a healthy replica")
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

    def close(self) -> None:
        """Stop every Sentinel."""
        for node in self.nodes:
            node.close()

    def _ready(self) -> bool:
        for node in self.nodes:
            with admin(node.port) as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
                if not any(_healthy(replica) for replica in replicas):
                    return False
        return True

    def master_port(self, node: int = 0) -> int:
        """The master port Sentinel ``node`` currently names."""
        with admin(self.nodes[node].port) as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            return int(port)

    def failover(self, timeout: float = 15.0) -> Switch:
        """``SENTINEL FAILOVER`` without losing an acknowledged write; return when done.

        Sentinel's replication is asynchronous: an old primary keeps taking writes until it is
        told it is a replica (Sentinel waits about 8 s before reconfiguring a node that still
        claims to be master), and those writes are lost in its resync. That is Redis's own
        window, not the client's, so writes are paused on the old primary (as in
        :meth:`RedisPair.switchover`) until the new one is promoted and the old one demoted.

        Returns:
            when writes were paused and when they resumed (``time.monotonic()``).
        """
        old, new = self.pair.primary, self.pair.replica
        with admin(old.port) as old_client, admin(new.port) as new_client:
            began = time.monotonic()
            old_client.execute_command("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
            try:
                target = int(old_client.info("replication")["master_repl_offset"])
                wait_until(lambda: _replica_offset(new_client) >= target, 5.0, "replica caught up")
                with admin(self.nodes[0].port) as sentinel:
                    sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                wait_until(
                    lambda: all(self.master_port(i) == new.port for i in range(len(self.nodes))),
                    timeout,
                    "every sentinel names the new master",
                )
                wait_until(lambda: role(new.port) == "master", timeout, "replica promoted")
                # Demote at once rather than after Sentinel's 8 s grace: it is what Sentinel
                # would send (REPLICAOF the new master), only sooner.
                old_client.execute_command("REPLICAOF", HOST, new.port)
            finally:
                old_client.execute_command("CLIENT", "UNPAUSE")
        self.pair.primary, self.pair.replica = new, old
        return Switch(began, time.monotonic())


def _healthy(replica: dict[str, Any]) -> bool:
    # redis-py parses each replica into a dict; flags come as a string or a set of flags
    flags = str(replica.get("flags", ""))
    return "down" not in flags and replica.get("master-link-status") == "ok"
