"""A minimal HTTP/1.1 keep-alive server answering every request with a fixed small 200.

It runs in its own process so that serving does not compete with the measured client for the
GIL; it must be much cheaper per request than any client, so the client is what limits the
numbers. Only body-less requests (the bench sends GETs) are understood.

    python -m bench.server        # prints the port it listens on, then serves until killed
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["ServerProcess"]

HOST = "127.0.0.1"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_END_OF_HEAD = b"\r\n\r\n"
_MAX_BUFFER = 64 * 1024


class _FixedResponse(asyncio.BufferedProtocol):
    """Answers each complete request head with :data:`RESPONSE`, pipelining included.

    A buffered protocol reads into one preallocated buffer: asyncio's plain ``Protocol``
    allocates (and on many kernels maps and unmaps) a 256 KiB bytes object per read, which
    made the server, not the client, the slow side of every exchange.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray(_MAX_BUFFER)
        self._view = memoryview(self._buffer)
        self._used = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._used :]

    def buffer_updated(self, nbytes: int) -> None:
        assert self._transport is not None
        self._used += nbytes
        data = self._buffer[: self._used]
        complete = data.count(_END_OF_HEAD)
        if complete:
            # GETs carry no body, so every head terminator ends one whole request.
            self._transport.write(RESPONSE * complete)
            rest = data[data.rfind(_END_OF_HEAD) + len(_END_OF_HEAD) :]
            self._buffer[: len(rest)] = rest
            self._used = len(rest)
        elif self._used == _MAX_BUFFER:
            self._transport.close()  # a head this large is not something the bench sends
            self._used = 0


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_FixedResponse, HOST, 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print(port, flush=True)
    async with server:
        await stop


class ServerProcess:
    """Starts the server in a child process on a free loopback port; stops it on exit."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/ping"

    def __enter__(self) -> ServerProcess:
        root = Path(__file__).resolve().parent.parent
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.server"], cwd=root, stdout=subprocess.PIPE
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__(None, None, None)
            raise RuntimeError(f"bench server did not start (said {line!r})")
        self.port = int(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())
