"""Attempt timeouts for asyncio with one timer per event loop instead of one per call.

``asyncio.timeout`` arms and cancels a timer handle for every call (about ten times the cost of
the rest of a fast call's bookkeeping). Most attempts end long before their timeout, so a
:class:`Deadlines` keeps the attempts in flight in a dict and arms a single timer for the
earliest deadline; when it fires, overdue attempts are cancelled and surface as
:class:`TimeoutError`, exactly as with ``asyncio.timeout`` (including the ``uncancel``
bookkeeping that tells our cancellation apart from the caller's).

Under another event loop (trio, through anyio, as httpx supports) a scope is an
``anyio.CancelScope`` with the same contract: the attempt is cancelled at its deadline and
fails with :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from types import TracebackType

__all__ = ["AnyScope", "DeadlineScope", "Deadlines", "ForeignDeadlineScope"]


class _Watch:
    """The attempts in flight on one event loop and the one timer that polices them."""

    __slots__ = ("armed_at", "handle", "in_flight", "loop_ref")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)  # a strong one would keep a finished loop alive
        self.in_flight: set[DeadlineScope] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.armed_at = 0.0

    def arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Fire at ``when`` (time.monotonic) instead of whenever it was set to fire."""
        if self.handle is not None:
            self.handle.cancel()
        self.armed_at = when
        # Deadlines are on time.monotonic (cheaper to read than loop.time(), which need not
        # be the same clock): convert once per arming.
        self.handle = loop.call_later(max(0.0, when - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self.handle = None
        now = time.monotonic()
        earliest: float | None = None
        for scope in list(self.in_flight):
            if scope.deadline <= now:
                self.in_flight.discard(scope)
                scope.expire()
            elif earliest is None or scope.deadline < earliest:
                earliest = scope.deadline
        if earliest is not None:
            self.arm(asyncio.get_running_loop(), earliest)


class DeadlineScope:
    """``with scope:`` around an ``await``: cancels the task at the deadline and turns that
    cancellation into :class:`TimeoutError` (a caller's own cancellation passes through)."""

    __slots__ = ("_cancelling", "_expired", "_loop", "_task", "_watch", "deadline")

    def __init__(self, watch: _Watch, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._watch = watch
        self._loop = loop
        self.deadline = deadline
        self._expired = False
        self._cancelling = 0
        self._task: asyncio.Task[object] | None = None

    def __enter__(self) -> DeadlineScope:
        loop = self._loop
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline scope needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        watch = self._watch
        watch.in_flight.add(self)
        if watch.handle is None or self.deadline < watch.armed_at:
            watch.arm(loop, self.deadline)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._watch.in_flight.discard(self)
        if not self._expired:
            return
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expire(self) -> None:
        """Cancel the task: its deadline has passed."""
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    @property
    def expired(self) -> bool:
        """Whether the deadline passed while the scope was open."""
        return self._expired


class ForeignDeadlineScope:
    """A deadline scope for event loops other than asyncio's (trio), on anyio's cancel scopes:
    one timer per call there, which is what those loops offer."""

    __slots__ = ("_scope",)

    def __init__(self, timeout: float) -> None:
        import anyio  # httpx depends on it; only needed off asyncio

        self._scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)

    def __enter__(self) -> ForeignDeadlineScope:
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._scope.__exit__(exc_type, exc, tb)
        # Reached only when the scope swallowed its own cancellation (or nothing was raised).
        if self._scope.cancelled_caught:
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        """Whether the deadline passed while the scope was open."""
        return bool(self._scope.cancelled_caught)


AnyScope = DeadlineScope | ForeignDeadlineScope
"""What :meth:`Deadlines.scope` hands out."""


class Deadlines:
    """Hands out :class:`DeadlineScope` objects for the running loop (thread-safe: each
    loop has its own watch)."""

    __slots__ = ("_last", "_watches")

    def __init__(self) -> None:
        self._watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = (
            weakref.WeakKeyDictionary()
        )
        # Most programs run one loop: remember it with its watch (one tuple, so threads with
        # loops of their own never see a loop paired with another's watch) and skip the dict.
        # This keeps the last loop used alive, one object, until another takes its place.
        self._last: tuple[asyncio.AbstractEventLoop, _Watch] | None = None

    def scope(self, timeout: float) -> AnyScope:
        """A scope that expires ``timeout`` seconds from now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no asyncio loop in this thread: trio (or another anyio backend)
            return ForeignDeadlineScope(timeout)
        last = self._last
        if last is not None and last[0] is loop:
            watch = last[1]
        else:
            known = self._watches.get(loop)
            watch = known if known is not None else _Watch(loop)
            self._watches[loop] = watch
            self._last = (loop, watch)
        return DeadlineScope(watch, loop, time.monotonic() + timeout)
