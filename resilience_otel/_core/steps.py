"""What the retry/breaker flow yields and receives, and the two drivers that run it.

The flow yields :class:`Attempt` (run the operation with this timeout and send back an
:class:`Outcome`) and :class:`Sleep` (wait). It returns a :class:`Final`: the value to return
or the error to raise. Drivers differ only in how they sleep and do I/O, like httpx's
``Auth.auth_flow``. Both treat an attempt that returned after its timeout as timed out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .breaker import BreakerState
from .clock import Clock

if TYPE_CHECKING:
    from .._telemetry.otel import AttemptTrace
    from .classify import FailureKind
    from .deadline import AnyScope, Deadlines

__all__ = [
    "Attempt",
    "CallDescription",
    "Final",
    "First",
    "Flow",
    "OpenBody",
    "Outcome",
    "Sleep",
    "TimedOut",
    "attempt_timed_out",
    "cut_error",
    "run_async",
    "run_sync",
]

T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    """Run attempt ``number`` (from 1) with at most ``timeout`` seconds (``None``: no limit).

    ``breaker_state`` is the breaker's state when the attempt was admitted; a shell that
    traces the attempt puts its span in ``trace`` and the flow ends it once it has decided
    what follows.
    """

    number: int
    timeout: float | None
    breaker_state: BreakerState
    trace: AttemptTrace | None = None
    # Why this attempt is a resend (delay, reason): for spans that could not take the retry
    # event when it was decided (opentelemetry-instrumentation-httpx's had already ended).
    after_retry: tuple[float, FailureKind] | None = None
    # The previous attempt's span, so a resend can link to it (attempts without a parent
    # span would otherwise be unrelated traces).
    previous: AttemptTrace | None = None
    # The previous attempt's failed value, kept through the wait so the call can still end
    # with it if the breaker refuses this attempt; the driver discards it before running.
    discard: Any = None
    # Set by a shell whose value goes on delivering after the attempt (a streamed response
    # body): a success then ends when the body does (see :class:`OpenBody`).
    body: OpenBody | None = None


class OpenBody:
    """A value still delivering after its attempt returned: a streamed response body.

    The shell puts one on :attr:`Attempt.body` before returning the value. If the engine
    accepts the value as the call's success, it sets :attr:`end` instead of finishing the
    call; the shell calls :meth:`ended` once the body is read to its end, closed, or fails.
    A value that failed (say a streamed 503) is accounted for at once and ``end`` stays
    unset, so :meth:`ended` does nothing.
    """

    __slots__ = ("end",)

    def __init__(self) -> None:
        self.end: Callable[[Exception | None], None] | None = None

    def ended(self, error: Exception | None) -> None:
        """The body ended: with ``error``, or cleanly (``None``). Only the first call counts."""
        end, self.end = self.end, None
        if end is not None:
            end(error)


@dataclass(slots=True)
class Sleep(Generic[T]):
    """Discard ``discard`` (a failed value that cannot be kept through the wait, such as an
    unread streamed response holding a connection), then wait ``seconds``."""

    seconds: float
    discard: T | None


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What one attempt produced: a value or an exception, and how long it took."""

    value: T | None
    error: Exception | None
    duration: float


@dataclass(slots=True)
class Final(Generic[T]):
    """How the call ends: return ``value`` unless ``error`` is set, which is raised."""

    value: T | None
    error: BaseException | None


@dataclass(slots=True)
class CallDescription:
    """What a dead letter says about the call; built only when one is recorded."""

    operation: str
    payload: bytes | None = None
    metadata: dict[str, str] | None = None


@dataclass(slots=True)
class First(Generic[T]):
    """An attempt made before the flow started (see :meth:`Engine.call`): the flow goes on
    from its outcome."""

    step: Attempt
    permit: int
    outcome: Outcome[T]
    started: float


Flow = Generator["Attempt | Sleep[T]", "Outcome[T] | None", "Final[T]"]

TimedOut = Callable[[Attempt], Exception]
"""Builds the error of an attempt that overran its timeout (the client's own timeout type)."""


def attempt_timed_out(step: Attempt) -> Exception:
    """The default :data:`TimedOut`: a :class:`TimeoutError` naming the attempt and limit."""
    return TimeoutError(f"attempt {step.number} exceeded call_timeout {step.timeout:.3f}s")


def cut_error(
    scope: AnyScope | None, error: Exception, step: Attempt, timed_out: TimedOut
) -> Exception:
    """The error of an attempt that failed with ``error``: ``timed_out(step)`` (caused by
    ``error``) when ``scope`` cut it at its deadline, else ``error`` itself."""
    if scope is None or not scope.expired:
        return error
    cut = timed_out(step)
    cut.__cause__ = error
    return cut


# -- drivers ---------------------------------------------------------------------------------
def run_sync(
    flow: Flow[T],
    attempt: Callable[[Attempt], T],
    discard: Callable[[T], None],
    clock: Clock,
    timed_out: TimedOut = attempt_timed_out,
) -> T:
    """Drive ``flow`` in this thread: call ``attempt``, close discarded values, sleep.

    An attempt that returns after its timeout fails with ``timed_out(step)``; its value is
    discarded, as if it had been cut at the deadline.
    """
    try:
        step: Attempt | Sleep[T] = next(flow)
        while True:
            if isinstance(step, Attempt):
                if step.discard is not None:
                    discard(step.discard)
                begin = clock.monotonic()
                try:
                    value = attempt(step)
                except Exception as error:
                    result: Outcome[T] = Outcome(None, error, clock.monotonic() - begin)
                else:
                    took = clock.monotonic() - begin
                    if step.timeout is not None and took > step.timeout:
                        discard(value)
                        result = Outcome(None, timed_out(step), took)
                    else:
                        result = Outcome(value, None, took)
                step = flow.send(result)
            else:
                if step.discard is not None:
                    discard(step.discard)
                clock.sleep(step.seconds)
                step = flow.send(None)
    except StopIteration as stop:
        final: Final[T] = stop.value
    finally:
        flow.close()  # on KeyboardInterrupt etc. this releases the breaker permit
    if final.error is not None:
        raise final.error
    return final.value  # type: ignore[return-value]


async def run_async(
    flow: Flow[T],
    attempt: Callable[[Attempt], Awaitable[T]],
    discard: Callable[[T], Awaitable[None]],
    clock: Clock,
    deadlines: Deadlines | None = None,
    timed_out: TimedOut = attempt_timed_out,
) -> T:
    """Drive ``flow`` in a task: await ``attempt``, close discarded values, sleep.

    With ``deadlines``, an attempt still running at its timeout is cancelled and fails with
    ``timed_out(step)``; without, an attempt returning after its timeout fails the same way
    (its value discarded), as :func:`run_sync` does.
    """
    try:
        step: Attempt | Sleep[T] = next(flow)
        while True:
            if isinstance(step, Attempt):
                if step.discard is not None:
                    await discard(step.discard)
                begin = clock.monotonic()
                scope = None
                try:
                    if deadlines is None or step.timeout is None:
                        value = await attempt(step)
                    else:
                        with (scope := deadlines.scope(step.timeout)):
                            value = await attempt(step)
                except Exception as error:
                    error = cut_error(scope, error, step, timed_out)
                    result: Outcome[T] = Outcome(None, error, clock.monotonic() - begin)
                else:
                    took = clock.monotonic() - begin
                    if step.timeout is not None and took > step.timeout:
                        await discard(value)
                        result = Outcome(None, timed_out(step), took)
                    else:
                        result = Outcome(value, None, took)
                step = flow.send(result)
            else:
                if step.discard is not None:
                    await discard(step.discard)
                await clock.asleep(step.seconds)
                step = flow.send(None)
    except StopIteration as stop:
        final: Final[T] = stop.value
    finally:
        flow.close()  # on cancellation this releases the breaker permit
    if final.error is not None:
        raise final.error
    return final.value  # type: ignore[return-value]
