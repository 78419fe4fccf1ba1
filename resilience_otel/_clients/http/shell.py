"""What the sync and async httpx transports share: the engine and breakers, per-call set-up,
argument documentation and the accessors both expose."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from ..._core.engine import Attempt, CallDescription, Engine
from ..._core.exceptions import CircuitOpenError, mix_with
from ..._telemetry.errortext import error_describer
from ..._telemetry.redact import Redactor
from ..._telemetry.semconv import RESILIENCE_ERROR_CLASS
from .classify import HttpClassifier, classify_http, replayable
from .stream import ReadBody, call_timed_out

if TYPE_CHECKING:
    import random

    from ..._config.policy import Policy
    from ..._core.breaker import CircuitBreaker
    from ..._core.clock import Clock
    from ..._deadletters.base import DeadLetterQueue
    from ..._telemetry.events import Observer

__all__ = ["ARGS_DOC", "HttpShell", "Wrapping"]


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


def _late_response(step: Attempt) -> Exception:
    # A response that came after the deadline fails as the async transport's cut does. The
    # httpx client attaches the request, as it does to every error a transport raises.
    return call_timed_out(None, step)


class HttpShell:
    """The engine, breakers and per-call set-up of one transport."""

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
        read_body: ReadBody,
        stream_idle_timeout: float | None,
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
        idle = policy.breaker.call_timeout if stream_idle_timeout is None else stream_idle_timeout
        self.idle_timeout = None if idle is None or idle == math.inf else idle
        """The longest wait for a streamed body's next chunk, seconds (None: no limit)."""
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
            replayable=replayable(request), describe=partial(self.describe, request),
        )  # fmt: skip

    def acall(
        self, request: httpx.Request, send: Callable[[Attempt], Awaitable[httpx.Response]]
    ) -> Awaitable[httpx.Response]:
        return self.engine.acall(
            self.breaker_for(request), send, httpx.Response.aclose,
            replayable=replayable(request), describe=partial(self.describe, request),
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

    @staticmethod
    def prepare(request: httpx.Request, original: Any, step: Attempt) -> None:
        """Cap the request's httpx timeouts to the attempt's timeout."""
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

    @staticmethod
    def release(request: httpx.Request, original: Any, step: Attempt) -> None:
        """After the head of a streamed response: its body is read with the caller's own
        timeouts (httpcore reads them when the body is read), bounded by the idle timeout,
        not by the attempt's."""
        if step.timeout is None:
            return  # nothing was capped
        if original is None:
            request.extensions.pop("timeout", None)
        else:
            request.extensions["timeout"] = original

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


class Wrapping:
    """The accessors both transports share: breakers and the wrapped transport."""

    _shell: HttpShell

    @property
    def breaker(self) -> CircuitBreaker:
        """The policy's breaker (per-host breakers: :meth:`breakers`)."""
        return self._shell.breaker

    def breakers(self) -> list[CircuitBreaker]:
        """Every breaker in use: the policy's, then one per host when ``per_host``."""
        return self._shell.breakers()

    @property
    def _pool(self) -> Any:
        """The wrapped transport's connection pool, for code that inspects it (httpx's own
        tests do). Read-only; ``AttributeError`` when the wrapped transport has none."""
        inner: Any = self._transport  # type: ignore[attr-defined]  # set by each transport
        return inner._pool


ARGS_DOC = """
    Args:
        transport: the transport to wrap (default ``httpx.HTTPTransport()``); entering and
            exiting this transport enters and exits it, as httpx's own transports do, and
            the ``transport`` property returns it.
        policy: the upstream's policy.
        classifier: overrides :func:`classify_http`.
        breaker: share a breaker with other transports (e.g. a sync and an async client of
            one service); by default the transport makes its own.
        per_host: one breaker per ``host:port`` instead of one per policy; at most
            ``max_hosts`` of them, further hosts share the policy's breaker.
        dead_letters: where failed calls are recorded (see ``Policy.dead_letter_on``).
        keep_payload: keep request bodies in dead letters (for replay); off by default.
        read_body: where response bodies are read. ``"auto"`` (default): inside the attempt
            for ``client.get()`` and friends, so ``call_timeout`` covers the whole response
            and a truncated body or a stalled download is retried; by the caller for
            ``client.stream()``, server-sent events (``text/event-stream``) and calls made
            without an httpx client. ``True``: always inside the attempt. ``False``: always
            by the caller. A body the caller reads is never resent; its call ends (breaker,
            metrics, span) when the body ends, as a failure if reading it fails.
        stream_idle_timeout: the longest wait for the next chunk of a body the caller
            reads, seconds; ``None`` (default): the policy's ``call_timeout``;
            ``math.inf``: no limit beyond httpx's own read timeout.
        observers: receive call events (telemetry, health).
        tracer_provider: the OTel tracer provider (default: the global one).
        meter_provider: the OTel meter provider (default: the global one).
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
