"""Which sync httpx transports get their sockets cut at the attempt deadline (no sockets)."""

from __future__ import annotations

import time

import httpcore
import httpx
import pytest

from resilience_otel import Policy, ResilientTransport
from resilience_otel._clients.http.sync_deadline import (
    AttemptDeadline,
    _DeadlineBackend,
    attempt_deadline,
    cut_at_deadline,
)
from resilience_otel._core.breaker import BreakerState
from resilience_otel._core.steps import Attempt


def _backend(transport: httpx.HTTPTransport) -> object:
    return transport._pool._network_backend


def test_default_transport_is_wrapped_once() -> None:
    """The pool's backend of an httpx.HTTPTransport is wrapped, and wrapping twice is a no-op."""
    transport = httpx.HTTPTransport()
    assert cut_at_deadline(transport)
    wrapped = _backend(transport)
    assert cut_at_deadline(transport)
    assert _backend(transport) is wrapped
    ResilientTransport(transport, policy=Policy(service="cut", telemetry=False))
    assert _backend(transport) is wrapped


def test_proxy_transport_is_wrapped() -> None:
    """A transport going through an HTTP proxy (httpcore.HTTPProxy) is cut as well."""
    assert cut_at_deadline(httpx.HTTPTransport(proxy="http://127.0.0.1:9"))


def test_other_transports_are_left_alone() -> None:
    """A transport we cannot see into is not touched (it gets capped timeouts only)."""
    assert not cut_at_deadline(httpx.MockTransport(lambda request: httpx.Response(200)))


class Recording(httpcore.NetworkStream):
    """An inner stream that records the timeout of each read."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.timeouts.append(timeout)
        return b"x"


def _stream() -> tuple[httpcore.NetworkStream, Recording]:
    inner = Recording()
    backend = _DeadlineBackend(Opening(inner))
    return backend.connect_tcp("127.0.0.1", 9, timeout=5.0), inner


class Opening(httpcore.NetworkBackend):
    """A backend handing out one given stream."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self.stream = stream

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: object = None,
                    ) -> httpcore.NetworkStream:  # fmt: skip
        return self.stream


STEP = Attempt(2, 0.25, BreakerState.CLOSED)


def test_reads_outside_an_attempt_keep_their_own_timeout() -> None:
    """No attempt running (a streamed body read later): the timeout passes unchanged."""
    stream, inner = _stream()
    stream.read(10, timeout=5.0)
    stream.read(10, timeout=None)
    assert inner.timeouts == [5.0, None]


def test_reads_in_an_attempt_get_the_time_left() -> None:
    """Inside an attempt each read waits at most the time left; a shorter own timeout stays."""
    stream, inner = _stream()
    token = attempt_deadline.set(AttemptDeadline(time.monotonic() + 0.25, STEP))
    try:
        stream.read(10, timeout=5.0)
        stream.read(10, timeout=None)
        stream.read(10, timeout=0.01)
    finally:
        attempt_deadline.reset(token)
    assert all(0 < t <= 0.25 for t in inner.timeouts[:2])  # type: ignore[operator]
    assert inner.timeouts[2] == 0.01


def test_spent_deadline_fails_before_any_socket_call() -> None:
    """With no time left a read fails at once, naming the attempt, without touching the socket."""
    stream, inner = _stream()
    token = attempt_deadline.set(AttemptDeadline(time.monotonic() - 1.0, STEP))
    try:
        with pytest.raises(httpcore.ReadTimeout, match=r"attempt 2 exceeded call_timeout 0\.250s"):
            stream.read(10, timeout=5.0)
    finally:
        attempt_deadline.reset(token)
    assert inner.timeouts == []
