"""Attempt deadlines for blocking httpx calls, enforced on every socket operation.

A blocking socket call can only be bounded by its own timeout, and httpx hands httpcore one
timeout per operation (connect, each read, each write): a server dripping its response a few
bytes at a time never trips it. httpcore passes that timeout to every network call it makes,
so :func:`cut_at_deadline` wraps the connection pool's network backend: each connect, TLS
handshake, read and write gets ``min(its own timeout, time left before the attempt's
deadline)``, and fails with httpx's own timeout type once the deadline has passed. No thread,
no timer: the deadline sits in a :class:`~contextvars.ContextVar` that the resilient transport
sets for the duration of an attempt (:func:`attempt_deadline`), so the same pool used outside
an attempt (a streamed body read later, another client) behaves exactly as before.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

if TYPE_CHECKING:
    import ssl

    from ..._core.steps import Attempt

__all__ = ["AttemptDeadline", "attempt_deadline", "cut_at_deadline"]


class AttemptDeadline:
    """When the current attempt must end (``time.monotonic()``), and which attempt it is."""

    __slots__ = ("at", "step")

    def __init__(self, at: float, step: Attempt) -> None:
        self.at = at
        self.step = step

    def left(self, error: type[httpcore.TimeoutException]) -> float:
        """Seconds left; raises ``error`` once none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired(error)
        return left

    def expired(self, error: type[httpcore.TimeoutException]) -> httpcore.TimeoutException:
        """``error`` saying the attempt ran out of time (httpx maps it to its own type)."""
        step = self.step
        return error(f"attempt {step.number} exceeded call_timeout {step.timeout:.3f}s")


attempt_deadline: contextvars.ContextVar[AttemptDeadline | None] = contextvars.ContextVar(
    "resilience_otel_attempt_deadline", default=None
)
"""The deadline of the attempt running in this context, if any."""


def _call(
    method: Any, timeout: float | None, error: type[httpcore.TimeoutException], *args: Any
) -> Any:
    """``method(*args, timeout)`` with the timeout cut to the attempt's deadline."""
    deadline = attempt_deadline.get()
    if deadline is None:
        return method(*args, timeout)
    left = deadline.left(error)
    if timeout is not None and timeout < left:
        return method(*args, timeout)
    try:
        return method(*args, left)
    except error as exc:  # the socket waited until the deadline: say so
        raise deadline.expired(error) from exc


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the attempt's deadline."""

    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = _call(self._stream.read, timeout, httpcore.ReadTimeout, max_bytes)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _call(self._stream.write, timeout, httpcore.WriteTimeout, buffer)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        start = self._stream.start_tls
        tls = _call(start, timeout, httpcore.ConnectTimeout, ssl_context, server_hostname)
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Opens :class:`_DeadlineStream` streams through the backend it wraps."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        def connect(timeout: float | None) -> httpcore.NetworkStream:
            return self._backend.connect_tcp(host, port, timeout, local_address, socket_options)

        return _DeadlineStream(_call(connect, timeout, httpcore.ConnectTimeout))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        def connect(timeout: float | None) -> httpcore.NetworkStream:
            return self._backend.connect_unix_socket(path, timeout, socket_options)

        return _DeadlineStream(_call(connect, timeout, httpcore.ConnectTimeout))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def cut_at_deadline(transport: httpx.BaseTransport) -> bool:
    """Make ``transport`` end every socket operation by the attempt's deadline, if it can.

    Only an ``httpx.HTTPTransport`` (or subclass) whose pool is httpcore's (plain or through a
    proxy) qualifies; wrapping is idempotent. Connections the pool opened before this call
    keep their unwrapped streams. Returns whether the transport's attempts are cut.
    """
    if not isinstance(transport, httpx.HTTPTransport):
        return False
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool):
        return False
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, _DeadlineBackend):
        return True
    if not isinstance(backend, httpcore.NetworkBackend):
        return False
    pool._network_backend = _DeadlineBackend(backend)
    return True
