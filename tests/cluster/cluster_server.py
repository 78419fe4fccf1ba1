"""A test-owned Redis Cluster: six ``redis-server`` processes (three primaries, three replicas)
on free loopback ports, joined by ``redis-cli --cluster create``.

    with RedisClusterServers() as cluster:
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        cluster.failover(replica_port)   # CLUSTER FAILOVER on a replica, waited for

Persistence is off and every node works in its own temporary directory; every process is
reaped, even when a test fails.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.integration.redis_server import REDIS_SERVER

__all__ = ["RedisClusterServers"]

REDIS_CLI = "/usr/bin/redis-cli"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too; both below Linux's
    ephemeral range (32768 up), so no client socket of another test can take them meanwhile."""
    for _ in range(1000):
        port = random.randint(20_000, 22_700)
        if (
            port not in taken
            and port + 10_000 not in taken
            and _free(port)
            and _free(port + 10_000)
        ):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """Six cluster-enabled ``redis-server`` processes joined into one cluster."""

    def __init__(self, *, nodes: int = 6, replicas: int = 1, timeout: float = 30.0) -> None:
        taken: set[int] = set()
        self.ports: list[int] = []
        for _ in range(nodes):
            port = cluster_port(taken)
            taken |= {port, port + 10_000}
            self.ports.append(port)
        self.replicas = replicas
        self.timeout = timeout
        self._dir = Path(tempfile.mkdtemp(prefix="resilience-cluster-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the nodes, create the cluster and wait until every node reports it ok."""
        for port in self.ports:
            work = self._dir / str(port)
            work.mkdir()
            command = [
                REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(work),
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
                "--daemonize", "no", "--logfile", str(work / "redis.log"),
            ]  # fmt: skip
            self._processes.append(
                subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            )
        for port in self.ports:
            self._wait(lambda port=port: self.cli(port, "PING") == "PONG", f"node {port} up")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            check=True, capture_output=True, timeout=self.timeout,
        )  # fmt: skip
        self.wait_ok()

    def close(self) -> None:
        """Stop every node and remove the working directories."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        self._processes.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
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

    # -- inspection and control ---------------------------------------------------------------
    def cli(self, port: int, *args: str) -> str:
        """``redis-cli -p port args...``'s output, stripped ("" when the node is unreachable)."""
        result = subprocess.run(
            [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return result.stdout.strip()

    def role(self, port: int) -> str:
        """``master`` or ``slave``."""
        return self.cli(port, "ROLE").splitlines()[0] if self.cli(port, "PING") else ""

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now."""
        return [port for port in self.ports if self.role(port) == "master"]

    def replicas_of(self, primary: int) -> list[int]:
        """Ports of the replicas of ``primary``."""
        node_id = self.cli(primary, "CLUSTER", "MYID")
        found = []
        for port in self.ports:
            info = self.cli(port, "CLUSTER", "NODES")
            for line in info.splitlines():
                fields = line.split()
                if "myself" in fields[2] and "slave" in fields[2] and fields[3] == node_id:
                    found.append(port)
        return found

    def primary_of_slot(self, slot: int) -> int:
        """The port of the primary serving ``slot`` (as node ``ports[0]`` sees it)."""
        for line in self.cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise LookupError(f"no primary serves slot {slot}")

    def kill(self, port: int) -> None:
        """Kill node ``port`` (SIGKILL, as a crash would) and wait until it is gone."""
        process = self._processes[self.ports.index(port)]
        if process.poll() is None:
            process.kill()
        process.wait()

    def failover(self, replica: int) -> None:
        """``CLUSTER FAILOVER`` on ``replica``; wait until it is a primary every node agrees on."""
        assert self.cli(replica, "CLUSTER", "FAILOVER") == "OK"
        self._wait(lambda: self.role(replica) == "master", f"{replica} promoted")
        self.wait_ok()

    def wait_ok(self) -> None:
        """Wait until every node reports ``cluster_state:ok``."""

        def ok() -> bool:
            return all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.ports)

        self._wait(ok, "cluster_state:ok")

    def _wait(self, condition: object, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError, OSError, IndexError):
                if callable(condition) and condition():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")


def move_slot(cluster: RedisClusterServers, slot: int, target: int) -> None:
    """Move ``slot`` (and its keys) from its primary to primary ``target``, the way
    ``redis-cli --cluster reshard`` does: IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE."""
    source = cluster.primary_of_slot(slot)
    source_id = cluster.cli(source, "CLUSTER", "MYID")
    target_id = cluster.cli(target, "CLUSTER", "MYID")
    cluster.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    cluster.cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    while keys := cluster.cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
        cluster.cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
    for port in cluster.primaries():
        cluster.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    cluster.wait_ok()
