"""The retry/breaker loop, written once as a generator (:meth:`Engine.flow`) and run by the
drivers in ``steps``; :meth:`Engine.call` and :meth:`Engine.acall` make a call's first attempt
themselves and hand over to the flow only after a failure or a rejection.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._deadletters.base import DeadLetterQueue, check_queue
from .._telemetry.errortext import error_text
from .._telemetry.otel import AttemptTrace, MetricsObserver, Telemetry
from .breaker import CircuitBreaker
from .classify import ErrorClass, Failure, FailureKind
from .clock import SYSTEM_CLOCK, Clock
from .deadline import Deadlines
from .exceptions import CircuitOpenError
from .reporting import Reporting
from .retry import RetryBudget, backoff_delay, retry_limits
from .steps import (
    Attempt,
    CallDescription,
    Final,
    First,
    Flow,
    Outcome,
    Sleep,
    TimedOut,
    attempt_timed_out,
    cut_error,
    run_async,
    run_sync,
)

if TYPE_CHECKING:
    from .._config.policy import Policy
    from .._telemetry.events import Observer

__all__ = ["Attempt", "CallDescription", "Classifier", "Engine", "Flow"]

T = TypeVar("T")


Classifier = Callable[[Any, Exception | None], Failure | None]


class Engine(Reporting):
    """Runs calls for one policy: breaker, retries, budget, dead letters and observers.

    Client shells own an engine and translate their outcomes into its terms.

    Args:
        policy: the service's policy.
        client: the ``client`` telemetry label (``http``, ``redis``, ``postgresql``).
        classify: ``(value, error) -> Failure | None``.
        clock: time source (a fake one in tests).
        rng: random source for jitter.
        dead_letters: where failed calls are recorded, if anywhere.
        observers: receive call events.
        describe_value: a short message for a failed *value* outcome (e.g. ``"HTTP 503"``).
        reject_as: turns a :class:`CircuitOpenError` into what the client raises (a subclass
            that is also the client's own error base).
        tracer_provider / meter_provider: OTel providers (default: the global ones); unused
            when ``policy.telemetry`` is off.
        cancel_slow: async attempts slower than their timeout are cancelled and fail with
            :class:`TimeoutError` (for shells whose client has no timeout of its own).
        classify_values: whether a returned value can be a failure (an HTTP 503); when not
            (database clients raise their errors), ``classify`` only ever sees errors.
        timed_out: builds the error of an attempt that overran its timeout (the client's own
            timeout type); an attempt returning late fails with it, never succeeds.
        keeps: whether a failed value may be kept through the wait before a retry (returned
            if the breaker then refuses the retry); others are discarded before the wait.
            Default: every value.
        describe_error: the safe text of a failed attempt's error, for dead letters (the
            client's own scrubber; by default URLs are redacted).
        owner: the public name the client was built by, for argument errors.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        client: str,
        classify: Classifier,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        dead_letters: DeadLetterQueue | None = None,
        observers: Sequence[Observer] = (),
        describe_value: Callable[[Any], str] = repr,
        reject_as: Callable[[CircuitOpenError], BaseException] | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        cancel_slow: bool = False,
        classify_values: bool = True,
        timed_out: TimedOut = attempt_timed_out,
        keeps: Callable[[Any], bool] | None = None,
        describe_error: Callable[[BaseException], str] = error_text,
        owner: str = "Engine",
    ) -> None:
        self.policy = policy
        self.client = client
        self.classify = classify
        self.classify_values = classify_values
        self.clock = clock
        self.rng = rng or random.Random()
        self.dead_letters = check_queue(dead_letters, f"{owner}(dead_letters=...)")
        self.telemetry = (
            Telemetry.get(tracer_provider, meter_provider) if policy.telemetry else None
        )
        if self.telemetry is not None:
            observers = (MetricsObserver(self.telemetry), *observers)
        self.observers = tuple(observers)
        self.describe_value = describe_value
        self.describe_error = describe_error
        self.reject_as = reject_as
        budget = policy.retry.budget
        self.budget = None if budget is None else RetryBudget(budget)
        self.deadlines = Deadlines() if cancel_slow else None
        limits = [
            t for t in (policy.breaker.call_timeout, policy.retry.total_timeout) if t is not None
        ]
        self._first_timeout = min(limits) if limits else None
        # One comparison on the success path: no limit is an infinite one.
        self._first_limit = math.inf if self._first_timeout is None else self._first_timeout
        self.timed_out = timed_out
        self.keeps = keeps

    # -- running a call ----------------------------------------------------------------------
    def call(
        self,
        breaker: CircuitBreaker,
        attempt: Callable[[Attempt], T],
        discard: Callable[[T], None],
        *,
        replayable: bool,
        describe: Callable[[], CallDescription],
        allow_retry: bool = True,
        trace: AttemptTrace | None = None,
    ) -> T:
        """Run one logical call in this thread (arguments as for :meth:`flow`).

        The first attempt runs here; the flow takes over only when the breaker rejects it or
        it fails, so a call that succeeds at once skips the generator's machinery.
        """
        clock = self.clock
        started = clock.monotonic()
        try:
            permit = breaker.acquire(started)
        except CircuitOpenError:
            # The flow ends the call as rejected (dead letter, events) or admits it by then.
            flow: Flow[T] = self.flow(
                breaker, replayable=replayable, describe=describe,
                allow_retry=allow_retry, trace=trace,
            )  # fmt: skip
            return run_sync(flow, attempt, discard, clock, self.timed_out)
        if self.budget is not None:
            self.budget.deposit(started)
        step = Attempt(1, self._first_timeout, breaker.current_state, trace)
        try:
            value = attempt(step)
        except Exception as error:
            outcome: Outcome[T] = Outcome(None, error, clock.monotonic() - started)
        except BaseException as exc:
            self._abandoned(breaker, permit, step, exc)
            raise
        else:
            now = clock.monotonic()
            if now - started > self._first_limit:  # returned, but too late: a timeout
                discard(value)
                outcome = Outcome(None, self.timed_out(step), now - started)
            elif not self.classify_values or self.classify(value, None) is None:
                self._succeeded(breaker, permit, step, now - started, now, started, describe)
                return value
            else:
                outcome = Outcome(value, None, now - started)
        flow = self.flow(
            breaker, replayable=replayable, describe=describe, allow_retry=allow_retry,
            trace=trace, first=First(step, permit, outcome, started),
        )  # fmt: skip
        return run_sync(flow, attempt, discard, clock, self.timed_out)

    async def acall(
        self,
        breaker: CircuitBreaker,
        attempt: Callable[[Attempt], Awaitable[T]],
        discard: Callable[[T], Awaitable[None]],
        *,
        replayable: bool,
        describe: Callable[[], CallDescription],
        allow_retry: bool = True,
        trace: AttemptTrace | None = None,
    ) -> T:
        """:meth:`call` in a task; with ``cancel_slow`` an attempt is cancelled at its timeout."""
        clock = self.clock
        deadlines = self.deadlines
        started = clock.monotonic()
        try:
            permit = breaker.acquire(started)
        except CircuitOpenError:
            flow: Flow[T] = self.flow(
                breaker, replayable=replayable, describe=describe,
                allow_retry=allow_retry, trace=trace,
            )  # fmt: skip
            return await run_async(flow, attempt, discard, clock, deadlines, self.timed_out)
        if self.budget is not None:
            self.budget.deposit(started)
        step = Attempt(1, self._first_timeout, breaker.current_state, trace)
        scope = None
        try:
            if deadlines is None or step.timeout is None:
                value = await attempt(step)
            else:
                with (scope := deadlines.scope(step.timeout)):
                    value = await attempt(step)
        except Exception as error:
            error = cut_error(scope, error, step, self.timed_out)
            outcome: Outcome[T] = Outcome(None, error, clock.monotonic() - started)
        except BaseException as exc:
            self._abandoned(breaker, permit, step, exc)
            raise
        else:
            now = clock.monotonic()
            if now - started > self._first_limit:  # returned, but too late: a timeout
                await discard(value)
                outcome = Outcome(None, self.timed_out(step), now - started)
            elif not self.classify_values or self.classify(value, None) is None:
                self._succeeded(breaker, permit, step, now - started, now, started, describe)
                return value
            else:
                outcome = Outcome(value, None, now - started)
        flow = self.flow(
            breaker, replayable=replayable, describe=describe, allow_retry=allow_retry,
            trace=trace, first=First(step, permit, outcome, started),
        )  # fmt: skip
        return await run_async(flow, attempt, discard, clock, deadlines, self.timed_out)

    # -- the loop --------------------------------------------------------------------------
    def flow(
        self,
        breaker: CircuitBreaker,
        *,
        replayable: bool,
        describe: Callable[[], CallDescription],
        allow_retry: bool = True,
        trace: AttemptTrace | None = None,
        first: First[T] | None = None,
    ) -> Flow[T]:
        """The retry/breaker loop for one logical call.

        Args:
            breaker: the breaker guarding this call.
            replayable: whether the request may be sent again after it reached the upstream
                (idempotent and with a body that can be re-read). Failures that certainly
                happened before sending are retried either way.
            describe: builds the dead letter's description of the call, if one is needed.
            allow_retry: ``False`` allows one attempt only, whatever the failure (a statement inside
                an open transaction cannot be resent on its own).
            trace: the span every attempt reports to (a database operation's one span).
            first: the first attempt, already made: the flow starts from its outcome.

        When the breaker refuses a retry after a failed attempt, the call still ends as that
        failure (its attempts, error class and dead letter): with the last error, or with the
        last value when it was kept through the wait (see ``keeps``); a value that had to be
        discarded before the wait leaves nothing to return, so the refusal is raised.
        """
        policy = self.policy
        retry = policy.retry
        clock = self.clock
        call_timeout = policy.breaker.call_timeout
        started = clock.monotonic() if first is None else first.started
        deadline = None if retry.total_timeout is None else started + retry.total_timeout
        if self.budget is not None and first is None:
            self.budget.deposit(started)
        attempt = 0
        previous_delay = retry.base_delay
        outcome: Outcome[T] | None = None
        failure: Failure | None = None
        scheduled: tuple[float, FailureKind] | None = None
        previous: AttemptTrace | None = None
        kept: T | None = None  # the failed value kept through the wait, if any
        while True:
            attempt += 1
            if first is not None:
                step, permit, outcome = first.step, first.permit, first.outcome
                first = None
            else:
                now = clock.monotonic() if attempt > 1 else started
                try:
                    permit = breaker.acquire(now)
                except CircuitOpenError as rejected:
                    if outcome is None or failure is None:
                        return self._rejected(rejected, started, describe)
                    # The breaker opened during the wait: the call failed with what it did.
                    ended = self._failed(
                        outcome, failure, attempt - 1, started, replayable, describe, allow_retry
                    )
                    if outcome.error is None and kept is None:  # the value is gone (closed)
                        return Final(None, self._refusal(rejected))
                    return ended
                timeout = call_timeout
                if deadline is not None:
                    remaining = deadline - now
                    timeout = remaining if timeout is None else min(timeout, remaining)
                step = Attempt(
                    attempt, timeout, breaker.current_state, trace, scheduled, previous, kept
                )
                kept = None
                try:
                    outcome = yield step
                except BaseException as exc:
                    self._abandoned(breaker, permit, step, exc)
                    raise
            assert outcome is not None
            if outcome.error is None and not self.classify_values:
                failure = None
            else:
                failure = self.classify(outcome.value, outcome.error)
            now = clock.monotonic()
            if failure is None:
                self._succeeded(breaker, permit, step, outcome.duration, now, started, describe)
                return Final(outcome.value, None)
            change = breaker.record(
                permit, failure=failure.counts_as_failure, duration=outcome.duration, now=now
            )
            if failure.error_class is ErrorClass.FAILOVER:
                self._emit("failover", policy.service, self.client, failure.error_type)
            delay = (
                self._next_delay(
                    failure, attempt, replayable, previous_delay, now, deadline, breaker
                )
                if allow_retry
                else None
            )
            scheduled = None if delay is None else (delay, failure.kind)
            previous = step.trace
            self._end_trace(step, outcome.error, failure, outcome.duration, scheduled, change)
            if delay is None:
                break
            self._emit("retry_scheduled", policy.service, self.client, attempt, delay, failure.kind)
            previous_delay = delay
            value = outcome.value
            if value is not None and (self.keeps is None or self.keeps(value)):
                kept, value = value, None
            yield Sleep(delay, value)
        assert outcome is not None
        assert failure is not None
        return self._failed(outcome, failure, attempt, started, replayable, describe, allow_retry)

    def _next_delay(
        self,
        failure: Failure,
        attempt: int,
        replayable: bool,
        previous: float,
        now: float,
        deadline: float | None,
        breaker: CircuitBreaker,
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to stop retrying."""
        retry = self.policy.retry
        if failure.error_class not in retry.retry_on or not (replayable or not failure.sent):
            return None
        if not failure.resendable:
            return None
        max_attempts, base, cap, multiplier = retry_limits(retry, failure)
        if attempt >= max_attempts:
            return None
        if retry.respect_retry_after and failure.retry_after is not None:
            if failure.retry_after > retry.max_retry_after:
                return None
            delay = failure.retry_after
        else:
            delay = backoff_delay(
                retry.jitter,
                attempt - 1,
                base_delay=base,
                max_delay=cap,
                multiplier=multiplier,
                previous=previous,
                rng=self.rng,
            )
        if deadline is not None and now + delay >= deadline:
            return None
        if not breaker.allows_retry(now + delay):
            return None
        if self.budget is not None and not self.budget.try_withdraw(now):
            return None
        return delay
