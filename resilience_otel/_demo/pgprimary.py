"""A PostgreSQL server the full demo owns: the orders database's primary until the failover.

It is a throw-away cluster (``initdb`` in a temporary directory, trust authentication, no
fsync) on a free loopback port, run as user ``postgres`` when the demo runs as root
(PostgreSQL refuses root). In the failover phase it is demoted the way a switched-over primary
behaves for its clients: every new transaction becomes read-only, so each write is refused
with SQLSTATE 25006, while the fault proxy sends new connections to the new primary (the
PostgreSQL the demo found).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PostgresPrimary", "postgres_binaries"]

_START_TIMEOUT = 30.0


def postgres_binaries() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL installed, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> tuple[int, ...]:
    name = Path(path).parent.parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresPrimary:
    """A PostgreSQL cluster on 127.0.0.1:``port``; :meth:`stop` removes every trace."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self._root = Path(tempfile.mkdtemp(prefix="resilience-demo-pg-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL will not run as root: use its own account
            import pwd

            account = pwd.getpwnam("postgres")
            os.chown(self._root, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """``initdb`` and start; raises with the server's words when either fails."""
        data = str(self._root / "data")
        init = self._run(
            [str(self.bindir / "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
             "--no-sync", "--encoding=UTF8"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        output, _ = init.communicate(timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {output.decode(errors='replace')[-300:]}")
        with (self._root / "postgres.log").open("ab") as log:
            self._process = self._run(
                [str(self.bindir / "postgres"), "-D", data, "-p", str(self.port),
                 "-k", str(self._root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def _run(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self._root)}
        return subprocess.Popen(argv, cwd=self._root, env=env, **self._as, **kwargs)  # noqa: S603

    def dsn(self, database: str = "postgres") -> str:
        """A connection string for user ``postgres`` (trust) and ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def ready(self, database: str) -> None:
        """Wait until the server accepts connections, then create ``database``."""
        import asyncpg

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError("the demo's PostgreSQL exited at start")
            try:
                connection = await asyncpg.connect(self.dsn(), timeout=1.0)
                break
            except (OSError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the demo's PostgreSQL was not ready in 30s") from None
                await _pause()
        try:
            if database != "postgres":
                await connection.execute(f'CREATE DATABASE "{database}"')
        finally:
            await connection.close()

    async def demote(self) -> None:
        """Make every new transaction read-only: writes now fail with 25006."""
        import asyncpg

        connection = await asyncpg.connect(self.dsn(), timeout=2.0)
        try:
            await connection.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await connection.execute("SELECT pg_reload_conf()")
        finally:
            await connection.close()

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and delete its directory."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        shutil.rmtree(self._root, ignore_errors=True)


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)
