"""Resilient redis-py clients (sync ``redis.Redis`` and ``redis.asyncio.Redis``, and the
Redis Cluster clients ``redis.cluster.RedisCluster`` and ``redis.asyncio.cluster.RedisCluster``).

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

Redis Cluster: a logical command is one operation whose span names the node that answered.
``MOVED``/``ASK`` redirects and ``TRYAGAIN`` are followed by redis-py (never failures, never our
retries); after a connection error, a timeout or ``CLUSTERDOWN`` redis-py refreshes the
topology and our policy retries (redis-py's own whole-command retry is turned off inside our
attempts, unless kept as above). Pipelines and transactions run as one operation. Breaker
state is shared with :class:`RedisBreakerStore` (sync) or :class:`AsyncRedisBreakerStore`
(asyncio: state syncs never block the event loop), on a single server or a cluster.

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
from ._shared.async_store import AsyncRedisBreakerStore

__all__ = [
    "READ_ONLY_COMMANDS",
    "AsyncRedisBreakerStore",
    "RedisBreakerStore",
    "SharedCircuitBreaker",
    "breaker_of",
    "classify_redis",
    "idempotent",
    "instrument",
]
