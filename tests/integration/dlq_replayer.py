"""A dead-letter replayer in its own OS process, for the exactly-once tests.

    python dlq_replayer.py NAME --counts KEY [--dsn DSN] [options]

Waits until ``--ready`` processes have reached the start line (a Redis counter ``KEY:ready``),
then replays the queue ``NAME`` (a Redis stream, or a PostgreSQL table with ``--dsn``) again
and again until it is empty. The handler adds one to the letter's operation in the Redis hash
``KEY`` (the calls per letter across processes) and sleeps ``--handle`` seconds. With
``--die-at K`` the process ends with ``os._exit`` during its K-th handler call, after counting
it: a replayer that dies mid-handler. Prints one JSON line, ``{"succeeded": n, "failed": n}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import asyncpg
import redis

from resilience_otel.dlq import DeadLetter, PostgresDeadLetterQueue, RedisStreamDeadLetterQueue

DIED_EXIT_CODE = 17
"""The exit status of a replayer that ``--die-at`` stopped."""


def open_queue(args: argparse.Namespace, client: redis.Redis) -> Any:
    """The queue ``NAME``: a PostgreSQL table with ``--dsn``, else a Redis stream."""
    if args.dsn:
        return PostgresDeadLetterQueue(args.dsn, table=args.name)
    return RedisStreamDeadLetterQueue(
        client, stream=args.name, consumer=args.consumer, claim_idle=args.claim_idle
    )


def wait_for_start(client: redis.Redis, key: str, n: int) -> None:
    """Wait until ``n`` processes have counted themselves in at ``key``."""
    client.incr(key)
    client.pexpire(key, 60_000)
    deadline = time.monotonic() + 20.0
    while int(client.get(key) or 0) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {client.get(key)} of {n} replayers started")
        time.sleep(0.005)


def main() -> None:
    """Parse the arguments, replay until the queue is empty, print the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the stream / table")
    parser.add_argument("--counts", required=True, help="Redis hash: calls per operation")
    parser.add_argument("--dsn", default="", help="PostgreSQL DSN (else a Redis stream)")
    parser.add_argument("--consumer", default=f"p{os.getpid()}")
    parser.add_argument("--claim-idle", type=float, default=60.0)
    parser.add_argument("--handle", type=float, default=0.0, help="handler seconds")
    parser.add_argument("--ready", type=int, default=1, help="processes to wait for")
    parser.add_argument("--die-at", type=int, default=0)
    parser.add_argument("--until", type=float, default=20.0, help="give up after, seconds")
    args = parser.parse_args()
    client = redis.Redis(port=6379)
    queue = open_queue(args, client)
    calls = 0

    def handler(letter: DeadLetter) -> None:
        nonlocal calls
        calls += 1
        client.hincrby(args.counts, letter.operation, 1)
        if calls == args.die_at:
            os._exit(DIED_EXIT_CODE)  # mid-handler: never acknowledged
        time.sleep(args.handle)

    wait_for_start(client, f"{args.counts}:ready", args.ready)
    succeeded = failed = 0
    deadline = time.monotonic() + args.until
    while time.monotonic() < deadline:
        result = queue.replay(handler)
        succeeded, failed = succeeded + result.succeeded, failed + result.failed
        if remaining(args, queue) == 0:
            break
        time.sleep(0.02)  # letters others hold: look again until they are done
    queue.close()
    sys.stdout.write(json.dumps({"succeeded": succeeded, "failed": failed}) + "\n")


def remaining(args: argparse.Namespace, queue: Any) -> int:
    """Letters still stored (handled ones are deleted)."""
    if not args.dsn:
        return len(queue)

    async def count() -> int:
        connection = await asyncpg.connect(args.dsn, timeout=5)
        try:
            return int(await connection.fetchval(f"SELECT count(*) FROM {args.name}"))  # noqa: S608
        finally:
            await connection.close()

    return asyncio.run(count())


if __name__ == "__main__":
    main()
