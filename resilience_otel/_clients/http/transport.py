"""The implementation behind :mod:`resilience_otel.httpx` (documented there)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx
from opentelemetry import context

from ..._core.clock import SYSTEM_CLOCK, Clock
from ..._core.deadline import Deadlines
from ..._core.engine import Attempt
from ..._core.steps import OpenBody
from ..._telemetry.otel import instrumentation_suppressed
from ..arguments import check_transport_args
from .classify import IDEMPOTENT_METHODS, HttpClassifier, classify_http
from .shell import ARGS_DOC, HttpShell, Wrapping
from .stream import (
    AsyncWatchedBody,
    ReadBody,
    WatchedBody,
    aread_within,
    call_timed_out,
    check_idle_timeout,
    check_read_body,
    read_within,
    streams,
)
from .sync_deadline import AttemptDeadline, attempt_deadline, cut_at_deadline
from .telemetry import (
    InstrumentationAwareMethod,
    acall_borrowed,
    adopt_current_span,
    call_borrowed,
    metrics_only_trace,
    note_response,
    stand_in_for,
    start_attempt_span,
    suppressed_http,
)

if TYPE_CHECKING:
    import random

    from ..._config.policy import Policy
    from ..._core.breaker import CircuitBreaker
    from ..._deadletters.base import DeadLetterQueue
    from ..._telemetry.events import Observer

__all__ = [
    "IDEMPOTENT_METHODS",
    "AsyncResilientTransport",
    "HttpClassifier",
    "ResilientTransport",
    "classify_http",
]


class ResilientTransport(Wrapping, httpx.BaseTransport):
    __doc__ = (
        "A sync httpx transport adding a circuit breaker, safe retries, timeouts and dead\n"
        "    letters. When the inner transport is an ``httpx.HTTPTransport`` (the default),\n"
        "    every socket operation of an attempt ends by its deadline and a slow or dripping\n"
        "    server fails as ``httpx.ReadTimeout`` at ``call_timeout`` (a streamed body: at its\n"
        "    idle timeout); other inner transports get httpx timeouts capped to the time left,\n"
        "    and a response arriving after the deadline fails the same way.\n" + ARGS_DOC
    )

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        policy: Policy,
        classifier: HttpClassifier | None = None,
        breaker: CircuitBreaker | None = None,
        per_host: bool = False,
        max_hosts: int = 256,
        dead_letters: DeadLetterQueue | None = None,
        keep_payload: bool = False,
        read_body: ReadBody = "auto",
        stream_idle_timeout: float | None = None,
        observers: Iterable[Observer] = (),
        tracer_provider: Any = None,
        meter_provider: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        redact_query_keys: Iterable[str] = (),
        redact_headers: Iterable[str] = (),
        redact_path_segments: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        owner = "ResilientTransport"
        check_transport_args(
            owner, transport, httpx.BaseTransport, policy=policy, classifier=classifier,
            breaker=breaker, per_host=per_host, max_hosts=max_hosts, keep_payload=keep_payload,
            observers=observers, clock=clock, rng=rng,
        )  # fmt: skip
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        # Whether every socket operation of an attempt ends by its deadline (see module doc).
        self._cuts = cut_at_deadline(self._transport)
        self._otel_attempt_wrapper: Callable[..., Any] | None = None
        self._shell = HttpShell(
            policy, classifier=classifier, breaker=breaker, per_host=per_host, max_hosts=max_hosts,
            dead_letters=dead_letters, keep_payload=keep_payload,
            read_body=check_read_body(owner, read_body),
            stream_idle_timeout=check_idle_timeout(owner, stream_idle_timeout),
            observers=tuple(observers), tracer_provider=tracer_provider,
            meter_provider=meter_provider, clock=clock, rng=rng,
            redact=(redact_query_keys, redact_headers, redact_path_segments),
            owner=type(self).__name__,
        )  # fmt: skip

    @property
    def transport(self) -> httpx.BaseTransport:
        """The wrapped transport (read-only)."""
        return self._transport

    def _handle_request(self, request: httpx.Request) -> httpx.Response:
        shell = self._shell
        return shell.call(request, partial(self._send, request, request.extensions.get("timeout")))

    handle_request = InstrumentationAwareMethod("_handle_request")

    def _send(self, request: httpx.Request, original_timeout: Any, step: Attempt) -> httpx.Response:
        shell = self._shell
        shell.prepare(request, original_timeout, step)
        if step.timeout is None or not self._cuts:
            response = self._traced(request, step)
        else:
            # Cleared when the attempt ends: a streamed body read later has its own deadline.
            token = attempt_deadline.set(AttemptDeadline(time.monotonic() + step.timeout, step))
            try:
                response = self._traced(request, step)
            finally:
                attempt_deadline.reset(token)
        if step.body is not None:
            shell.release(request, original_timeout, step)
        return response

    def _traced(self, request: httpx.Request, step: Attempt) -> httpx.Response:
        shell = self._shell
        telemetry = shell.engine.telemetry
        if telemetry is None or instrumentation_suppressed():
            return self._exchange(request, step)
        wrapper = self._otel_attempt_wrapper
        if wrapper is not None:
            borrowed = partial(self._exchange_in_their_span, step)
            return call_borrowed(wrapper, borrowed, self._transport, request)
        if not telemetry.tracing_live():  # no SDK for spans: at most the duration metric
            if not metrics_only_trace(telemetry, request, step):
                return self._exchange(request, step)
            response = self._exchange(request, step)
            note_response(step, response)
            return response
        token = start_attempt_span(
            telemetry, request, step, shell.service, shell.redactor, shell.describe_error
        )
        try:
            response = self._exchange(request, step)
        finally:
            context.detach(token)
        note_response(step, response)
        return response

    def _exchange_in_their_span(self, step: Attempt, request: httpx.Request) -> httpx.Response:
        shell = self._shell
        adopt_current_span(step, shell.service, request, shell.redactor, shell.describe_error)
        token = suppressed_http()
        try:
            response = self._exchange(request, step)
        except Exception as exc:
            shell.label_borrowed(step, None, exc)
            stand_in = stand_in_for(exc, shell.describe_error)
            if stand_in is None:
                raise
            raise stand_in from None  # their span records this one; see call_borrowed
        finally:
            context.detach(token)
        self._shell.label_borrowed(step, response, None)
        return response

    def _exchange(self, request: httpx.Request, step: Attempt) -> httpx.Response:
        shell = self._shell
        clock = shell.engine.clock
        # From before the request is sent: for inner transports whose sockets we cannot cut,
        # the body is checked against it between chunks (and the engine fails a late return).
        deadline = None if step.timeout is None else clock.monotonic() + step.timeout
        response = self._transport.handle_request(request)
        stream = response.stream
        if isinstance(stream, httpx.ByteStream) or response.status_code == 101:
            return response  # already in memory, or an upgraded connection: nothing to read
        if not streams(shell.read_body, response):
            return read_within(response, request, step, deadline, clock)
        step.body = body = OpenBody()
        response.stream = WatchedBody(
            stream, body, step, request,  # type: ignore[arg-type]
            idle=shell.idle_timeout, cut=self._cuts, clock=clock,
        )  # fmt: skip
        return response

    def __enter__(self) -> Self:
        self._transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._transport.__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        self._transport.close()


class AsyncResilientTransport(Wrapping, httpx.AsyncBaseTransport):
    __doc__ = (
        "The asyncio twin of :class:`ResilientTransport`. ``call_timeout`` cancels the attempt\n"
        "    and surfaces as ``httpx.ReadTimeout`` (a streamed body: its idle timeout cancels\n"
        "    the read); cancelling the calling task propagates at once.\n" + ARGS_DOC
    )

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        policy: Policy,
        classifier: HttpClassifier | None = None,
        breaker: CircuitBreaker | None = None,
        per_host: bool = False,
        max_hosts: int = 256,
        dead_letters: DeadLetterQueue | None = None,
        keep_payload: bool = False,
        read_body: ReadBody = "auto",
        stream_idle_timeout: float | None = None,
        observers: Iterable[Observer] = (),
        tracer_provider: Any = None,
        meter_provider: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        redact_query_keys: Iterable[str] = (),
        redact_headers: Iterable[str] = (),
        redact_path_segments: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        owner = "AsyncResilientTransport"
        check_transport_args(
            owner, transport, httpx.AsyncBaseTransport, policy=policy, classifier=classifier,
            breaker=breaker, per_host=per_host, max_hosts=max_hosts, keep_payload=keep_payload,
            observers=observers, clock=clock, rng=rng,
        )  # fmt: skip
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._otel_attempt_wrapper: Callable[..., Any] | None = None
        self._deadlines = Deadlines()
        self._shell = HttpShell(
            policy, classifier=classifier, breaker=breaker, per_host=per_host, max_hosts=max_hosts,
            dead_letters=dead_letters, keep_payload=keep_payload,
            read_body=check_read_body(owner, read_body),
            stream_idle_timeout=check_idle_timeout(owner, stream_idle_timeout),
            observers=tuple(observers), tracer_provider=tracer_provider,
            meter_provider=meter_provider, clock=clock, rng=rng,
            redact=(redact_query_keys, redact_headers, redact_path_segments),
            owner=type(self).__name__,
        )  # fmt: skip

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The wrapped transport (read-only)."""
        return self._transport

    async def _handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shell = self._shell
        send = partial(self._send, request, request.extensions.get("timeout"))
        return await shell.acall(request, send)

    handle_async_request = InstrumentationAwareMethod("_handle_async_request")

    async def _send(
        self, request: httpx.Request, original_timeout: Any, step: Attempt
    ) -> httpx.Response:
        shell = self._shell
        shell.prepare(request, original_timeout, step)
        if step.timeout is None:
            return await self._traced(request, step)
        try:
            with self._deadlines.scope(step.timeout) as scope:
                response = await self._traced(request, step)
        except TimeoutError as exc:
            if scope.expired:
                raise call_timed_out(request, step) from exc
            raise
        if step.body is not None:
            shell.release(request, original_timeout, step)
        return response

    async def _traced(self, request: httpx.Request, step: Attempt) -> httpx.Response:
        shell = self._shell
        telemetry = shell.engine.telemetry
        if telemetry is None or instrumentation_suppressed():
            return await self._exchange(request, step)
        wrapper = self._otel_attempt_wrapper
        if wrapper is not None:
            borrowed = partial(self._exchange_in_their_span, step)
            return await acall_borrowed(wrapper, borrowed, self._transport, request)
        if not telemetry.tracing_live():  # no SDK for spans: at most the duration metric
            if not metrics_only_trace(telemetry, request, step):
                return await self._exchange(request, step)
            response = await self._exchange(request, step)
            note_response(step, response)
            return response
        token = start_attempt_span(
            telemetry, request, step, shell.service, shell.redactor, shell.describe_error
        )
        try:
            response = await self._exchange(request, step)
        finally:
            context.detach(token)
        note_response(step, response)
        return response

    async def _exchange_in_their_span(
        self, step: Attempt, request: httpx.Request
    ) -> httpx.Response:
        shell = self._shell
        adopt_current_span(step, shell.service, request, shell.redactor, shell.describe_error)
        token = suppressed_http()
        try:
            response = await self._exchange(request, step)
        except Exception as exc:
            shell.label_borrowed(step, None, exc)
            stand_in = stand_in_for(exc, shell.describe_error)
            if stand_in is None:
                raise
            raise stand_in from None  # their span records this one; see call_borrowed
        finally:
            context.detach(token)
        self._shell.label_borrowed(step, response, None)
        return response

    async def _exchange(self, request: httpx.Request, step: Attempt) -> httpx.Response:
        shell = self._shell
        response = await self._transport.handle_async_request(request)
        stream = response.stream
        if isinstance(stream, httpx.ByteStream) or response.status_code == 101:
            return response  # already in memory, or an upgraded connection: nothing to read
        if not streams(shell.read_body, response):
            return await aread_within(response)
        step.body = body = OpenBody()
        response.stream = AsyncWatchedBody(
            stream, body, request,  # type: ignore[arg-type]
            idle=shell.idle_timeout, deadlines=self._deadlines,
        )  # fmt: skip
        return response

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        await self._transport.aclose()
