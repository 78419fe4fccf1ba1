"""Resilient redis-py clients (sync ``redis.Redis`` and ``redis.asyncio.Redis``).

One call makes an existing client resilient::

    client = resilience_otel.redis.instrument(redis.Redis(), policy=Policy(service="cache"))

Every command (``client.get(...)``, ``client.execute_command(...)``) and every pipeline or
transaction (``client.pipeline().execute()``) then runs through the breaker, retries,
timeouts, dead letters and telemetry, with one CLIENT span per command or pipeline; so do
commands run at once while a pipeline WATCHes (one attempt each) and pub/sub subscriptions
and reconnects. ``Monitor`` is not guarded.

Which layer retries, per client (other clients sharing the pool are never changed): by
default ours, and redis-py's ``Retry`` makes one try inside our attempts; redis-py's is kept
instead when it was set explicitly (``retry=``, ``retry_on_error=``, ``retry_on_timeout=``,
or a pool built with them), when the policy does not retry (``max_attempts=1``), or with
``keep_client_retry=True``. When it is kept and retries, the policy makes one attempt per
command for this client (logged when the policy was set to retry too).

Retry safety: read-only commands are retried; a write is retried only when the failure
happened before it was sent (connection refused) or when it is marked idempotent, either by
name (``idempotent_commands={"SET", "DEL"}``) or for a block of code (``with idempotent():``).
A pipeline is retried as a whole only when all its commands qualify.

Timeouts: ``call_timeout`` (or what is left of ``total_timeout``) ends every attempt; a
blocking command (``BLPOP``, ``XREAD ... BLOCK``, ``WAIT``, ...) may take its own block time
on top (a block forever is not bounded by us), and a block that ends empty is a success.
``redis.asyncio`` attempts are cancelled; on a sync client the connection's socket timeout is
cut to the time left while a command, a pipeline or a reconnect handshake runs (and restored
after), and ``instrument`` caps the pool's ``socket_connect_timeout`` to the policy's timeout.
Either way the attempt fails with a ``redis.exceptions.TimeoutError`` that is also a builtin
``TimeoutError``.
"""

from __future__ import annotations

from ._clients.redis.instrument import (
    READ_ONLY_COMMANDS,
    RedisBreakerStore,
    SharedCircuitBreaker,
    breaker_of,
    classify_redis,
    idempotent,
    instrument,
)

__all__ = [
    "READ_ONLY_COMMANDS",
    "RedisBreakerStore",
    "SharedCircuitBreaker",
    "breaker_of",
    "classify_redis",
    "idempotent",
    "instrument",
]
