"""What the Redis and PostgreSQL shells share: an engine, a breaker, and one CLIENT span per
logical operation covering its retries (database semantic conventions)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from contextvars import Token
from typing import Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import _semconv as sc
from ._breaker import CircuitBreaker
from ._classify import ErrorClass
from ._clock import Clock
from ._config import Policy
from ._engine import Attempt, CallDescription, Classifier, Engine, Flow, run_async, run_sync
from ._events import Observer
from ._exceptions import CircuitOpenError
from ._telemetry import SUPPRESS_INSTRUMENTATION_KEY, AttemptTrace, instrumentation_suppressed
from .dlq import DeadLetterQueue

__all__ = ["DbShell"]

T = TypeVar("T")


async def _no_discard(value: object) -> None:
    return None


class DbShell:
    """Runs database operations through the engine with one span per operation.

    Args:
        system: ``db.system.name`` (``redis``, ``postgresql``); also the ``client`` label.
        server: ``(address, port)`` of the server, for span and metric attributes.
        namespace: ``db.namespace`` (database name or index), if known.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        system: str,
        classify: Classifier,
        reject_as: Callable[[CircuitOpenError], BaseException],
        server: tuple[str, int | None],
        namespace: str | None,
        breaker: CircuitBreaker | None,
        dead_letters: DeadLetterQueue | None,
        observers: Sequence[Observer],
        tracer_provider: Any,
        meter_provider: Any,
        clock: Clock,
        rng: random.Random | None,
    ) -> None:
        self.engine = Engine(
            policy,
            client=system,
            classify=classify,
            clock=clock,
            rng=rng,
            dead_letters=dead_letters,
            observers=observers,
            reject_as=reject_as,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        self.breaker = self.engine.service_breaker(breaker)
        self.system = system
        self.service = policy.service
        attributes: dict[str, Any] = {sc.DB_SYSTEM_NAME: system, sc.SERVER_ADDRESS: server[0]}
        if server[1] is not None:
            attributes[sc.SERVER_PORT] = server[1]
        if namespace is not None:
            attributes[sc.DB_NAMESPACE] = namespace
        self._base_attributes = attributes
        self._operation_attributes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    # -- running ---------------------------------------------------------------------------
    def run_sync(
        self,
        operation: str,
        attempt: Callable[[], T],
        *,
        replayable: bool,
        extra: dict[str, Any] | None = None,
    ) -> T:
        """Run ``attempt`` (re-called on each retry) as the logical operation ``operation``."""
        flow: Flow[T] = self.engine.flow(
            self.breaker, replayable=replayable, describe=self._describer(operation)
        )
        span, token = self._start(operation, extra)
        begin = self.engine.clock.monotonic()
        try:
            result: T = run_sync(flow, self._wrap(span, attempt), _ignore, self.engine.clock)
        except BaseException as exc:
            self._end(span, token, operation, begin, exc)
            raise
        self._end(span, token, operation, begin, None)
        return result

    async def run_async(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        replayable: bool,
        extra: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> T:
        """Async :meth:`run_sync`; ``call_timeout`` cancels a slow attempt; ``retry=False``
        makes exactly one attempt."""
        flow: Flow[T] = self.engine.flow(
            self.breaker,
            replayable=replayable,
            describe=self._describer(operation),
            allow_retry=retry,
        )
        span, token = self._start(operation, extra)
        begin = self.engine.clock.monotonic()

        async def one(step: Attempt) -> T:
            if span is not None:
                step.trace = AttemptTrace(span, None, owned=False, per_call=True)
            if step.timeout is None:
                return await attempt()
            async with asyncio.timeout(step.timeout):
                return await attempt()

        try:
            result: T = await run_async(flow, one, _no_discard, self.engine.clock)
        except BaseException as exc:
            self._end(span, token, operation, begin, exc)
            raise
        self._end(span, token, operation, begin, None)
        return result

    # -- telemetry ---------------------------------------------------------------------------
    def _wrap(self, span: Span | None, attempt: Callable[[], T]) -> Callable[[Attempt], T]:
        def one(step: Attempt) -> T:
            if span is not None:
                step.trace = AttemptTrace(span, None, owned=False, per_call=True)
            return attempt()

        return one

    def _describer(self, operation: str) -> Callable[[], CallDescription]:
        system = self.system

        def describe() -> CallDescription:
            # Never the arguments or the query: they may hold credentials or personal data.
            return CallDescription(
                operation=f"{system} {operation}", metadata={"operation": operation}
            )

        return describe

    def _start(
        self, operation: str, extra: dict[str, Any] | None
    ) -> tuple[Span | None, Token[Context] | None]:
        telemetry = self.engine.telemetry
        if telemetry is None or not telemetry.tracing_live() or instrumentation_suppressed():
            return None, None
        attributes = self._attributes(operation)[0]
        if extra:
            attributes = {**attributes, **extra}
        span = telemetry.tracer.start_span(operation, kind=SpanKind.CLIENT, attributes=attributes)
        # Our span is the operation's span: keep the client's own instrumentation quiet below it.
        ctx = context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True, trace.set_span_in_context(span))
        return span, context.attach(ctx)

    def _end(
        self,
        span: Span | None,
        token: Token[Context] | None,
        operation: str,
        begin: float,
        error: BaseException | None,
    ) -> None:
        if token is not None:
            context.detach(token)
        telemetry = self.engine.telemetry
        if telemetry is None or (span is None and not telemetry.metrics_live()):
            return
        metric = self._attributes(operation)[1]
        if isinstance(error, Exception):
            metric = dict(metric)
            if isinstance(error, CircuitOpenError):
                error_type, error_class = "CircuitOpenError", ErrorClass.TRANSIENT.value
            else:
                failure = self.engine.classify(None, error)
                error_type = type(error).__name__ if failure is None else failure.error_type
                error_class = "permanent" if failure is None else failure.error_class.value
            metric[sc.ERROR_TYPE] = error_type
            if span is not None and span.is_recording():
                span.set_attribute(sc.ERROR_TYPE, error_type)
                span.set_attribute(sc.RESILIENCE_ERROR_CLASS, error_class)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, error_type))
        if telemetry.metrics_live():
            telemetry.db_duration.record(self.engine.clock.monotonic() - begin, metric)
        if span is not None:
            span.end()

    def _attributes(self, operation: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Span and metric attributes of ``operation``, built once per operation name
        (names are few: commands or statement keywords). Callers must not modify them."""
        cached = self._operation_attributes.get(operation)
        if cached is None:
            span_attributes = {
                **self._base_attributes,
                sc.DB_OPERATION_NAME: operation,
                sc.RESILIENCE_SERVICE: self.service,
            }
            metric = {**self._base_attributes, sc.DB_OPERATION_NAME: operation}
            metric.pop(sc.DB_NAMESPACE, None)
            cached = (span_attributes, metric)
            if len(self._operation_attributes) < 512:
                self._operation_attributes[operation] = cached
        return cached


def _ignore(value: object) -> None:
    return None
