"""A fault-injecting HTTP/1.1 server for integration tests, demos and benchmarks.

Standard library only: raw sockets and one thread per connection, so faults are exact (a
reset is a real RST, a truncated body really stops short). It binds 127.0.0.1 on a free port,
runs in background threads and is scripted per path::

    with FaultServer() as server:
        server.script("/quotes", ["503", "503", "200"])
        server.script("/orders", [status(429, headers={"Retry-After": "1"}), "200"])
        server.set_default(hang())                     # when a path's script is empty
        httpx.get(server.url("/quotes"))               # 503
        assert server.count("/quotes", "GET") == 1

Each request takes the next mode of its path's script (or the default). Modes:

- :class:`Respond` (``"200"``, ``"503"``, :func:`status`, :func:`slow`): a status with
  optional headers and body after an optional delay; the connection stays open (keep-alive).
- :class:`Hang` (``"hang"``): read the request, never answer until the server stops or the
  client hangs up.
- :class:`Reset` (``"reset"``): read the request, then close with ``SO_LINGER`` 0 (TCP RST).
- :class:`Truncate` (``"truncate"``): announce a ``Content-Length`` larger than the bytes
  sent, then close.
- :class:`Stream` (:func:`stream`): a chunked body (server-sent events by default), one chunk
  every ``every`` seconds, endless or ending cleanly, with a reset or in silence.
- :class:`Upgrade`: ``101 Switching Protocols``, then echo whatever the client sends.

:meth:`FaultServer.stop_listening` closes the listening socket (clients get connection
refused) and :meth:`FaultServer.start_listening` listens again on the same port. A request is
counted once it has been read completely, before its mode runs; a refused connection is never
counted.
"""

from __future__ import annotations

import collections
import contextlib
import http
import json
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeAlias

__all__ = [
    "FaultServer",
    "Hang",
    "Mode",
    "ModeLike",
    "RecordedRequest",
    "Reset",
    "Respond",
    "Stream",
    "Truncate",
    "Upgrade",
    "hang",
    "parse_mode",
    "reset",
    "slow",
    "status",
    "stream",
    "truncate",
]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024
_POLL_SECONDS = 0.05


# -- modes -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with ``status`` after ``delay`` seconds (the delay comes before the headers).

    Attributes:
        status: the HTTP status code.
        headers: extra response headers (``Content-Length`` is always set by the server).
        body: the body; ``None`` sends a small JSON document describing the request.
        delay: seconds to wait before sending anything; the wait ends early when the server
            stops.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Hang:
    """Read the request and never answer, until the server stops or the client hangs up."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Read the request, then abort the connection with a TCP RST (``SO_LINGER`` 0)."""


@dataclass(frozen=True, slots=True)
class Truncate:
    """Send headers announcing ``missing`` more body bytes than are sent, then close.

    Attributes:
        status: the HTTP status code of the truncated response.
        missing: how many announced bytes never arrive.
    """

    status: int = 200
    missing: int = 100


@dataclass(frozen=True, slots=True)
class Stream:
    """Send a chunked body: ``chunk`` at once and then every ``every`` seconds.

    Attributes:
        count: how many chunks; ``None`` sends until the server stops or the client leaves.
        end: after the last chunk, ``"finish"`` (the terminating chunk; keep-alive),
            ``"reset"`` (TCP RST) or ``"stall"`` (silence until the server stops or the
            client leaves).
        content_type: the ``Content-Type`` header.
    """

    status: int = 200
    chunk: bytes = b"data: tick\n\n"
    every: float = 0.05
    count: int | None = None
    end: str = "finish"
    content_type: str = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Answer ``101 Switching Protocols`` and echo every byte the client sends after it."""


Mode: TypeAlias = Respond | Hang | Reset | Truncate | Stream | Upgrade
ModeLike: TypeAlias = Mode | str | int
"""A mode or its shorthand: ``503`` / ``"503"``, ``"hang"``, ``"reset"``, ``"truncate"``,
``"slow:0.5"`` (200 after 0.5 s)."""


def status(
    code: int,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | object | None = None,
    delay: float = 0.0,
) -> Respond:
    """A :class:`Respond` mode; a non-bytes ``body`` is sent as JSON (a str as UTF-8 text)."""
    if body is None or isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    return Respond(code, tuple((headers or {}).items()), raw, delay)


def slow(delay: float, code: int = 200, *, headers: Mapping[str, str] | None = None) -> Respond:
    """Answer ``code`` after ``delay`` seconds."""
    return status(code, headers=headers, delay=delay)


def hang() -> Hang:
    """The :class:`Hang` mode."""
    return Hang()


def reset() -> Reset:
    """The :class:`Reset` mode."""
    return Reset()


def truncate(code: int = 200, *, missing: int = 100) -> Truncate:
    """The :class:`Truncate` mode."""
    return Truncate(code, missing)


def stream(
    *, every: float = 0.05, count: int | None = None, end: str = "finish", **fields: object
) -> Stream:
    """A :class:`Stream` mode (``fields``: ``status``, ``chunk``, ``content_type``)."""
    if end not in ("finish", "reset", "stall"):
        raise ValueError(f"stream end must be 'finish', 'reset' or 'stall', got {end!r}")
    return Stream(every=every, count=count, end=end, **fields)  # type: ignore[arg-type]


def parse_mode(mode: ModeLike) -> Mode:
    """Turn a shorthand (see :data:`ModeLike`) into a mode.

    Raises:
        ValueError: the shorthand is not understood.
    """
    if isinstance(mode, Respond | Hang | Reset | Truncate | Stream | Upgrade):
        return mode
    if isinstance(mode, int):
        return Respond(mode)
    text = mode.strip().lower()
    if text.isdigit() and 100 <= int(text) <= 599:
        return Respond(int(text))
    if text == "hang":
        return Hang()
    if text == "reset":
        return Reset()
    if text == "truncate":
        return Truncate()
    if text.startswith("slow:"):
        try:
            return Respond(200, delay=float(text[5:]))
        except ValueError:
            pass
    raise ValueError(
        f"unknown fault mode {mode!r}; use a status code, 'hang', 'reset', 'truncate', "
        "'slow:SECONDS' or a mode object"
    )


# -- requests --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the server read completely.

    Attributes:
        method: the request method, upper case.
        path: the path without the query string.
        target: the request target as sent (path and query).
        headers: header names lower-cased (the last value wins on repeats).
        body: the request body.
        mode: the mode the server applied.
        received_at: ``time.monotonic()`` when the request had been read.
    """

    method: str
    path: str
    target: str
    headers: dict[str, str]
    body: bytes
    mode: Mode
    received_at: float


class _Closed(Exception):
    """The peer closed the connection or sent something unusable."""


class _Reader:
    """Buffered reads from a connected socket."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = bytearray()

    def _fill(self) -> None:
        chunk = self._conn.recv(65536)
        if not chunk:
            raise _Closed
        self._buffer += chunk

    def until(self, marker: bytes, limit: int) -> bytes:
        while True:
            index = self._buffer.find(marker)
            if index >= 0:
                end = index + len(marker)
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            if len(self._buffer) > limit:
                raise _Closed
            self._fill()

    def exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def _read_body(reader: _Reader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size = int(reader.until(b"\r\n", 1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                reader.until(b"\r\n", _MAX_HEADER_BYTES)  # (no trailers expected) final CRLF
                return b"".join(parts)
            parts.append(reader.exactly(size))
            reader.exactly(2)
    length = int(headers.get("content-length", "0") or "0")
    if length < 0 or length > _MAX_BODY_BYTES:
        raise _Closed
    return reader.exactly(length)


def _read_request(reader: _Reader) -> tuple[str, str, dict[str, str], bytes]:
    head = reader.until(b"\r\n\r\n", _MAX_HEADER_BYTES).decode("latin-1")
    request_line, *header_lines = head[:-4].split("\r\n")
    try:
        method, target, _version = request_line.split(" ", 2)
    except ValueError as exc:
        raise _Closed from exc
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method.upper(), target, headers, _read_body(reader, headers)


# -- the server ------------------------------------------------------------------------------
@dataclass(slots=True)
class _Scripts:
    queues: dict[tuple[str | None, str], collections.deque[Mode]] = field(default_factory=dict)
    path_defaults: dict[str, Mode] = field(default_factory=dict)


class FaultServer:
    """A scriptable HTTP/1.1 server on 127.0.0.1 that injects faults (see the module doc).

    Thread-safe: scripts, defaults and counters may be changed and read from any thread while
    requests are served. Use it as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        default: the mode for requests whose path has no scripted mode left (``"200"``).
        port: the port to bind; 0 picks a free one (kept across :meth:`start_listening`).
        max_recorded: how many :class:`RecordedRequest` are kept (the oldest are dropped;
            counts are never dropped).
    """

    host = "127.0.0.1"

    def __init__(
        self, default: ModeLike = "200", *, port: int = 0, max_recorded: int = 10_000
    ) -> None:
        self._default = parse_mode(default)
        self._port = port
        self._lock = threading.Lock()
        self._scripts = _Scripts()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FaultServer:
        """Start listening and serving; returns ``self``."""
        self._stopped.clear()
        self.start_listening()
        return self

    def stop(self) -> None:
        """Stop listening, end every connection (hanging and slow ones too), join threads."""
        self._stopped.set()
        self.stop_listening()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=5.0)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def listening(self) -> bool:
        """Whether the server currently accepts connections."""
        return self._listener is not None

    def start_listening(self) -> None:
        """Listen (again) on the server's port; the first call picks the port when it is 0."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._port))
            listener.listen(512)
        except OSError:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._wakeup = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(listener, self._wakeup[0]),
            name=f"faultserver-accept-{self._port}",
            daemon=True,
        )
        self._accept_thread.start()

    def stop_listening(self, *, close_connections: bool = True) -> None:
        """Close the listening socket: new connections are refused until
        :meth:`start_listening`.

        Args:
            close_connections: also close open (e.g. keep-alive) connections, so clients
                cannot reuse them and must reconnect.
        """
        listener, wakeup, thread = self._listener, self._wakeup, self._accept_thread
        self._listener = self._wakeup = self._accept_thread = None
        if wakeup is not None:
            with contextlib.suppress(OSError):
                wakeup[1].send(b"x")
        if thread is not None:
            thread.join(timeout=5.0)
        if listener is not None:
            listener.close()
        if wakeup is not None:
            wakeup[0].close()
            wakeup[1].close()
        if close_connections:
            with self._lock:
                connections = list(self._connections)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    # -- addresses -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (0 before the first :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self._port}"

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- scripting -----------------------------------------------------------------------
    def script(self, path: str, modes: Iterable[ModeLike], *, method: str | None = None) -> None:
        """Append ``modes`` to the script of ``path`` (of ``method`` only, when given).

        Requests take scripted modes in order; a method-specific script is used before the
        path's general one. When both are empty the path's default, then the server's
        default applies.
        """
        parsed = [parse_mode(mode) for mode in modes]
        key = (None if method is None else method.upper(), path)
        with self._lock:
            self._scripts.queues.setdefault(key, collections.deque()).extend(parsed)

    def set_default(self, mode: ModeLike, *, path: str | None = None) -> None:
        """Set the mode used when nothing is scripted, for ``path`` or for every path."""
        parsed = parse_mode(mode)
        with self._lock:
            if path is None:
                self._default = parsed
            else:
                self._scripts.path_defaults[path] = parsed

    def pending(self, path: str, *, method: str | None = None) -> int:
        """How many scripted modes of ``path`` (and ``method``) have not been used yet."""
        key = (None if method is None else method.upper(), path)
        with self._lock:
            return len(self._scripts.queues.get(key, ()))

    def clear(self) -> None:
        """Forget scripts, per-path defaults, counts and recorded requests."""
        with self._lock:
            self._scripts = _Scripts()
            self._counts.clear()
            self._recorded.clear()

    # -- observing -----------------------------------------------------------------------
    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Requests read so far, optionally only those to ``path`` and/or with ``method``."""
        wanted_method = None if method is None else method.upper()
        with self._lock:
            return sum(
                n
                for (m, p), n in self._counts.items()
                if (path is None or p == path) and (wanted_method is None or m == wanted_method)
            )

    @property
    def requests(self) -> list[RecordedRequest]:
        """The recorded requests, oldest first (a copy)."""
        with self._lock:
            return list(self._recorded)

    def wait_for_count(self, count: int, *, path: str | None = None, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` requests (to ``path``) were read; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count(path) < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    # -- internals -----------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket, wakeup: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wakeup, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if wakeup in ready:
                    return
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                worker = threading.Thread(
                    target=self._serve_connection,
                    args=(conn,),
                    name=f"faultserver-conn-{self._port}",
                    daemon=True,
                )
                with self._lock:
                    self._connections.add(conn)
                    self._workers.add(worker)
                worker.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            reader = _Reader(conn)
            keep_open = True
            while keep_open and not self._stopped.is_set():
                method, target, headers, body = _read_request(reader)
                mode = self._take_mode(method, target, headers, body)
                keep_open = self._apply(conn, mode, method, target)
                if headers.get("connection", "").lower() == "close":
                    keep_open = False
        except (_Closed, OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._workers.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                conn.close()

    def _take_mode(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Mode:
        path = target.split("?", 1)[0]
        with self._lock:
            self._counts[(method, path)] += 1
            scripts = self._scripts
            mode: Mode | None = None
            for key in ((method, path), (None, path)):
                queue = scripts.queues.get(key)
                if queue:
                    mode = queue.popleft()
                    break
            if mode is None:
                mode = scripts.path_defaults.get(path, self._default)
            self._recorded.append(
                RecordedRequest(method, path, target, headers, body, mode, time.monotonic())
            )
            return mode

    def _apply(self, conn: socket.socket, mode: Mode, method: str, target: str) -> bool:
        """Act out ``mode``; True when the connection may serve another request."""
        if isinstance(mode, Respond):
            if mode.delay > 0 and self._stopped.wait(mode.delay):
                return False
            body = mode.body if mode.body is not None else _json_body(mode.status, method, target)
            conn.sendall(_head(mode.status, mode.headers, len(body)) + body)
            return True
        if isinstance(mode, Reset):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if isinstance(mode, Truncate):
            body = _json_body(mode.status, method, target)
            conn.sendall(_head(mode.status, (), len(body) + mode.missing) + body)
            return False
        if isinstance(mode, Stream):
            return self._stream(conn, mode)
        if isinstance(mode, Upgrade):
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")
            while not self._stopped.is_set() and (data := conn.recv(65536)):
                conn.sendall(data)
            return False
        self._hang(conn)
        return False

    def _stream(self, conn: socket.socket, mode: Stream) -> bool:
        """Act out a :class:`Stream`; True when the connection may serve another request."""
        head = f"HTTP/1.1 {mode.status} {_reason(mode.status)}\r\n"
        head += f"Content-Type: {mode.content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        conn.sendall(head.encode("latin-1"))
        sent = 0
        while mode.count is None or sent < mode.count:
            if sent and self._stopped.wait(mode.every):
                return False
            conn.sendall(b"%x\r\n%s\r\n" % (len(mode.chunk), mode.chunk))
            sent += 1
        if mode.end == "finish":
            conn.sendall(b"0\r\n\r\n")
            return True
        if mode.end == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        self._hang(conn)
        return False

    def _hang(self, conn: socket.socket) -> None:
        """Wait until the server stops or the client closes its side."""
        with selectors.DefaultSelector() as selector:
            selector.register(conn, selectors.EVENT_READ)
            while not self._stopped.is_set():
                if selector.select(_POLL_SECONDS) and not conn.recv(65536):
                    return


def _json_body(code: int, method: str, target: str) -> bytes:
    document: dict[str, object] = {"status": code, "method": method, "path": target}
    if code < 400:
        document["ok"] = True
    else:
        document["error"] = _reason(code)
    return json.dumps(document).encode()


def _reason(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _head(code: int, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    lines = [f"HTTP/1.1 {code} {_reason(code)}", "Content-Type: application/json"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
