"""Dead-letter queue: failed calls kept for inspection and replay.

A call lands here when it exhausted its retries, was rejected by an open breaker, or failed
as PERMANENT or CRITICAL, as the policy's ``dead_letter_on`` says. Entries never carry
credentials: URLs are redacted and headers are not kept.

Durable queues, same protocol: ``RedisStreamDeadLetterQueue`` (a Redis stream, consumer-group
replay) and ``PostgresDeadLetterQueue`` (a table, ``FOR UPDATE SKIP LOCKED`` replay), imported
from this module on first use (they need the ``redis`` / ``asyncpg`` extras).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._deadletters.base import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterReason,
    InMemoryDeadLetterQueue,
    ReplayResult,
    check_queue,
)

if TYPE_CHECKING:
    from ._deadletters.postgres import PostgresDeadLetterQueue
    from ._deadletters.redis_stream import RedisStreamDeadLetterQueue

__all__ = [
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterReason",
    "InMemoryDeadLetterQueue",
    "PostgresDeadLetterQueue",
    "RedisStreamDeadLetterQueue",
    "ReplayResult",
    "check_queue",
]


def __getattr__(name: str) -> object:
    # The durable queues need the redis / asyncpg extras: import them only when asked for.
    if name == "RedisStreamDeadLetterQueue":
        from ._deadletters.redis_stream import RedisStreamDeadLetterQueue

        return RedisStreamDeadLetterQueue
    if name == "PostgresDeadLetterQueue":
        from ._deadletters.postgres import PostgresDeadLetterQueue

        return PostgresDeadLetterQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
