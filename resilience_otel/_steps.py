"""What the retry/breaker flow yields and receives, and the two drivers that run it.

The flow yields :class:`Attempt` (run the operation with this timeout and send back an
:class:`Outcome`) and :class:`Sleep` (wait, after discarding the previous result). It returns a
:class:`Final`: the value to return or the error to raise. Drivers differ only in how they
sleep and do I/O, like httpx's ``Auth.auth_flow``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from ._breaker import BreakerState
from ._clock import Clock

if TYPE_CHECKING:
    from ._classify import FailureKind
    from ._deadline import Deadlines
    from ._telemetry import AttemptTrace

__all__ = [
    "Attempt",
    "CallDescription",
    "Final",
    "First",
    "Flow",
    "Outcome",
    "Sleep",
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


@dataclass(slots=True)
class Sleep(Generic[T]):
    """Discard the failed attempt's ``discard`` value (close it), then wait ``seconds``."""

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


# -- drivers ---------------------------------------------------------------------------------
def run_sync(
    flow: Flow[T],
    attempt: Callable[[Attempt], T],
    discard: Callable[[T], None],
    clock: Clock,
) -> T:
    """Drive ``flow`` in this thread: call ``attempt``, close discarded values, sleep."""
    try:
        step: Attempt | Sleep[T] = next(flow)
        while True:
            if isinstance(step, Attempt):
                begin = clock.monotonic()
                try:
                    value = attempt(step)
                except Exception as error:
                    result: Outcome[T] = Outcome(None, error, clock.monotonic() - begin)
                else:
                    result = Outcome(value, None, clock.monotonic() - begin)
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
) -> T:
    """Drive ``flow`` in a task: await ``attempt``, close discarded values, sleep.

    With ``deadlines``, an attempt still running at its timeout is cancelled and fails with
    :class:`TimeoutError`.
    """
    try:
        step: Attempt | Sleep[T] = next(flow)
        while True:
            if isinstance(step, Attempt):
                begin = clock.monotonic()
                try:
                    if deadlines is None or step.timeout is None:
                        value = await attempt(step)
                    else:
                        with deadlines.scope(step.timeout):
                            value = await attempt(step)
                except Exception as error:
                    result: Outcome[T] = Outcome(None, error, clock.monotonic() - begin)
                else:
                    result = Outcome(value, None, clock.monotonic() - begin)
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
