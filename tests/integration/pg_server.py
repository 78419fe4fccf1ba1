"""A test-owned PostgreSQL server on loopback that tests may stop and start at will.

    with PostgresServer() as server:          # initdb + start (a few seconds)
        dsn = server.dsn                      # postgresql://postgres@127.0.0.1:PORT/postgres
        server.stop()                         # fast shutdown: connections are refused
        server.start()                        # same port, same data directory

The cluster lives in a temporary directory owned by user ``postgres`` (PostgreSQL refuses to
run as root); the server runs as that user, with trust authentication, listens only on
127.0.0.1 on a free port and keeps its Unix socket in the temporary directory. ``fsync`` is off:
the data is thrown away. Leaving the context (or :meth:`close`) kills the server and removes
the directory, so no process outlives the tests.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "find_postgres_bin"]

_USER = "postgres"


def find_postgres_bin() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL under /usr/lib/postgresql, if any."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A throw-away PostgreSQL cluster run as user ``postgres`` on 127.0.0.1:``port``."""

    def __init__(self, *, start_timeout: float = 30.0) -> None:
        bindir = find_postgres_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bindir = bindir
        self.start_timeout = start_timeout
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.database = "postgres"
        self._process: subprocess.Popen[bytes] | None = None
        self._account = pwd.getpwnam(_USER)
        self._root = Path(tempfile.mkdtemp(prefix="resilience-pg-"))
        os.chown(self._root, self._account.pw_uid, self._account.pw_gid)
        self.data_dir = self._root / "data"
        self.socket_dir = self._root
        self.log_path = self._root / "postgres.log"

    @property
    def dsn(self) -> str:
        """Connection string for user ``postgres`` (trust) and database ``postgres``."""
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> PostgresServer:
        try:
            self.initdb()
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

    def _run_as_postgres(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        # Popen's user=/group= switch to the postgres account in the child (like runuser -u).
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            argv,
            user=self._account.pw_uid,
            group=self._account.pw_gid,
            extra_groups=[],
            cwd=self._root,  # postgres must be able to read its working directory
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self._root)},
            **kwargs,
        )

    def initdb(self) -> None:
        """Create the cluster (trust auth, no fsync)."""
        argv = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", _USER]
        argv += ["--auth=trust", "--no-sync", "--encoding=UTF8"]
        process = self._run_as_postgres(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            raise RuntimeError(f"initdb failed ({process.returncode}):\n{output.decode()}")

    def start(self) -> None:
        """Start the server on :attr:`port` and wait until it accepts connections."""
        if self.running:
            return
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-k", str(self.socket_dir), "-c", f"listen_addresses={self.host}"]
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        argv += ["-c", "full_page_writes=off", "-c", "max_connections=50"]
        with self.log_path.open("ab") as log:
            self._process = self._run_as_postgres(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        isready = [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        isready += ["-U", _USER, "-d", self.database, "-t", "1"]
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"postgres exited early:\n{self.log_tail()}")
            if subprocess.run(isready, check=False).returncode == 0:
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"postgres not ready in {self.start_timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect clients); kill if it lingers."""
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the postmaster and every process of its session (backends included)."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        self._process = None

    def close(self) -> None:
        """Stop (or kill) the server and delete its directory."""
        try:
            self.stop(timeout=5.0)
        finally:
            self.kill()
            shutil.rmtree(self._root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
