"""What the Redis and PostgreSQL shells share: an engine, a breaker, and one CLIENT span per
logical operation covering its retries (database semantic conventions)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from contextvars import Token
from typing import Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .._config.policy import Policy
from .._core.breaker import CircuitBreaker
from .._core.classify import ErrorClass
from .._core.clock import Clock
from .._core.engine import Attempt, CallDescription, Classifier, Engine
from .._core.exceptions import CircuitOpenError
from .._core.steps import TimedOut, attempt_timed_out
from .._deadletters.base import DeadLetterQueue
from .._telemetry import semconv as sc
from .._telemetry.errortext import error_code, error_describer, record_error
from .._telemetry.events import Observer
from .._telemetry.otel import (
    SUPPRESS_INSTRUMENTATION_KEY,
    AttemptTrace,
    Telemetry,
    instrumentation_suppressed,
)
from .._telemetry.redact import Redactor

__all__ = ["DbShell", "Operation"]

T = TypeVar("T")

_DEFAULT_PORTS = {"redis": 6379, "postgresql": 5432}


async def _no_discard(value: object) -> None:
    return None


class DbShell:
    """Runs database operations through the engine with one span per operation.

    Args:
        system: ``db.system.name`` (``redis``, ``postgresql``); also the ``client`` label.
        server: ``(address, port)`` of the server, for span and metric attributes.
        namespace: ``db.namespace`` (database name or index), if known.
        timed_out: the error of an attempt that overran its timeout (the client's own type).
        owner: the public function the shell was built by, for argument errors.

    Error texts on spans and in dead letters are scrubbed of the values Redis replies and
    PostgreSQL errors repeat, unless the policy sets ``RedactionConfig.record_error_text``.
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
        timed_out: TimedOut = attempt_timed_out,
        owner: str = "DbShell",
    ) -> None:
        redaction = policy.redaction
        self.describe_error = error_describer(
            Redactor.for_config(redaction), raw=redaction.record_error_text
        )
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
            cancel_slow=True,
            classify_values=False,
            timed_out=timed_out,
            describe_error=self.describe_error,
            owner=owner,
        )
        self.breaker = self.engine.service_breaker(breaker)
        self.system = system
        self.service = policy.service
        attributes: dict[str, Any] = {sc.DB_SYSTEM_NAME: system, sc.SERVER_ADDRESS: server[0]}
        # Semantic conventions ask for the port only when it is not the system's default.
        if server[1] is not None and server[1] != _DEFAULT_PORTS.get(system):
            attributes[sc.SERVER_PORT] = server[1]
        self._metric_base = dict(attributes)
        if namespace is not None:
            attributes[sc.DB_NAMESPACE] = namespace
        self._span_base = attributes
        self._operations: dict[str, Operation] = {}

    # -- running ---------------------------------------------------------------------------
    def run_sync(
        self,
        op: Operation,
        attempt: Callable[[Attempt], T],
        *,
        replayable: bool,
        extra: dict[str, Any] | None = None,
    ) -> T:
        """Run ``attempt`` (re-called on each retry) as the logical operation ``op``."""
        engine = self.engine
        telemetry = engine.telemetry
        if telemetry is None:
            return engine.call(self.breaker, attempt, _ignore, replayable=replayable,
                               describe=op.describe)  # fmt: skip
        span, token = self._start(telemetry, op, extra)
        begin = engine.clock.monotonic()
        try:
            result = engine.call(
                self.breaker, attempt, _ignore, replayable=replayable, describe=op.describe,
                trace=self._trace(span),
            )  # fmt: skip
        except BaseException as exc:
            self._end(telemetry, span, token, op, begin, exc)
            raise
        self._end(telemetry, span, token, op, begin, None)
        return result

    def run_async(
        self,
        op: Operation,
        attempt: Callable[[Attempt], Awaitable[T]],
        *,
        replayable: bool,
        extra: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> Awaitable[T]:
        """Async :meth:`run_sync` (to await); ``call_timeout`` cancels a slow attempt;
        ``retry=False`` makes exactly one attempt."""
        engine = self.engine
        telemetry = engine.telemetry
        if telemetry is None:  # no coroutine of our own around the engine's
            return engine.acall(self.breaker, attempt, _no_discard, replayable=replayable,
                                describe=op.describe, allow_retry=retry)  # fmt: skip
        return self._run_async_traced(telemetry, op, attempt, replayable, extra, retry)

    async def _run_async_traced(
        self,
        telemetry: Telemetry,
        op: Operation,
        attempt: Callable[[Attempt], Awaitable[T]],
        replayable: bool,
        extra: dict[str, Any] | None,
        retry: bool,
    ) -> T:
        engine = self.engine
        span, token = self._start(telemetry, op, extra)
        begin = engine.clock.monotonic()
        try:
            result = await engine.acall(
                self.breaker, attempt, _no_discard, replayable=replayable, describe=op.describe,
                allow_retry=retry,
                trace=self._trace(span),
            )  # fmt: skip
        except BaseException as exc:
            self._end(telemetry, span, token, op, begin, exc)
            raise
        self._end(telemetry, span, token, op, begin, None)
        return result

    # -- telemetry ---------------------------------------------------------------------------
    def _trace(self, span: Span | None) -> AttemptTrace | None:
        """What the attempts of an operation report to: its one span (failures as events)."""
        if span is None:
            return None
        return AttemptTrace(span, None, False, per_call=True, describe=self.describe_error)

    def _start(
        self, telemetry: Telemetry, op: Operation, extra: dict[str, Any] | None
    ) -> tuple[Span | None, Token[Context] | None]:
        if not telemetry.tracing_live() or instrumentation_suppressed():
            return None, None
        attributes = op.span_attributes
        if extra:
            attributes = {**attributes, **extra}
        span = telemetry.tracer.start_span(op.name, kind=SpanKind.CLIENT, attributes=attributes)
        # Our span is the operation's span: keep the client's own instrumentation quiet below it.
        ctx = context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True, trace.set_span_in_context(span))
        return span, context.attach(ctx)

    def _end(
        self,
        telemetry: Telemetry,
        span: Span | None,
        token: Token[Context] | None,
        op: Operation,
        begin: float,
        error: BaseException | None,
    ) -> None:
        metrics_live = telemetry.metrics_live()
        if span is not None or metrics_live:
            metric = op.metric_attributes
            if isinstance(error, Exception):
                error_type, error_class = self._describe_error(error)
                metric = {**metric, sc.ERROR_TYPE: error_type}
                if span is not None and span.is_recording():
                    self._label_failed(span, error, error_type, error_class)
            if metrics_live:
                # Recorded while the operation's span is current, so the SDK can attach it
                # as the measurement's exemplar (as the resilience metrics get it).
                telemetry.db_duration.record(self.engine.clock.monotonic() - begin, metric)
        if token is not None:
            context.detach(token)
        if span is not None:
            span.end()

    def _label_failed(
        self, span: Span, error: Exception, error_type: str, error_class: str
    ) -> None:
        """Error attributes, a safe ``exception`` event and an ERROR status naming the type
        only: the raw text of a database error repeats the values it was given."""
        attributes = {sc.ERROR_TYPE: error_type, sc.RESILIENCE_ERROR_CLASS: error_class}
        code = error_code(error)
        if code is not None:
            attributes[sc.DB_RESPONSE_STATUS_CODE] = code
        span.set_attributes(attributes)
        record_error(span, error, self.describe_error)
        span.set_status(Status(StatusCode.ERROR, error_type))

    def _describe_error(self, error: Exception) -> tuple[str, str]:
        """``error.type`` and error class of the error an operation ended with."""
        if isinstance(error, CircuitOpenError):
            return "CircuitOpenError", ErrorClass.TRANSIENT.value
        failure = self.engine.classify(None, error)
        if failure is None:
            return type(error).__name__, ErrorClass.PERMANENT.value
        return failure.error_type, failure.error_class.value

    def operation(self, name: str) -> Operation:
        """What an operation's spans, metrics and dead letters say, built once per name
        (names are few: commands or statement keywords)."""
        op = self._operations.get(name)
        if op is None:
            op = Operation(self.system, name, self._span_base, self._metric_base, self.service)
            if len(self._operations) < 512:
                self._operations[name] = op
        return op


class Operation:
    """Span and metric attributes and the dead-letter description of one operation name.
    Shared between calls: never modified after construction."""

    __slots__ = ("description", "metric_attributes", "name", "span_attributes")

    def __init__(
        self,
        system: str,
        name: str,
        span_base: dict[str, Any],
        metric_base: dict[str, Any],
        service: str,
    ) -> None:
        self.name = name
        self.span_attributes = {
            **span_base,
            sc.DB_OPERATION_NAME: name,
            sc.RESILIENCE_SERVICE: service,
        }
        self.metric_attributes = {**metric_base, sc.DB_OPERATION_NAME: name}
        # Never the arguments or the query: they may hold credentials or personal data.
        self.description = CallDescription(
            operation=f"{system} {name}", metadata={"operation": name}
        )

    def describe(self) -> CallDescription:
        return self.description


def _ignore(value: object) -> None:
    return None
