"""Breaker state shared by every process through Redis, degrading to local state.

The call path stays local: a closed breaker admits calls from a cached view that is refreshed
at most every ``sync_interval`` (piggy-backing the counts gathered meanwhile); failures are
sent at once so the shared window trips as soon as the threshold is crossed in any mix of
processes. Half-open probe slots are claimed atomically in Redis, so at most
``half_open_max_calls`` probes run across all processes. No lock is held across a call.

When Redis cannot be reached the breaker logs a warning once, counts the fallback and runs on
its local state machine until Redis answers again (checked every ``recheck_interval``). When
Redis answers but refuses the script (an error reply: a key of another type under the prefix,
an ACL without scripting, out of memory) the breaker does the same, but logs at error level
once and counts it in ``refusals``: that is a misconfiguration, not an outage. A cluster that is
failing over (CLUSTERDOWN, TRYAGAIN, a redirect left over, READONLY) counts as unreachable.

All keys of one breaker share the hash tag ``{<breaker name>}``, and the script touches only
the keys it is given, so the store works on Redis Cluster as on a single server.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .._core.breaker import BreakerSnapshot, BreakerState, CircuitBreaker, StateChange
from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.exceptions import CircuitOpenError
from .._core.validate import check_type
from .._telemetry.errortext import error_text
from .lua import BREAKER_LUA, check_store_args, script_call, store_failure

if TYPE_CHECKING:
    import redis

    from .._config.policy import BreakerConfig
    from .async_store import AsyncRedisBreakerStore

__all__ = ["RedisBreakerStore", "SharedCircuitBreaker"]

_log = logging.getLogger("resilience_otel")
_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
_FORCED_OPEN, _FORCED_CLOSED = BreakerState.FORCED_OPEN, BreakerState.FORCED_CLOSED


class RedisBreakerStore:
    """Keeps breaker state in Redis so that all processes guarding one upstream share it.

    Args:
        client: a plain synchronous ``redis.Redis`` or ``redis.cluster.RedisCluster`` for the
            store alone (not one instrumented by this package); give it short timeouts, e.g.
            ``socket_timeout=0.05``: they bound how long a call can wait on Redis before
            falling back to local state. Its own redis-py retries are turned off.
        prefix: key prefix; a breaker's keys are ``{prefix}:{<breaker name>}:s`` (state),
            ``:p`` (probe slots) and ``:w`` (window): one hash slot per breaker.
        sync_interval: how stale a closed breaker's view may get, seconds; 0 (always ask
            Redis) to 3600.
        recheck_interval: after a Redis failure, how long to stay on local state, seconds;
            more than 0, at most 3600.

    Keys expire after ten times the longer of ``monitoring_period`` and ``reset_timeout``
    without activity, so nothing leaks.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "resilience:breaker",
        sync_interval: float = 0.1,
        recheck_interval: float = 1.0,
    ) -> None:
        import redis
        import redis.cluster
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        check_type(
            "RedisBreakerStore(client=...)", client, (redis.Redis, redis.cluster.RedisCluster),
            "a synchronous redis.Redis or redis.cluster.RedisCluster",
        )  # fmt: skip
        self.prefix, self.sync_interval, self.recheck_interval = check_store_args(
            "RedisBreakerStore", prefix, sync_interval, recheck_interval
        )
        # A slow answer here delays calls: fail fast to local state instead of retrying.
        client.set_retry(Retry(NoBackoff(), 0))
        self.client = client
        self._script = client.register_script(BREAKER_LUA)

    def breaker(
        self, config: BreakerConfig, *, name: str, clock: Clock = SYSTEM_CLOCK
    ) -> SharedCircuitBreaker:
        """A breaker named ``name`` whose state lives in this store."""
        return SharedCircuitBreaker(config, name=name, store=self, clock=clock)

    def run(self, config: BreakerConfig, name: str, op: str, *args: str | int) -> list[Any]:
        """Run one atomic step of the shared state machine; returns the resulting view."""
        keys, argv = script_call(self.prefix, config, name, op, args)
        result: list[Any] = self._script(keys=keys, args=argv)
        return result


class SharedCircuitBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` whose state lives in a :class:`RedisBreakerStore` (or an
    ``AsyncRedisBreakerStore``, whose breakers never wait on Redis).

    Same interface; the inherited local state machine serves as the fallback.
    """

    def __init__(
        self,
        config: BreakerConfig,
        *,
        name: str,
        store: RedisBreakerStore | AsyncRedisBreakerStore,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(config, name=name, clock=clock)
        self.store = store
        self.fallbacks = 0
        """How many times Redis failed and the breaker fell back to local state."""
        self.refusals = 0
        """How many of those fallbacks were Redis refusing the script (an error reply)."""
        self._refusal_logged = False
        self._view_lock = threading.Lock()
        self._shared = _CLOSED
        self._shared_gen = 0
        self._open_until = 0.0
        self._busy_until = 0.0
        self._fetched_at = float("-inf")
        self._shared_window = (0, 0, 0)
        self._pending = [0, 0, 0]
        self._degraded_until = float("-inf")
        self._warned = False
        self._probes: dict[int, tuple[str, int]] = {}
        self._counter = itertools.count(1)
        self._token_prefix = f"{os.getpid()}:{id(self):x}:"

    # -- reading -----------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        """Whether the breaker currently runs on local state because Redis failed."""
        return self._clock.monotonic() < self._degraded_until

    @property
    def state(self) -> BreakerState:
        now = self._clock.monotonic()
        if self._local(now):
            return super().state
        if now - self._fetched_at > self.store.sync_interval:
            self._call(now, "sync", *self._take_pending())
        return self._shared

    @property
    def current_state(self) -> BreakerState:
        return super().current_state if self._local(self._clock.monotonic()) else self._shared

    def retry_after(self, now: float | None = None) -> float:
        now = self._clock.monotonic() if now is None else now
        if self._local(now):
            return super().retry_after(now)
        if self._shared is _OPEN:
            return max(0.0, self._open_until - now)
        return self.config.reset_timeout if self._shared is _FORCED_OPEN else 0.0

    def snapshot(self) -> BreakerSnapshot:
        now = self._clock.monotonic()
        if self._local(now) or not self._call(now, "sync", *self._take_pending()):
            return super().snapshot()
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

    def allows_retry(self, now: float) -> bool:
        if self._local(now):
            return super().allows_retry(now)
        if self._shared is _OPEN:
            return now >= self._open_until
        return self._shared is not _FORCED_OPEN

    # -- the call protocol ---------------------------------------------------------------------
    def acquire(self, now: float) -> int:
        if self._local(now):
            return super().acquire(now)
        # Refresh a stale view in every state: an open or forced-open view must also learn of
        # a reset or force_closed made by another process.
        if now - self._fetched_at > self.store.sync_interval:
            self._call(now, "sync", *self._take_pending())
            if self._local(now):
                return super().acquire(now)
        if self._shared is _CLOSED or self._shared is _FORCED_CLOSED:
            return -((self._shared_gen + 1) << 1)
        return self._acquire_probe(now)

    def _acquire_probe(self, now: float) -> int:
        shared = self._shared
        if shared is _FORCED_OPEN:
            raise CircuitOpenError(self.name, self.config.reset_timeout)
        if shared is _OPEN and now < self._open_until:
            raise CircuitOpenError(self.name, self._open_until - now)
        if shared is _HALF_OPEN and now < self._busy_until:
            raise CircuitOpenError(self.name, 0.0)
        number = next(self._counter)
        token = self._token_prefix + str(number)
        view = self._call(now, "probe", token)
        if view is None:
            return super().acquire(now)
        if view[3]:
            permit = -((number << 1) | 1)
            self._probes[permit] = (token, self._shared_gen)
            return permit
        if self._shared is _CLOSED or self._shared is _FORCED_CLOSED:
            return -((self._shared_gen + 1) << 1)
        if self._shared is _HALF_OPEN:
            # Every slot is taken somewhere; ask again after a short while, not on every call.
            self._busy_until = now + min(self.store.sync_interval, self.config.reset_timeout)
        raise CircuitOpenError(self.name, self.retry_after(now))

    def record(
        self, permit: int, *, failure: bool, duration: float, now: float
    ) -> StateChange | None:
        if permit >= 0:
            return super().record(permit, failure=failure, duration=duration, now=now)
        cfg = self.config
        slow = cfg.slow_call_threshold is not None and duration > cfg.slow_call_threshold
        probe = self._probes.pop(permit, None)
        if probe is not None:
            bad = failure or (slow and cfg.slow_call_rate_threshold is not None)
            return self._apply_call(now, "done", probe[0], probe[1], "0" if bad else "1")
        with self._view_lock:
            pending = self._pending
            pending[0] += 1
            pending[1] += int(failure)
            pending[2] += int(slow)
        if failure or slow or now - self._fetched_at > self.store.sync_interval:
            return self._apply_call(now, "sync", *self._take_pending())
        return None

    def release(self, permit: int) -> None:
        if permit >= 0:
            super().release(permit)
            return
        probe = self._probes.pop(permit, None)
        if probe is not None:
            self._call(self._clock.monotonic(), "release", probe[0])

    # -- manual control --------------------------------------------------------------------------
    def force_open(self) -> None:
        self._force(_FORCED_OPEN)

    def force_closed(self) -> None:
        self._force(_FORCED_CLOSED)

    def reset(self) -> None:
        self._force(_CLOSED)

    def _force(self, state: BreakerState) -> None:
        now = self._clock.monotonic()
        if self._call(now, "force", state.value) is None:
            super()._set_by_hand(state)

    # -- talking to Redis ------------------------------------------------------------------------
    def _local(self, now: float) -> bool:
        return now < self._degraded_until

    def _take_pending(self) -> tuple[int, int, int]:
        with self._view_lock:
            calls, failures, slow = self._pending
            self._pending = [0, 0, 0]
        return calls, failures, slow

    def _apply_call(self, now: float, op: str, *args: str | int) -> StateChange | None:
        before = self._shared
        if self._call(now, op, *args, notify=False) is None or self._shared is before:
            return None
        change = StateChange(self.name, before, self._shared, now)
        self._notify(change)
        return change

    def _call(self, now: float, op: str, *args: str | int, notify: bool = True) -> list[Any] | None:
        store = self.store
        assert isinstance(store, RedisBreakerStore)  # the async store's breaker overrides _call
        try:
            view = store.run(self.config, self.name, op, *args)
        except Exception as exc:
            if not self._failed(now, exc):
                raise
            return None
        self._apply_view(now, view, notify)
        return view

    def _failed(self, now: float, error: Exception) -> bool:
        """Fall back to local state after ``error``; ``False`` if it is not a Redis error."""
        kind = store_failure(error)
        if kind == "refused":
            self._refused(now, error)  # type: ignore[arg-type]  # a ResponseError
        elif kind == "unreachable":
            self._degrade(now, error)
        return kind is not None

    def _apply_view(self, now: float, view: list[Any], notify: bool) -> None:
        """Adopt the shared state Redis returned (telling listeners of a change if asked)."""
        self._warned = False
        before = self._shared
        with self._view_lock:
            self._shared = BreakerState(_text(view[0]))
            self._shared_gen = int(view[1])
            self._open_until = now + int(view[2]) / 1000.0
            self._shared_window = (int(view[4]), int(view[5]), int(view[6]))
            self._fetched_at = now
        if notify and self._shared is not before:
            self._notify(StateChange(self.name, before, self._shared, now))

    def _degrade(self, now: float, error: BaseException) -> None:
        self.fallbacks += 1
        self._degraded_until = now + self.store.recheck_interval
        self._fetched_at = float("-inf")
        self._probes.clear()
        if not self._warned:
            self._warned = True
            _log.warning(
                "breaker %r: shared state in Redis unreachable (%s); using local state",
                self.name,
                type(error).__name__,
            )

    def _refused(self, now: float, error: redis.exceptions.ResponseError) -> None:
        self.refusals += 1
        self._warned = True  # not an outage: no "unreachable" warning as well
        self._degrade(now, error)
        if not self._refusal_logged:
            self._refusal_logged = True
            _log.error(
                "breaker %r: Redis refused the shared-state script (%s: %s); using local "
                "state, so this breaker is not shared; check the keys under %r and the "
                "Redis user's permissions",
                self.name,
                type(error).__name__,
                error_text(error)[:200],
                self.store.prefix,
            )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
