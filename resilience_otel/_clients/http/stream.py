"""Response bodies: read inside the attempt (buffered), or handed to the caller unread
(streamed) and watched until they end.

``read_body`` chooses, per transport:

- ``True``: every body is read inside the attempt, so ``call_timeout`` covers the whole
  response and a truncated or stalled body is a failed attempt, retried like any other.
- ``False``: every body reaches the caller unread, as with httpx's own transports.
- ``"auto"`` (the default): what the caller asked httpx for. ``client.get()`` and friends
  (``Client.send(stream=False)``) are buffered; ``client.stream()`` (``stream=True``),
  server-sent events (``text/event-stream``) and calls made without an httpx client are
  streamed.

A ``101 Switching Protocols`` and a body already in memory are returned as they are in every
mode. A streamed body ends its call when it ends (see :class:`~resilience_otel._steps.OpenBody`)
and fails with ``httpx.ReadTimeout`` when no data came for the idle timeout.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Literal

import httpcore
import httpx

from ..._core.exceptions import ConfigError
from ..._core.validate import MAX_DURATION
from .sync_deadline import AttemptDeadline, attempt_deadline

if TYPE_CHECKING:
    from ..._core.clock import Clock
    from ..._core.deadline import Deadlines
    from ..._core.steps import Attempt, OpenBody

__all__ = [
    "AsyncWatchedBody",
    "ReadBody",
    "WatchedBody",
    "aread_within",
    "call_timed_out",
    "caller_streams",
    "check_idle_timeout",
    "check_read_body",
    "read_within",
    "streams",
]

ReadBody = bool | Literal["auto"]
"""The ``read_body`` argument of the transports (see the module doc)."""


def check_read_body(owner: str, value: object) -> ReadBody:
    """Return ``value`` if it is ``True``, ``False`` or ``"auto"``."""
    if value is True or value is False or (isinstance(value, str) and value == "auto"):
        return value  # type: ignore[return-value]  # narrowed above
    field = f"{owner}(read_body=...)"
    raise ConfigError(f"{field} must be True, False or 'auto', got {value!r}", field=field)


def check_idle_timeout(owner: str, value: object) -> float | None:
    """Return ``value`` (seconds, ``math.inf`` or ``None``) as a float or ``None``."""
    if value is None:
        return None
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if number and (value == math.inf or 0 < value <= MAX_DURATION):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    field = f"{owner}(stream_idle_timeout=...)"
    raise ConfigError(
        f"{field} must be seconds > 0 and <= {MAX_DURATION:g}, math.inf (no limit) or None "
        f"(the policy's call_timeout), got {value!r}",
        field=field,
    )


def call_timed_out(request: httpx.Request | None, step: Attempt) -> httpx.ReadTimeout:
    """The error of an attempt that overran its timeout."""
    return httpx.ReadTimeout(
        f"attempt {step.number} exceeded call_timeout {step.timeout:.3f}s", request=request
    )


def _idle_timed_out(request: httpx.Request, idle: float) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(f"no body data for {idle:.3f}s (stream_idle_timeout)", request=request)


# -- what the caller asked for -----------------------------------------------------------------
# httpx's Client.send(request, stream=...) decides only after the transport returned whether
# to read the body, and nothing in the request says which it will be. The one place that
# knows is that call's own frame, a few frames up: its ``stream`` argument. Found by the code
# object's name and file (not its identity), so a Client.send patched by another library
# (which still calls the original) is found too; at most _MAX_FRAMES are looked at, so the
# search costs about a microsecond and stays bounded when no client is on the stack (a
# direct handle_request call, which is then answered unread, as httpx's transports do).
# tests/unit/test_transport_streaming.py pins this against the installed httpx.
_CLIENT_FILE = httpx.Client.__init__.__code__.co_filename  # httpx/_client.py: both clients
_MAX_FRAMES = 40


def caller_streams() -> bool | None:
    """The ``stream`` argument of the nearest httpx ``Client.send`` / ``AsyncClient.send``
    on the stack, or ``None`` when there is none within reach."""
    frame = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        code = frame.f_code
        if code.co_name == "send" and code.co_filename == _CLIENT_FILE:
            return bool(frame.f_locals.get("stream", True))
        back = frame.f_back
        if back is None:
            return None
        frame = back
    return None


def streams(mode: ReadBody, response: httpx.Response) -> bool:
    """Whether ``response``'s body goes to the caller unread rather than being read in the
    attempt (``mode`` is the transport's ``read_body``)."""
    if mode is not True and mode is not False:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return True  # endless by design: buffering it could only time out
        return caller_streams() is not False
    return not mode


# -- bodies read inside the attempt --------------------------------------------------------------
def read_within(
    response: httpx.Response,
    request: httpx.Request,
    step: Attempt,
    deadline: float | None,
    clock: Clock,
) -> httpx.Response:
    """Read ``response``'s body now; past ``deadline`` (on ``clock``) it fails as a timeout
    between chunks. The same response comes back over the bytes read, so httpx's client
    then reads (and times) it as usual."""
    stream = response.stream
    chunks: list[bytes] = []
    try:
        for chunk in stream:  # type: ignore[union-attr]
            chunks.append(chunk)
            if deadline is not None and clock.monotonic() > deadline:
                raise call_timed_out(request, step)
    finally:
        stream.close()  # type: ignore[union-attr]
    response.stream = httpx.ByteStream(b"".join(chunks))
    return response


async def aread_within(response: httpx.Response) -> httpx.Response:
    """Async :func:`read_within`; the attempt's cancellation bounds it."""
    stream = response.stream
    chunks: list[bytes] = []
    try:
        async for chunk in stream:  # type: ignore[union-attr]
            chunks.append(chunk)
    finally:
        await stream.aclose()  # type: ignore[union-attr]
    response.stream = httpx.ByteStream(b"".join(chunks))
    return response


# -- bodies handed to the caller ------------------------------------------------------------------
class _IdleDeadline(AttemptDeadline):
    """The per-read deadline of a streamed body: the next chunk is due ``idle`` s from now."""

    __slots__ = ("idle",)

    def __init__(self, idle: float, step: Attempt) -> None:
        super().__init__(0.0, step)
        self.idle = idle

    def expired(self, error: type[httpcore.TimeoutException]) -> httpcore.TimeoutException:
        return error(f"no body data for {self.idle:.3f}s (stream_idle_timeout)")


class WatchedBody(httpx.SyncByteStream):
    """A streamed body on its way to the caller: it ends its call when read to the end or
    closed (a success) or when a read fails (a failure), and fails with
    ``httpx.ReadTimeout`` when no data came for ``idle`` seconds.

    With ``cut`` (the inner transport's sockets honour :data:`attempt_deadline`) a silent
    upstream is cut at the idle timeout; otherwise a chunk that came too late fails once it
    arrives.
    """

    def __init__(
        self,
        stream: httpx.SyncByteStream,
        body: OpenBody,
        step: Attempt,
        request: httpx.Request,
        *,
        idle: float | None,
        cut: bool,
        clock: Clock,
    ) -> None:
        self._stream = stream
        self._body = body
        self._request = request
        self._idle = idle
        self._watch = _IdleDeadline(idle, step) if idle is not None and cut else None
        self._clock = clock

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._stream)
        while True:
            chunk = self._next(chunks)
            if chunk is None:
                return
            yield chunk

    def _next(self, chunks: Iterator[bytes]) -> bytes | None:
        watch = self._watch
        token = None
        if watch is not None:  # set per read, never across a yield: the caller's context
            watch.at = time.monotonic() + watch.idle
            token = attempt_deadline.set(watch)
        begin = self._clock.monotonic()
        try:
            chunk = next(chunks)
        except StopIteration:
            self._body.ended(None)
            return None
        except Exception as exc:
            self._body.ended(exc)
            raise
        finally:
            if token is not None:
                attempt_deadline.reset(token)
        idle = self._idle
        # Also behind a cut: a connection the pool opened before it was wrapped is not cut.
        if idle is not None and self._clock.monotonic() - begin > idle:
            error = _idle_timed_out(self._request, idle)
            self._body.ended(error)
            self._stream.close()
            raise error
        return chunk

    def close(self) -> None:
        self._body.ended(None)  # closed by the caller, early or after the end: not a failure
        self._stream.close()


class AsyncWatchedBody(httpx.AsyncByteStream):
    """The asyncio :class:`WatchedBody`: each read is cancelled at the idle timeout."""

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        body: OpenBody,
        request: httpx.Request,
        *,
        idle: float | None,
        deadlines: Deadlines,
    ) -> None:
        self._stream = stream
        self._body = body
        self._request = request
        self._idle = idle
        self._deadlines = deadlines

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._stream.__aiter__()
        while True:
            chunk = await self._next(chunks)
            if chunk is None:
                return
            yield chunk

    async def _next(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        idle = self._idle
        scope = None
        try:
            if idle is None:
                return await chunks.__anext__()
            with (scope := self._deadlines.scope(idle)):
                return await chunks.__anext__()
        except StopAsyncIteration:
            self._body.ended(None)
            return None
        except Exception as exc:
            if scope is None or not scope.expired or idle is None:
                self._body.ended(exc)
                raise
            error = _idle_timed_out(self._request, idle)
            self._body.ended(error)
            raise error from exc

    async def aclose(self) -> None:
        self._body.ended(None)  # closed by the caller, early or after the end: not a failure
        await self._stream.aclose()
