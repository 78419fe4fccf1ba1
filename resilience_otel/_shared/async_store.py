"""Breaker state shared through Redis from asyncio code, without ever waiting on Redis.

:class:`AsyncRedisBreakerStore` keeps the same keys and runs the same script as the sync
store, through a ``redis.asyncio`` client. Its breakers decide every call from their cached
view, like a closed sync breaker between syncs; each step the sync store would run inline
(a refresh, the counts and failures to add, a probe claim, its result, a forced state) is
scheduled as a task on the running event loop instead, and its reply adopted when it comes.
Steps of one breaker are coalesced: while a sync is in flight, new counts wait for the next.

Three things follow. A new breaker admits calls as closed until its first view arrives (one
round trip). A half-open probe slot is claimed in Redis before a call may use it: the
first call that finds the reset timeout over schedules the claim and is refused with
``retry_after=0``; the next call runs as the probe once the claim was granted (at most
``half_open_max_calls`` across all processes, as with the sync store). And a state change
reported by Redis reaches the breaker's listeners (metrics, health) when the reply arrives,
not as the return value of the call that caused it.

Fallback is as for the sync store: when Redis cannot be reached the breaker warns once and runs
on its local state machine for ``recheck_interval``; an error reply is logged once as a
misconfiguration and counted in ``refusals``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core.breaker import BreakerSnapshot, BreakerState, StateChange
from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.exceptions import CircuitOpenError
from .._core.validate import check_type
from .breaker_store import SharedCircuitBreaker
from .lua import BREAKER_LUA, check_store_args, probe_ttl, script_call

if TYPE_CHECKING:
    import redis.asyncio
    import redis.asyncio.cluster

    from .._config.policy import BreakerConfig

__all__ = ["AsyncRedisBreakerStore"]

_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN


class AsyncRedisBreakerStore:
    """Keeps breaker state in Redis, like :class:`RedisBreakerStore`, for asyncio services:
    state syncs run as tasks on the event loop, so no call waits on Redis.

    Args:
        client: a plain ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster`` for
            the store alone (not one instrumented by this package); give it short timeouts
            (``socket_timeout=0.05``): they bound how long a breaker's view may lag before it
            falls back to local state. Its own redis-py retries are turned off.
        prefix: key prefix; the keys are the sync store's, so sync and async processes can
            share one breaker.
        sync_interval: how stale a closed breaker's view may get, seconds; 0 (refresh after
            every call) to 3600.
        recheck_interval: after a Redis failure, how long to stay on local state, seconds;
            more than 0, at most 3600.

    Breakers must be used from one event loop (the loop their first call runs on).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        prefix: str = "resilience:breaker",
        sync_interval: float = 0.1,
        recheck_interval: float = 1.0,
    ) -> None:
        import redis.asyncio
        import redis.asyncio.cluster
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        check_type(
            "AsyncRedisBreakerStore(client=...)", client,
            (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster),
            "a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster",
        )  # fmt: skip
        self.prefix, self.sync_interval, self.recheck_interval = check_store_args(
            "AsyncRedisBreakerStore", prefix, sync_interval, recheck_interval
        )
        # A slow answer here delays the view: fail fast to local state instead of retrying.
        client.set_retry(Retry(NoBackoff(), 0))
        self.client = client
        self._script = client.register_script(BREAKER_LUA)
        self._tasks: set[asyncio.Task[None]] = set()

    def breaker(
        self, config: BreakerConfig, *, name: str, clock: Clock = SYSTEM_CLOCK
    ) -> SharedCircuitBreaker:
        """A breaker named ``name`` whose state lives in this store (use it from async code)."""
        return _AsyncSharedCircuitBreaker(config, name=name, store=self, clock=clock)

    async def run(self, config: BreakerConfig, name: str, op: str, *args: str | int) -> list[Any]:
        """Run one atomic step of the shared state machine; returns the resulting view."""
        keys, argv = script_call(self.prefix, config, name, op, args)
        result: list[Any] = await self._script(keys=keys, args=argv)
        return result

    async def flush(self) -> None:
        """Wait until every step scheduled so far (and those they schedule) has finished."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def schedule(self, step: Callable[[], Any]) -> bool:
        """Run coroutine function ``step`` as a task on the running loop; ``False`` when no
        loop runs in this thread."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        task = loop.create_task(step())
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return True


class _AsyncSharedCircuitBreaker(SharedCircuitBreaker):
    """A :class:`SharedCircuitBreaker` whose Redis steps run as tasks (module docstring)."""

    store: AsyncRedisBreakerStore

    def __init__(
        self,
        config: BreakerConfig,
        *,
        name: str,
        store: AsyncRedisBreakerStore,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(config, name=name, store=store, clock=clock)
        self._syncing = False
        self._resync = False
        self._claiming = False
        self._ready: tuple[int, str, int, float] | None = None  # number, token, gen, claimed at

    # -- the steps, scheduled --------------------------------------------------------------------
    def _call(self, now: float, op: str, *args: str | int, notify: bool = True) -> list[Any] | None:
        """Schedule ``op``; never waits. Its view is adopted (listeners told) on reply."""
        if op == "sync":
            if self._syncing:  # one sync in flight: its successor takes these counts
                self._give_back(args)
                self._resync = True
                return None
            self._syncing = True
        self._submit(op, args)
        return None

    def _submit(
        self,
        op: str,
        args: tuple[str | int, ...],
        on_view: Callable[[list[Any]], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        async def step() -> None:
            try:
                view = await self.store.run(self.config, self.name, op, *args)
            except Exception as exc:
                if not self._failed(self._clock.monotonic(), exc):
                    raise
                if on_failure is not None:
                    on_failure()
            else:
                self._apply_view(self._clock.monotonic(), view, True)
                if on_view is not None:
                    on_view(view)
            finally:
                if op == "sync":
                    self._synced()

        if not self.store.schedule(step):  # no event loop here: nothing can reach Redis
            self._degrade(self._clock.monotonic(), RuntimeError("no running event loop"))
            if op == "sync":
                self._synced()
            if on_failure is not None:
                on_failure()

    def _synced(self) -> None:
        self._syncing = False
        if self._resync and not self._local(self._clock.monotonic()):
            self._resync = False
            self._call(self._clock.monotonic(), "sync", *self._take_pending())

    def _give_back(self, counts: tuple[str | int, ...]) -> None:
        with self._view_lock:
            for index, value in enumerate(counts[:3]):
                self._pending[index] += int(value)

    # -- what needs a reply: probes, forced states, snapshots -----------------------------------
    def _acquire_probe(self, now: float) -> int:
        shared = self._shared
        if shared is _FORCED_OPEN:
            raise CircuitOpenError(self.name, self.config.reset_timeout)
        if shared is _OPEN and now < self._open_until:
            raise CircuitOpenError(self.name, self._open_until - now)
        if shared is _HALF_OPEN and now < self._busy_until:
            raise CircuitOpenError(self.name, 0.0)
        ready, self._ready = self._ready, None
        # A slot not used within half its time in Redis may expire under us: claim anew.
        if ready is not None and now - ready[3] < probe_ttl(self.config) / 2:
            number, token, generation, _ = ready
            permit = -((number << 1) | 1)
            self._probes[permit] = (token, generation)
            return permit
        if not self._claiming:
            self._claim(now)
        raise CircuitOpenError(self.name, 0.0)

    def _claim(self, now: float) -> None:
        number = next(self._counter)
        token = self._token_prefix + str(number)
        self._claiming = True

        def granted(view: list[Any]) -> None:
            self._claiming = False
            if view[3]:
                self._ready = (number, token, self._shared_gen, self._clock.monotonic())
            elif self._shared is _HALF_OPEN:
                # Every slot is taken somewhere; ask again after a short while.
                wait = min(self.store.sync_interval, self.config.reset_timeout)
                self._busy_until = self._clock.monotonic() + wait

        def failed() -> None:
            self._claiming = False

        self._submit("probe", (token,), granted, failed)

    def _force(self, state: BreakerState) -> None:
        def fallback() -> None:
            self._set_by_hand(state)  # the local state machine's own manual control

        self._submit("force", (state.value,), on_failure=fallback)

    def snapshot(self) -> BreakerSnapshot:
        now = self._clock.monotonic()
        if self._local(now):
            return super(SharedCircuitBreaker, self).snapshot()
        if now - self._fetched_at > self.store.sync_interval:
            self._call(now, "sync", *self._take_pending())
        calls, failures, slow = self._shared_window
        return BreakerSnapshot(
            name=self.name,
            state=self._shared,
            calls=calls,
            failures=failures,
            slow_calls=slow,
            half_open_in_flight=len(self._probes),
            retry_after=self.retry_after(now),
        )

    def _degrade(self, now: float, error: BaseException) -> None:
        self._ready = None
        self._claiming = False
        super()._degrade(now, error)

    def _apply_call(self, now: float, op: str, *args: str | int) -> StateChange | None:
        self._call(now, op, *args)  # the change, if any, reaches listeners on reply
        return None
