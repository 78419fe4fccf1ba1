"""Resilient httpx transports: breaker, safe retries, timeouts and dead letters for any
``httpx.BaseTransport`` / ``httpx.AsyncBaseTransport``.

Usage::

    client = httpx.Client(transport=ResilientTransport(policy=Policy(service="alpaca")))

Retry safety: a request is resent after it may have reached the server only when its method
is idempotent (GET HEAD OPTIONS PUT DELETE TRACE) or it carries an ``Idempotency-Key``
header, and its body can be re-read (not a one-shot stream). Failures that certainly happened
before sending (connection refused, connect or pool timeout) are retried for every method.
After the last retryable *response* the caller gets that response; after the last retryable
*exception* it gets a :class:`RetriesExhaustedError` that is also of the exception's own type.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import context

from ._argcheck import check_transport_args
from ._classify import ErrorClass, Failure, FailureKind, classify_exception
from ._clock import SYSTEM_CLOCK, Clock
from ._deadline import Deadlines
from ._engine import Attempt, CallDescription, Engine
from ._errortext import error_describer
from ._exceptions import CircuitOpenError, mix_with
from ._http_telemetry import (
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
from ._redact import Redactor
from ._retry import parse_retry_after
from ._semconv import RESILIENCE_ERROR_CLASS
from ._sync_deadline import AttemptDeadline, attempt_deadline, cut_at_deadline
from ._telemetry import instrumentation_suppressed

if TYPE_CHECKING:
    import random

    from ._breaker import CircuitBreaker
    from ._config import Policy
    from ._events import Observer
    from .dlq import DeadLetterQueue

__all__ = [
    "IDEMPOTENT_METHODS",
    "AsyncResilientTransport",
    "HttpClassifier",
    "ResilientTransport",
    "classify_http",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

HttpClassifier = Callable[[httpx.Response | None, Exception | None], Failure | None]
"""``(response, error) -> Failure | None``: exactly one of response and error is set."""

_T, _P, _C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CRITICAL
_STATUS_FAILURES: dict[int, Failure] = {
    408: Failure(_T, FailureKind.TIMEOUT, error_type="408"),
    500: Failure(_T, FailureKind.SERVER_ERROR, error_type="500"),
    502: Failure(_T, FailureKind.SERVER_ERROR, error_type="502"),
    504: Failure(_T, FailureKind.TIMEOUT, error_type="504"),
    501: Failure(_P, FailureKind.SERVER_ERROR, error_type="501"),
    505: Failure(_P, FailureKind.SERVER_ERROR, error_type="505"),
    506: Failure(_P, FailureKind.SERVER_ERROR, error_type="506"),
    507: Failure(_C, FailureKind.SERVER_ERROR, error_type="507"),
    508: Failure(_P, FailureKind.SERVER_ERROR, error_type="508"),
    510: Failure(_P, FailureKind.SERVER_ERROR, error_type="510"),
    511: Failure(_P, FailureKind.CLIENT_ERROR, error_type="511"),
}

# Exceptions raised before any byte of the request left this process.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)


def _status_failure(response: httpx.Response, wall_clock: Callable[[], float]) -> Failure | None:
    status = response.status_code
    if status < 400:
        return None
    known = _STATUS_FAILURES.get(status)
    if known is not None:
        return known
    error_type = str(status)
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"), wall_clock())
        kind = FailureKind.RATE_LIMITED if status == 429 else FailureKind.SERVER_ERROR
        return Failure(_T, kind, retry_after=retry_after, error_type=error_type)
    if status < 500:
        return Failure(_P, FailureKind.CLIENT_ERROR, error_type=error_type)
    return Failure(_T, FailureKind.SERVER_ERROR, error_type=error_type)


def classify_http(
    response: httpx.Response | None,
    error: Exception | None,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> Failure | None:
    """The default httpx classifier.

    Responses: below 400 succeed; 408, 429, 500, 502, 503, 504 (and unknown 5xx) are
    TRANSIENT, with ``Retry-After`` read on 429 and 503; 507 is CRITICAL; other 4xx, 501,
    505, 506, 508, 510 and 511 are PERMANENT. Exceptions: certificate failures, out of
    memory and disk full are CRITICAL; connect errors and timeouts, read/write errors and
    protocol errors from the server are TRANSIENT; everything else is PERMANENT.
    """
    if error is None:
        assert response is not None
        return _status_failure(response, wall_clock)
    critical = classify_exception(error)
    if critical is not None:
        return critical
    name = type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        return Failure(
            _T, FailureKind.TIMEOUT, sent=not isinstance(error, _NOT_SENT), error_type=name
        )
    if isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.UnsupportedProtocol | httpx.LocalProtocolError
    ):
        return Failure(
            _T, FailureKind.CONNECTION, sent=not isinstance(error, _NOT_SENT), error_type=name
        )
    return Failure(_P, FailureKind.OTHER, error_type=name)


def _replayable(request: httpx.Request) -> bool:
    if request.method not in IDEMPOTENT_METHODS and "idempotency-key" not in request.headers:
        return False
    return isinstance(request.stream, httpx.ByteStream)


def _reject_as_transport_error(error: CircuitOpenError) -> BaseException:
    mixed = mix_with(error, httpx.TransportError)
    if not hasattr(mixed, "_request"):
        object.__setattr__(mixed, "_request", None)  # httpx's client fills it in
    return mixed


def _describe_response(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _in_memory(response: httpx.Response) -> bool:
    # A buffered response holds no connection, so it can wait out a backoff; an unread
    # streamed one would hold its pool connection through the wait.
    return isinstance(response.stream, httpx.ByteStream)


def _capped_timeouts(
    original: dict[str, float | None] | None, limit: float
) -> dict[str, float | None]:
    keys = ("connect", "read", "write", "pool")
    if not original:
        return dict.fromkeys(keys, limit)
    return {k: limit if original.get(k) is None else min(limit, original[k]) for k in keys}  # type: ignore[type-var]


class _Shell:
    """What the sync and async transports share: engine, breakers and per-call set-up."""

    def __init__(
        self,
        policy: Policy,
        *,
        classifier: HttpClassifier | None,
        breaker: CircuitBreaker | None,
        per_host: bool,
        max_hosts: int,
        dead_letters: DeadLetterQueue | None,
        keep_payload: bool,
        read_body: bool,
        observers: Sequence[Observer],
        tracer_provider: Any,
        meter_provider: Any,
        clock: Clock,
        rng: random.Random | None,
        redact: tuple[Iterable[str], Iterable[str], Iterable[str | re.Pattern[str]]] = ((), (), ()),
        owner: str = "ResilientTransport",
    ) -> None:
        self.redactor = Redactor.for_config(policy.redaction, *redact)
        self.describe_error = error_describer(self.redactor)
        self.engine = Engine(
            policy,
            client="http",
            classify=classifier or partial(classify_http, wall_clock=clock.time),
            clock=clock,
            rng=rng,
            dead_letters=dead_letters,
            observers=observers,
            describe_value=_describe_response,
            reject_as=_reject_as_transport_error,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            keeps=_in_memory,
            timed_out=_late_response,
            describe_error=self.describe_error,
            owner=owner,
        )
        self.service = policy.service
        self.breaker = self.engine.service_breaker(breaker)
        self.per_host = per_host
        self.max_hosts = max_hosts
        self.keep_payload = keep_payload
        self.read_body = read_body
        self._host_breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker_for(self, request: httpx.Request) -> CircuitBreaker:
        """The service's breaker, or the request host's when breakers are per host."""
        if not self.per_host:
            return self.breaker
        host = request.url.netloc.decode("ascii", "replace").rpartition("@")[2]
        breaker = self._host_breakers.get(host)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._host_breakers.get(host)
            if breaker is None:
                if len(self._host_breakers) >= self.max_hosts:
                    return self.breaker  # bounded: overflow hosts share the service breaker
                breaker = self.engine.new_breaker(f"{self.engine.policy.service}:{host}")
                self._host_breakers[host] = breaker
            return breaker

    def breakers(self) -> list[CircuitBreaker]:
        """Every breaker this transport uses."""
        with self._lock:
            return [self.breaker, *self._host_breakers.values()]

    def call(
        self, request: httpx.Request, send: Callable[[Attempt], httpx.Response]
    ) -> httpx.Response:
        return self.engine.call(
            self.breaker_for(request), send, httpx.Response.close,
            replayable=_replayable(request), describe=partial(self.describe, request),
        )  # fmt: skip

    def acall(
        self, request: httpx.Request, send: Callable[[Attempt], Awaitable[httpx.Response]]
    ) -> Awaitable[httpx.Response]:
        return self.engine.acall(
            self.breaker_for(request), send, httpx.Response.aclose,
            replayable=_replayable(request), describe=partial(self.describe, request),
        )  # fmt: skip

    def describe(self, request: httpx.Request) -> CallDescription:
        payload = None
        if self.keep_payload and isinstance(request.stream, httpx.ByteStream):
            payload = request.content or None
        return CallDescription(
            operation=f"{request.method} {self.redactor.url(str(request.url))}",
            payload=payload,
            metadata={"method": request.method, "host": request.url.host},
        )

    def prepare(self, request: httpx.Request, original: Any, step: Attempt) -> None:
        limit = step.timeout
        if limit is None:
            return
        if original and all(
            (value := original.get(key)) is not None and value <= limit
            for key in ("connect", "read", "write", "pool")
        ):
            request.extensions["timeout"] = original  # already within the limit: no copy
            return
        request.extensions["timeout"] = _capped_timeouts(original, max(limit, 0.0))

    def label_borrowed(
        self, step: Attempt, response: httpx.Response | None, error: Exception | None
    ) -> None:
        """Classify an attempt traced by opentelemetry-instrumentation-httpx onto its span."""
        trace_ = step.trace
        if trace_ is None or not trace_.span.is_recording():
            return
        failure = self.engine.classify(response, error)
        if failure is not None:
            trace_.span.set_attribute(RESILIENCE_ERROR_CLASS, failure.error_class.value)

    @staticmethod
    def buffered(response: httpx.Response, body: list[bytes]) -> httpx.Response:
        # The same response over the body read so far: httpx's client then reads (and times)
        # it as usual, and nothing is copied but the bytes.
        response.stream = httpx.ByteStream(b"".join(body))
        return response


def _call_timed_out(request: httpx.Request | None, step: Attempt) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(
        f"attempt {step.number} exceeded call_timeout {step.timeout:.3f}s", request=request
    )


def _late_response(step: Attempt) -> Exception:
    # A response that came after the deadline fails as the async transport's cut does. The
    # httpx client attaches the request, as it does to every error a transport raises.
    return _call_timed_out(None, step)


_ARGS_DOC = """
    Args:
        transport: the transport to wrap (default ``httpx.HTTPTransport()``).
        policy: the upstream's policy.
        classifier: overrides :func:`classify_http`.
        breaker: share a breaker with other transports (e.g. a sync and an async client of
            one service); by default the transport makes its own.
        per_host: one breaker per ``host:port`` instead of one per policy; at most
            ``max_hosts`` of them, further hosts share the policy's breaker.
        dead_letters: where failed calls are recorded (see ``Policy.dead_letter_on``).
        keep_payload: keep request bodies in dead letters (for replay); off by default.
        read_body: read the response body inside the attempt, so a truncated body or a
            stalled download is retried and ``call_timeout`` covers the whole response.
            Turn off for large streamed downloads.
        observers: receive call events (telemetry, health).
        tracer_provider / meter_provider: OTel providers (default: the global ones).
        clock: time source; ``resilience_otel.testing.FakeClock`` makes retries instant.
        rng: random source for jitter.
        redact_query_keys: more query keys whose values are redacted in ``url.full``, dead
            letters and error texts (added to the built-in pattern and the policy's
            ``RedactionConfig.query_keys``).
        redact_headers: more header names whose values never reach span attributes (added to
            the built-in credential headers and ``RedactionConfig.headers``).
        redact_path_segments: regexes; a URL path segment fully matching one is recorded as
            ``REDACTED`` (added to ``RedactionConfig.path_segments``). None by default.
"""


class _Breakers:
    """The breaker accessors both transports share."""

    _shell: _Shell

    @property
    def breaker(self) -> CircuitBreaker:
        """The policy's breaker (per-host breakers: :meth:`breakers`)."""
        return self._shell.breaker

    def breakers(self) -> list[CircuitBreaker]:
        """Every breaker in use: the policy's, then one per host when ``per_host``."""
        return self._shell.breakers()


class ResilientTransport(_Breakers, httpx.BaseTransport):
    __doc__ = (
        "A sync httpx transport adding a circuit breaker, safe retries, timeouts and dead\n"
        "    letters. When the inner transport is an ``httpx.HTTPTransport`` (the default),\n"
        "    every socket operation of an attempt ends by its deadline and a slow or dripping\n"
        "    server fails as ``httpx.ReadTimeout`` at ``call_timeout``; other inner transports\n"
        "    get httpx timeouts capped to the time left, and a response arriving after the\n"
        "    deadline fails the same way.\n" + _ARGS_DOC
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
        read_body: bool = True,
        observers: Iterable[Observer] = (),
        tracer_provider: Any = None,
        meter_provider: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        redact_query_keys: Iterable[str] = (),
        redact_headers: Iterable[str] = (),
        redact_path_segments: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        check_transport_args(
            "ResilientTransport", transport, httpx.BaseTransport, policy=policy,
            classifier=classifier, breaker=breaker, per_host=per_host, max_hosts=max_hosts,
            keep_payload=keep_payload, read_body=read_body, observers=observers, clock=clock,
            rng=rng,
        )  # fmt: skip
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        # Whether every socket operation of an attempt ends by its deadline (see module doc).
        self._cuts = cut_at_deadline(self._transport)
        self._otel_attempt_wrapper: Callable[..., Any] | None = None
        self._shell = _Shell(
            policy, classifier=classifier, breaker=breaker, per_host=per_host, max_hosts=max_hosts,
            dead_letters=dead_letters, keep_payload=keep_payload, read_body=read_body,
            observers=tuple(observers), tracer_provider=tracer_provider,
            meter_provider=meter_provider, clock=clock, rng=rng,
            redact=(redact_query_keys, redact_headers, redact_path_segments),
            owner=type(self).__name__,
        )  # fmt: skip

    def _handle_request(self, request: httpx.Request) -> httpx.Response:
        shell = self._shell
        return shell.call(request, partial(self._send, request, request.extensions.get("timeout")))

    handle_request = InstrumentationAwareMethod("_handle_request")

    def _send(self, request: httpx.Request, original_timeout: Any, step: Attempt) -> httpx.Response:
        self._shell.prepare(request, original_timeout, step)
        if step.timeout is None or not self._cuts:
            return self._traced(request, step)
        # Cleared when the attempt ends: a streamed body read later is not cut by it.
        token = attempt_deadline.set(AttemptDeadline(time.monotonic() + step.timeout, step))
        try:
            return self._traced(request, step)
        finally:
            attempt_deadline.reset(token)

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
        if not shell.read_body or isinstance(stream, httpx.ByteStream):
            return response  # streaming asked for, or the body is already in memory
        chunks: list[bytes] = []
        try:
            for chunk in stream:  # type: ignore[union-attr]
                chunks.append(chunk)
                if deadline is not None and clock.monotonic() > deadline:
                    raise _call_timed_out(request, step)
        finally:
            stream.close()  # type: ignore[union-attr]
        return shell.buffered(response, chunks)

    def close(self) -> None:
        self._transport.close()


class AsyncResilientTransport(_Breakers, httpx.AsyncBaseTransport):
    __doc__ = (
        "The asyncio twin of :class:`ResilientTransport`. ``call_timeout`` cancels the attempt\n"
        "    and surfaces as ``httpx.ReadTimeout``; cancelling the calling\n"
        "    task propagates at once.\n" + _ARGS_DOC
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
        read_body: bool = True,
        observers: Iterable[Observer] = (),
        tracer_provider: Any = None,
        meter_provider: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        redact_query_keys: Iterable[str] = (),
        redact_headers: Iterable[str] = (),
        redact_path_segments: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        check_transport_args(
            "AsyncResilientTransport", transport, httpx.AsyncBaseTransport, policy=policy,
            classifier=classifier, breaker=breaker, per_host=per_host, max_hosts=max_hosts,
            keep_payload=keep_payload, read_body=read_body, observers=observers, clock=clock,
            rng=rng,
        )  # fmt: skip
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._otel_attempt_wrapper: Callable[..., Any] | None = None
        self._deadlines = Deadlines()
        self._shell = _Shell(
            policy, classifier=classifier, breaker=breaker, per_host=per_host, max_hosts=max_hosts,
            dead_letters=dead_letters, keep_payload=keep_payload, read_body=read_body,
            observers=tuple(observers), tracer_provider=tracer_provider,
            meter_provider=meter_provider, clock=clock, rng=rng,
            redact=(redact_query_keys, redact_headers, redact_path_segments),
            owner=type(self).__name__,
        )  # fmt: skip

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
                return await self._traced(request, step)
        except TimeoutError as exc:
            if scope.expired:
                raise _call_timed_out(request, step) from exc
            raise

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
        response = await self._transport.handle_async_request(request)
        stream = response.stream
        if not self._shell.read_body or isinstance(stream, httpx.ByteStream):
            return response  # streaming asked for, or the body is already in memory
        chunks: list[bytes] = []
        try:
            async for chunk in stream:  # type: ignore[union-attr]
                chunks.append(chunk)
        finally:
            await stream.aclose()  # type: ignore[union-attr]
        return self._shell.buffered(response, chunks)

    async def aclose(self) -> None:
        await self._transport.aclose()
