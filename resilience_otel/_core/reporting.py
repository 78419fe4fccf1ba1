"""How the engine accounts for a call once it ends: the breaker's record, the attempt's span,
observer events (hence metrics and health) and dead letters.

:class:`Reporting` is the half of :class:`~resilience_otel._engine.Engine` that decides
nothing: the engine's loop decides what happens next and calls these methods to say what
happened. It also ends calls whose success was a streamed body (see :meth:`_succeeded`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace

from .._deadletters.base import DeadLetter, DeadLetterQueue, DeadLetterReason
from .._telemetry.otel import MetricsObserver, Telemetry, finish_attempt
from .breaker import BreakerState, CircuitBreaker, StateChange
from .classify import ErrorClass, Failure, FailureKind
from .exceptions import CircuitOpenError, exhausted_error
from .steps import Attempt, CallDescription, Final, OpenBody, Outcome

if TYPE_CHECKING:
    from .._config.policy import Policy
    from .._telemetry.events import Observer
    from .clock import Clock

__all__ = ["Reporting"]

T = TypeVar("T")
_log = logging.getLogger("resilience_otel")


class Reporting:
    """Breaker records, spans, events and dead letters for the engine's calls."""

    policy: Policy
    client: str
    clock: Clock
    classify: Callable[[Any, Exception | None], Failure | None]
    telemetry: Telemetry | None
    observers: tuple[Observer, ...]
    dead_letters: DeadLetterQueue | None
    describe_value: Callable[[Any], str]
    describe_error: Callable[[BaseException], str]
    reject_as: Callable[[CircuitOpenError], BaseException] | None

    # -- breakers --------------------------------------------------------------------------
    def service_breaker(self, given: CircuitBreaker | None) -> CircuitBreaker:
        """The breaker a client of this policy uses: ``given`` (shared), else a new one."""
        return self.new_breaker(self.policy.service) if given is None else self.adopt_breaker(given)

    def new_breaker(self, name: str) -> CircuitBreaker:
        """A breaker for this policy whose transitions reach the observers."""
        return self.adopt_breaker(CircuitBreaker(self.policy.breaker, name=name, clock=self.clock))

    def adopt_breaker(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Report ``breaker``'s transitions to the observers and its state in the metrics.

        A breaker shared by several clients is reported once per observer (and once per
        telemetry pipeline), so sharing it does not double its gauge or its transitions.
        """
        service = self.policy.service
        if self.telemetry is not None:
            self.telemetry.watch_breaker(service, breaker)
        for observer in self.observers:
            # Every client makes its own MetricsObserver; they share the Telemetry object.
            key = id(observer.telemetry) if isinstance(observer, MetricsObserver) else id(observer)
            if not breaker.claim_forwarding(key):
                continue
            self._notify_observer(observer, "breaker_added", service, breaker)
            breaker.add_listener(partial(self._forward_change, observer, service))
        return breaker

    def _forward_change(self, observer: Observer, service: str, change: StateChange) -> None:
        self._notify_observer(observer, "state_changed", service, change)

    # -- attempts --------------------------------------------------------------------------
    def _succeeded(
        self,
        breaker: CircuitBreaker,
        permit: int,
        step: Attempt,
        duration: float,
        now: float,
        started: float,
        describe: Callable[[], CallDescription],
    ) -> None:
        """Account for a successful attempt (the call ends with its value).

        A value whose body the caller reads later (``step.body``) ends the call when the
        body ends: see :meth:`_await_body`.
        """
        if step.body is not None:
            self._await_body(step.body, breaker, permit, step, duration, now, started, describe)
            return
        change = breaker.record(permit, failure=False, duration=duration, now=now)
        if step.trace is not None:
            self._end_trace(step, None, None, duration, None, change)
        if self.observers:
            self._finished("success", None, step.number, now - started)

    def _abandoned(
        self, breaker: CircuitBreaker, permit: int, step: Attempt, exc: BaseException
    ) -> None:
        """An attempt was cancelled or interrupted: not the upstream's fault."""
        breaker.release(permit)
        self._end_trace(step, exc, None, 0.0, None, None)

    def _end_trace(
        self,
        step: Attempt,
        error: BaseException | None,
        failure: Failure | None,
        duration: float,
        retry: tuple[float, FailureKind] | None,
        change: StateChange | None,
    ) -> None:
        if step.trace is None or self.telemetry is None:
            return
        finish_attempt(
            self.telemetry,
            step.trace,
            attempt=step.number,
            error=error,
            failure=failure,
            duration=duration,
            retry=retry,
            change=change,
        )

    # -- streamed bodies -------------------------------------------------------------------
    def _await_body(
        self,
        body: OpenBody,
        breaker: CircuitBreaker,
        permit: int,
        step: Attempt,
        duration: float,
        now: float,
        started: float,
        describe: Callable[[], CallDescription],
    ) -> None:
        """A successful head whose body is still to come: end the call when the body ends.

        The call's outcome (``resilience_calls_total``, the observers' ``call_finished``,
        the span's status and end, a dead letter) waits for the body, so a stream failing
        midway counts once, as a failure. Durations stay those of the head: a stream may
        last for hours, and its length says nothing about the upstream's latency.

        The breaker's record waits too, holding a closed breaker's permit (which costs
        nothing and reserves nothing), so the stream is one call in its window. A half-open
        probe is recorded at the head instead: holding its slot for an endless stream would
        keep the breaker half-open, refusing other calls, for as long as the stream lasts; a
        body failing after that is then recorded as a failure of its own, if the breaker
        admits one (:meth:`_late_failure`).
        """
        held: int | None = permit
        if step.breaker_state is BreakerState.HALF_OPEN:
            breaker.record(permit, failure=False, duration=duration, now=now)
            held = None
        body.end = partial(
            self._body_ended, breaker, held, step, duration, now - started, describe, started
        )

    def _body_ended(
        self,
        breaker: CircuitBreaker,
        permit: int | None,
        step: Attempt,
        duration: float,
        took: float,
        describe: Callable[[], CallDescription],
        started: float,
        error: Exception | None,
    ) -> None:
        now = self.clock.monotonic()
        failure = None if error is None else self.classify(None, error)
        counts = failure is not None and failure.counts_as_failure
        change = None
        if permit is not None:
            change = breaker.record(permit, failure=counts, duration=duration, now=now)
        elif counts:
            change = self._late_failure(breaker, duration, now)
        self._end_trace(step, error, failure, duration, None, change)
        if failure is None:
            self._finished("success", None, step.number, took)
            return
        self._finished("failure", failure.error_class, step.number, took)
        assert error is not None
        self._letter(Outcome(None, error, duration), failure, step.number, started, describe)

    @staticmethod
    def _late_failure(breaker: CircuitBreaker, duration: float, now: float) -> StateChange | None:
        """Record a failure that came after its call's permit was spent (a streamed body of a
        half-open probe): as a call of its own, or not at all if the breaker admits none."""
        try:
            permit = breaker.acquire(now)
        except CircuitOpenError:
            return None  # open (nothing to add) or its probe slots are busy (they decide)
        return breaker.record(permit, failure=True, duration=duration, now=now)

    # -- endings -----------------------------------------------------------------------------
    def _rejected(
        self, rejected: CircuitOpenError, started: float, describe: Callable[[], CallDescription]
    ) -> Final[T]:
        service = self.policy.service
        self._emit("call_rejected", service, self.client, rejected.retry_after)
        self._finished("rejected", None, 0, 0.0)
        if DeadLetterReason.CIRCUIT_OPEN in self.policy.dead_letter_on:
            self._dead_letter(
                DeadLetterReason.CIRCUIT_OPEN,
                describe,
                error_class=ErrorClass.TRANSIENT.value,
                error_type="CircuitOpenError",
                message=str(rejected),
                attempts=0,
                started=started,
            )
        return Final(None, self._refusal(rejected))

    def _refusal(self, rejected: CircuitOpenError) -> BaseException:
        return rejected if self.reject_as is None else self.reject_as(rejected)

    def _failed(
        self,
        outcome: Outcome[T],
        failure: Failure,
        attempt: int,
        started: float,
        replayable: bool,
        describe: Callable[[], CallDescription],
        allow_retry: bool,
    ) -> Final[T]:
        service = self.policy.service
        self._finished("failure", failure.error_class, attempt, self.clock.monotonic() - started)
        # "Exhausted" only when retrying was possible at all for this call and failure.
        retryable = (
            allow_retry
            and failure.error_class in self.policy.retry.retry_on
            and (replayable or not failure.sent)
            and failure.resendable
        )
        if retryable:
            self._emit("retries_exhausted", service, self.client, attempt)
        self._letter(outcome, failure, attempt, started, describe)
        error = outcome.error
        if error is None:
            return Final(outcome.value, None)
        if retryable and attempt > 1:  # without a resend the caller gets its own error back
            exhausted = exhausted_error(error, service=service, attempts=attempt)
            exhausted.__cause__ = error
            return Final(None, exhausted)
        return Final(None, error)

    def _letter(
        self,
        outcome: Outcome[Any],
        failure: Failure,
        attempts: int,
        started: float,
        describe: Callable[[], CallDescription],
    ) -> None:
        """Dead-letter a failed call if the policy asks for its reason."""
        if failure.error_class is ErrorClass.CRITICAL:
            reason = DeadLetterReason.CRITICAL
        elif failure.error_class is ErrorClass.PERMANENT:
            reason = DeadLetterReason.PERMANENT
        else:
            reason = DeadLetterReason.RETRIES_EXHAUSTED
        if reason not in self.policy.dead_letter_on:
            return
        if outcome.error is not None:
            error_message = self.describe_error(outcome.error)
            message = f"{type(outcome.error).__name__}: {error_message}"
        else:
            message = self.describe_value(outcome.value)
        self._dead_letter(
            reason,
            describe,
            error_class=failure.error_class.value,
            error_type=failure.error_type,
            message=message,
            attempts=attempts,
            started=started,
        )

    def _finished(
        self, outcome: str, error_class: ErrorClass | None, attempts: int, duration: float
    ) -> None:
        if self.observers:
            self._emit(
                "call_finished",
                self.policy.service,
                self.client,
                outcome,
                error_class,
                attempts,
                duration,
            )

    def _dead_letter(
        self,
        reason: DeadLetterReason,
        describe: Callable[[], CallDescription],
        *,
        error_class: str,
        error_type: str,
        message: str,
        attempts: int,
        started: float,
    ) -> None:
        queue = self.dead_letters
        if queue is None:
            return
        from .._telemetry.redact import redact_text

        description = describe()
        clock = self.clock
        wall_now = clock.time()
        span_context = trace.get_current_span().get_span_context()
        letter = DeadLetter(
            service=self.policy.service,
            operation=description.operation,
            reason=reason,
            error_class=error_class,
            error_type=error_type,
            message=redact_text(message)[:500],
            attempts=attempts,
            first_attempt_at=wall_now - (clock.monotonic() - started),
            failed_at=wall_now,
            trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else None,
            payload=description.payload,
            metadata=description.metadata or {},
            id=uuid.uuid4().hex,
        )
        dropped = queue.put(letter)
        self._emit("dead_lettered", letter)
        if dropped is not None:
            self._emit("dead_letter_dropped", dropped.service)

    # -- observers ---------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        for observer in self.observers:
            self._notify_observer(observer, hook, *args)

    @staticmethod
    def _notify_observer(observer: Observer, hook: str, *args: Any) -> None:
        try:
            getattr(observer, hook)(*args)
        except Exception:
            _log.exception("observer %r failed in %s", observer, hook)
