"""A separate OS process for the shared-breaker and durable dead-letter tests.

    python shared_worker.py PREFIX NAME ROLE [options]

Roles:

``breaker``
    Builds ``RedisBreakerStore(redis.Redis(port=..., socket_timeout=0.05,
    socket_connect_timeout=0.05), prefix=PREFIX, sync_interval=...)`` and the breaker ``NAME``
    (``--config`` is a JSON object of ``BreakerConfig`` fields), prints ``{"ready": true}``, then
    answers one JSON line on stdout for each JSON command line read on stdin (see
    :meth:`BreakerWorker.handle` for the commands).
``dlq-put``
    Puts ``--count`` letters (operations ``PREFIX-0``, ``PREFIX-1``, ...) into the queue
    ``NAME`` (a Redis stream, or a PostgreSQL table with ``--dsn``), closes the queue and prints
    ``{"closed": ...}``.
``dlq-replay``
    Replays the queue ``NAME``; the handler appends each letter's operation to ``--log`` (one
    line, flushed and synced before returning) and, with ``--die-at K``, ends the process with
    ``os._exit`` on the K-th letter before handling it (so it is never acknowledged).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import redis

from resilience_otel import BreakerConfig, CircuitOpenError, StateChange
from resilience_otel.dlq import DeadLetter, DeadLetterReason
from resilience_otel.redis import RedisBreakerStore, SharedCircuitBreaker

DIED_EXIT_CODE = 17
"""The exit status of a replayer that ``--die-at`` stopped."""


def emit(message: dict[str, Any]) -> None:
    """Write one JSON line to stdout and flush it."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class BreakerWorker:
    """Holds one shared breaker and runs the commands the test sends."""

    def __init__(self, args: argparse.Namespace) -> None:
        client = redis.Redis(port=args.port, socket_timeout=0.05, socket_connect_timeout=0.05)
        self.plain = redis.Redis(port=args.port, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.store = RedisBreakerStore(
            client,
            prefix=args.prefix,
            sync_interval=args.sync_interval,
            recheck_interval=args.recheck_interval,
        )
        self.breaker: SharedCircuitBreaker = self.store.breaker(
            BreakerConfig(**json.loads(args.config)), name=args.name
        )
        self.changes: list[list[str]] = []
        self.breaker.add_listener(self._changed)
        self.permits: dict[int, int] = {}
        self._next_permit = 0
        self._watcher: threading.Thread | None = None
        self._rejected_at: float | None = None

    def _changed(self, change: StateChange) -> None:
        self.changes.append([change.from_state.value, change.to_state.value])

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command; the reply always carries the breaker's cached state."""
        op = command["op"]
        reply: dict[str, Any]
        if op == "acquire":
            reply = self.acquire()
        elif op == "barrier_acquire":
            self.barrier(command["key"], command["n"])
            reply = self.acquire()
        elif op == "record":
            permit = self.permits.pop(command["permit"])
            change = self.breaker.record(
                permit, failure=command["failure"], duration=0.001, now=time.monotonic()
            )
            reply = {"change": None if change is None else change.to_state.value}
        elif op in ("fail", "succeed"):
            reply = self.outcomes(command["n"], failure=op == "fail")
        elif op == "watch":
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
            reply = {}
        elif op == "watch_result":
            assert self._watcher is not None
            self._watcher.join(command["timeout"])
            reply = {"rejected_at": self._rejected_at}
        elif op in ("force_open", "force_closed", "reset"):
            getattr(self.breaker, op)()
            reply = {}
        elif op == "state":
            reply = {
                "state": self.breaker.state.value,
                "degraded": self.breaker.degraded,
                "fallbacks": self.breaker.fallbacks,
            }
        elif op == "changes":
            reply = {"changes": self.changes}
        else:
            raise ValueError(f"unknown command {op!r}")
        reply["cached"] = self.breaker.current_state.value
        return reply

    def acquire(self) -> dict[str, Any]:
        """Ask for a permit; a granted one is kept under a number the test can record with."""
        try:
            permit = self.breaker.acquire(time.monotonic())
        except CircuitOpenError:
            return {"granted": False, "t": time.time()}
        self._next_permit += 1
        self.permits[self._next_permit] = permit
        probe = bool(permit & 1)  # probe permits are odd, shared (< 0) or local (>= 0)
        return {"granted": True, "permit": self._next_permit, "probe": probe, "t": time.time()}

    def barrier(self, key: str, n: int) -> None:
        """Wait until ``n`` processes have reached the barrier ``key`` (a Redis counter)."""
        self.plain.incr(key)
        self.plain.pexpire(key, 60_000)
        deadline = time.monotonic() + 10.0
        while int(self.plain.get(key) or 0) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"barrier {key!r} never reached {n}")
            time.sleep(0.001)

    def outcomes(self, n: int, *, failure: bool) -> dict[str, Any]:
        """Run ``n`` calls that fail (or succeed); report the transitions they caused."""
        changes: list[str] = []
        for _ in range(n):
            permit = self.breaker.acquire(time.monotonic())
            change = self.breaker.record(
                permit, failure=failure, duration=0.001, now=time.monotonic()
            )
            if change is not None:
                changes.append(change.to_state.value)
        return {"changes": changes, "t": time.time()}

    def _watch(self) -> None:
        # Call acquire every 2 ms (without running anything) until the breaker rejects.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                self.breaker.acquire(time.monotonic())
            except CircuitOpenError:
                self._rejected_at = time.time()
                return
            time.sleep(0.002)


def run_breaker(args: argparse.Namespace) -> None:
    """The ``breaker`` role: a command loop over stdin."""
    worker = BreakerWorker(args)
    emit({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "exit":
            return
        try:
            emit(worker.handle(command))
        except Exception as exc:
            emit({"error": f"{type(exc).__name__}: {exc}"})


def open_queue(args: argparse.Namespace) -> Any:
    """The queue ``NAME``: a PostgreSQL table with ``--dsn``, else a Redis stream."""
    from resilience_otel.dlq import PostgresDeadLetterQueue, RedisStreamDeadLetterQueue

    if args.dsn:
        return PostgresDeadLetterQueue(args.dsn, table=args.name)
    return RedisStreamDeadLetterQueue(
        redis.Redis(port=args.port),
        stream=args.name,
        consumer=args.consumer,
        claim_idle=args.claim_idle,
    )


def make_letter(operation: str, index: int) -> DeadLetter:
    """A letter whose operation names it and whose metadata numbers it."""
    return DeadLetter(
        service="worker",
        operation=operation,
        reason=DeadLetterReason.RETRIES_EXHAUSTED,
        error_class="transient",
        error_type="503",
        message="HTTP 503",
        attempts=3,
        first_attempt_at=1_767_225_600.0 + index,
        failed_at=1_767_225_601.5 + index,
        payload=f"body-{index}".encode(),
        metadata={"index": str(index)},
    )


def run_put(args: argparse.Namespace) -> None:
    """The ``dlq-put`` role."""
    queue = open_queue(args)
    for index in range(args.count):
        queue.put(make_letter(f"{args.prefix}-{index}", index))
    emit({"closed": queue.close(timeout=10.0)})


def run_replay(args: argparse.Namespace) -> None:
    """The ``dlq-replay`` role."""
    queue = open_queue(args)
    seen = 0

    def handler(letter: DeadLetter) -> None:
        nonlocal seen
        seen += 1
        if seen == args.die_at:
            os._exit(DIED_EXIT_CODE)  # killed mid-replay: this letter was never acknowledged
        with open(args.log, "a", encoding="utf-8") as log:
            log.write(letter.operation + "\n")
            log.flush()
            os.fsync(log.fileno())

    result = queue.replay(handler)
    queue.close()
    emit({"succeeded": result.succeeded, "failed": result.failed})


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the role."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="breaker key prefix, or the letters' operation prefix")
    parser.add_argument("name", help="breaker name, or the stream / table name")
    parser.add_argument("role", choices=["breaker", "dlq-put", "dlq-replay"])
    parser.add_argument("--port", type=int, default=6379, help="Redis port on 127.0.0.1")
    parser.add_argument("--config", default="{}", help="BreakerConfig fields as JSON")
    parser.add_argument("--sync-interval", type=float, default=0.05)
    parser.add_argument("--recheck-interval", type=float, default=1.0)
    parser.add_argument("--dsn", default="", help="PostgreSQL DSN (else a Redis stream)")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--consumer", default="replayer")
    parser.add_argument("--claim-idle", type=float, default=60.0)
    parser.add_argument("--die-at", type=int, default=0)
    parser.add_argument("--log", default=os.devnull)
    args = parser.parse_args(argv)
    {"breaker": run_breaker, "dlq-put": run_put, "dlq-replay": run_replay}[args.role](args)


if __name__ == "__main__":
    main()
