"""The shell bound to one instrumented Redis client: names commands, decides replayability,
and runs blocking commands and single-attempt operations with the right limits.

A blocking command (``BLPOP k 2``) runs through a variant of the client's shell whose engine
sets no timeout of its own; its attempt bounds itself by the command's block time plus the
policy's attempt timeout (``math.inf`` blocks are not bounded by us). Operations that may
make one attempt only (commands while a pipeline WATCHes, pub/sub reconnects) run through a
variant with ``max_attempts=1``. Variants share the client's breaker and retry budget.

After a failure its classifier calls FAILOVER (the node is no longer the primary), the
connection that got it is disconnected, and so is every idle connection of the client's pool
(they lead to the same node): the next attempt connects afresh, through a new DNS resolution
or Sentinel's discovery, to the new primary. Connections other threads or tasks are using are
left alone; they retire when they meet the failover themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..._config.policy import Policy
from ..._core.breaker import CircuitBreaker
from ..._core.classify import is_failover
from ..._core.engine import Attempt
from ..dbshell import DbShell, Operation
from .blocking import BlockTime, block_parser
from .deadline import blocking_timed_out, run_until
from .retry import single_try

__all__ = [
    "READ_ONLY_COMMANDS",
    "Guard",
    "command_name",
    "idempotent",
    "idempotent_block",
    "in_single_try",
    "in_single_try_async",
    "retiring_async",
    "retiring_sync",
]

T = TypeVar("T")
_log = logging.getLogger("resilience_otel")

READ_ONLY_COMMANDS: frozenset[str] = frozenset(
    """
    BITCOUNT BITPOS DBSIZE DUMP ECHO EXISTS EXPIRETIME GEODIST GEOHASH GEOPOS GEORADIUS_RO
    GEORADIUSBYMEMBER_RO GEOSEARCH GET GETBIT GETRANGE HEXISTS HGET HGETALL HKEYS HLEN HMGET
    HRANDFIELD HSCAN HSTRLEN HVALS INFO KEYS LCS LINDEX LLEN LPOS LRANGE MGET OBJECT PEXPIRETIME
    PFCOUNT PING PTTL RANDOMKEY SCAN SCARD SDIFF SINTER SINTERCARD SISMEMBER SMEMBERS SMISMEMBER
    SRANDMEMBER SSCAN STRLEN SUBSTR SUNION TIME TOUCH TTL TYPE XINFO XLEN XPENDING XRANGE
    XREVRANGE ZCARD ZCOUNT ZDIFF ZINTER ZINTERCARD ZLEXCOUNT ZMSCORE ZRANDMEMBER ZRANGE
    ZRANGEBYLEX ZRANGEBYSCORE ZRANK ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN
    ZSCORE ZUNION EVALSHA_RO EVAL_RO FCALL_RO
    """.split()  # noqa: SIM905 (a word list reads better than 90 quoted strings)
)
"""Commands that never change data; they are always safe to resend."""

idempotent_block: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "resilience_otel_redis_idempotent", default=False
)


@contextlib.contextmanager
def idempotent() -> Iterator[None]:
    """Mark every command issued inside the block as safe to resend (e.g. ``SET k v``)."""
    token = idempotent_block.set(True)
    try:
        yield
    finally:
        idempotent_block.reset(token)


def command_name(args: tuple[Any, ...]) -> str:
    """The command's name from its first argument, upper case and bounded (a label value)."""
    if not args:
        return "UNKNOWN"
    first = args[0]
    name = first.decode("ascii", "replace") if isinstance(first, bytes) else str(first)
    # Bounded label values: command names only, never arguments.
    return name.split(" ", 1)[0].upper()[:32]


def in_single_try(call: Callable[..., T]) -> Callable[..., T]:
    """``call`` with redis-py's retry making one try (our layer retries)."""

    def run(*args: Any, **kwargs: Any) -> T:
        token = single_try.set(True)
        try:
            return call(*args, **kwargs)
        finally:
            single_try.reset(token)

    return run


def in_single_try_async(call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """:func:`in_single_try` for coroutine functions."""

    async def run(*args: Any, **kwargs: Any) -> T:
        token = single_try.set(True)
        try:
            return await call(*args, **kwargs)
        finally:
            single_try.reset(token)

    return run


def retiring_sync(call: Callable[..., T], guard: Guard, holder: Any) -> Callable[..., T]:
    """``call`` (a method of ``holder``: a pub/sub) retiring connections after a failover.
    Sync commands of clients and pipelines retire at the connection seam instead."""

    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            guard.retire_sync(holder, error)
            raise

    return run


def retiring_async(
    call: Callable[..., Awaitable[T]], guard: Guard, holder: Any, *, single: bool
) -> Callable[..., Awaitable[T]]:
    """``call`` (a method of ``holder``: a ``redis.asyncio`` client, pipeline or pub/sub)
    retiring connections after a failover, and with redis-py's retry making one try when
    ``single`` (one coroutine layer for both: it runs on every command)."""

    async def run(*args: Any, **kwargs: Any) -> T:
        token = single_try.set(True) if single else None
        try:
            return await call(*args, **kwargs)
        except Exception as error:
            await guard.retire_async(holder, error)
            raise
        finally:
            if token is not None:
                single_try.reset(token)

    return run


Command = tuple[Operation, bool, BlockTime | None]
"""A command's operation, whether its name makes it safe to resend, and its block reader."""


class Guard:
    """The shell bound to one client (see the module docstring).

    Args:
        policy: the client's effective policy.
        make_shell: builds a shell for a policy, guarded by the breaker given (``None``: the
            client's own breaker, for the first shell).
        idempotent_commands: write commands the user marked safe to resend.
        single_try: redis-py's retry makes one try inside our attempts (ours retries).
    """

    _MAX_NAMES = 1024

    def __init__(
        self,
        policy: Policy,
        make_shell: Callable[[Policy, CircuitBreaker | None], DbShell],
        idempotent_commands: frozenset[str],
        *,
        single_try: bool,
    ) -> None:
        self.policy = policy
        self._make_shell = make_shell
        self.shell = make_shell(policy, None)
        self.safe = READ_ONLY_COMMANDS | idempotent_commands
        self.single_try = single_try
        limits = [t for t in (policy.breaker.call_timeout, policy.retry.total_timeout) if t]
        self.attempt_timeout = min(limits) if limits else None
        # args[0] -> Command; bounded
        self.commands: dict[str | bytes, Command] = {}
        self._variants: dict[tuple[bool, bool], DbShell] = {}

    # -- naming ------------------------------------------------------------------------------
    def command(self, args: tuple[Any, ...]) -> Command:
        """The command's :data:`Command`, looked up once per spelling of the command."""
        first = args[0] if args else None
        if not isinstance(first, str | bytes):
            return self._describe(args)
        known = self.commands.get(first)
        if known is None:
            known = self._describe(args)
            if len(self.commands) < self._MAX_NAMES:
                self.commands[first] = known
        return known

    def _describe(self, args: tuple[Any, ...]) -> Command:
        name = command_name(args)
        return self.shell.operation(name), name in self.safe, block_parser(name)

    def all_replayable(self, names: Iterable[str]) -> bool:
        """Whether a batch of commands may be resent as a whole."""
        return idempotent_block.get() or all(name in self.safe for name in names)

    # -- variants ----------------------------------------------------------------------------
    def variant(self, *, unbounded: bool = False, once: bool = False) -> DbShell:
        """The client's shell without engine timeouts (``unbounded``: the attempt bounds
        itself) and/or making one attempt only (``once``); built on first use."""
        if not (unbounded or once):
            return self.shell
        key = (unbounded, once)
        shell = self._variants.get(key)
        if shell is None:
            policy = self.policy
            if unbounded:
                breaker = dataclasses.replace(policy.breaker, call_timeout=None)
                retry = dataclasses.replace(policy.retry, total_timeout=None)
                policy = dataclasses.replace(policy, breaker=breaker, retry=retry)
            if once:
                retry = dataclasses.replace(policy.retry, max_attempts=1)
                policy = dataclasses.replace(policy, retry=retry)
            shell = self._make_shell(policy, self.shell.breaker)
            shell.engine.budget = self.shell.engine.budget  # one retry budget per client
            self._variants[key] = shell
        return shell

    def block_limit(self, block: float) -> float | None:
        """A blocking attempt's bound: its block time plus the attempt timeout (``None``:
        unbounded, for a block forever or a policy without timeouts)."""
        if self.attempt_timeout is None or math.isinf(block):
            return None
        return block + self.attempt_timeout

    # -- failover ----------------------------------------------------------------------------
    def failed_over(self, error: Exception) -> bool:
        """Whether the client's classifier calls ``error`` a FAILOVER."""
        return is_failover(self.shell.engine.classify(None, error))

    def retire_sync(self, holder: Any, error: Exception, conn: Any = None) -> None:
        """After a FAILOVER ``error``: disconnect ``conn`` (the connection that got it), the
        connection ``holder`` keeps (a pipeline's, a pub/sub's, a single-connection
        client's) and the idle connections of ``holder``'s pool."""
        if not self.failed_over(error):
            return
        held = getattr(holder, "connection", None)
        try:
            for connection in (conn, None if held is conn else held):
                if connection is not None:
                    connection.disconnect()
            pool = getattr(holder, "connection_pool", None)
            if pool is not None:
                pool.disconnect(inuse_connections=False)
        except Exception:  # the caller's error matters more; a broken socket is closed anyway
            _log.debug("retiring connections after a failover failed", exc_info=True)

    async def retire_async(self, holder: Any, error: Exception) -> None:
        """:meth:`retire_sync` for ``redis.asyncio``: the failing connection is back in the
        pool (idle) or still kept by ``holder`` by the time the error reaches us."""
        if not self.failed_over(error):
            return
        connection = getattr(holder, "connection", None)
        try:
            if connection is not None:
                await connection.disconnect()
            pool = getattr(holder, "connection_pool", None)
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
        except Exception:  # the caller's error matters more (a close may time out)
            _log.debug("retiring connections after a failover failed", exc_info=True)

    # -- running (paths other than a plain command's) --------------------------------------
    def run_sync(
        self,
        op: Operation,
        call: Callable[..., T],
        args: tuple[Any, ...],
        options: dict[str, Any],
        *,
        replayable: bool,
        block: float | None = None,
        once: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> T:
        """Run ``call(*args, **options)`` as ``op``: for a blocking call (``block`` seconds)
        its sockets are cut at block time + attempt timeout; ``once``: one attempt only."""
        limit = timed_out = None
        if block is not None:
            limit = self.block_limit(block)
            timed_out = self._timed_out(op.name, block) if limit is not None else None
        shell = self.variant(unbounded=block is not None, once=once)

        def attempt(step: Attempt) -> T:
            if timed_out is None:  # the engine's timeout, or none for a block forever
                return run_until(step, call, args, options)
            return run_until(step, call, args, options, limit, timed_out)

        return shell.run_sync(op, attempt, replayable=replayable, extra=extra)

    async def run_async(
        self,
        op: Operation,
        call: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        options: dict[str, Any],
        *,
        replayable: bool,
        block: float | None = None,
        once: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> T:
        """Async :meth:`run_sync`: a blocking call is cancelled at block time + attempt
        timeout and fails with a ``RedisCallTimeout``."""
        limit = None if block is None else self.block_limit(block)

        async def attempt(step: Attempt) -> T:
            if limit is None:
                return await call(*args, **options)
            scope = asyncio.timeout(limit)
            try:
                async with scope:
                    return await call(*args, **options)
            except TimeoutError as exc:
                if not scope.expired():
                    raise  # the client's own timeout
                assert block is not None
                raise self._timed_out(op.name, block)(step) from exc

        shell = self.variant(unbounded=block is not None, once=once)
        return await shell.run_async(
            op, attempt, replayable=replayable, extra=extra, retry=not once
        )

    def _timed_out(self, name: str, block: float) -> Callable[[Attempt], Exception]:
        assert self.attempt_timeout is not None
        return blocking_timed_out(name, block, self.attempt_timeout)
