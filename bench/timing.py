"""Interleaved rounds of timed blocks.

Each round runs one block per contender, in an order shuffled by a seeded RNG, so slow drifts
of the machine (frequency scaling, other processes) hit every contender alike. Comparisons are
made within a round (ratios, differences) and summarised by their median over rounds.

Every block is timed twice: wall clock (what a caller waits) and this thread's CPU time
(what the client spends; it leaves out time the process spent descheduled, so it stays
meaningful when other processes load the machine). The server is another process and is not
in the CPU figure.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

__all__ = [
    "Block",
    "Timing",
    "async_block",
    "concurrent_block",
    "expect_error",
    "run_rounds",
    "sync_block",
]


class Timing(NamedTuple):
    """Seconds of wall clock and of this thread's CPU time."""

    wall: float
    cpu: float


Block = Callable[[int], Timing]
"""``block(n)``: make ``n`` calls; return how long they took."""


class _Stopwatch:
    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.thread_time()

    def read(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.thread_time() - self.cpu)


def sync_block(call: Callable[[], object]) -> Block:
    """``n`` sequential calls of ``call``."""

    def block(n: int) -> Timing:
        watch = _Stopwatch()
        for _ in range(n):
            call()
        return watch.read()

    return block


def expect_error(call: Callable[[], object], error: type[BaseException]) -> Block:
    """``n`` sequential calls of ``call``, each of which must raise ``error``."""

    def block(n: int) -> Timing:
        raised = 0
        watch = _Stopwatch()
        for _ in range(n):
            try:
                call()
            except error:
                raised += 1
        timing = watch.read()
        if raised != n:
            raise RuntimeError(f"expected {n} x {error.__name__}, got {raised}")
        return timing

    return block


def async_block(runner: asyncio.Runner, call: Callable[[], Awaitable[object]]) -> Block:
    """``n`` sequential awaited calls in ``runner``'s event loop."""

    async def calls(n: int) -> Timing:
        watch = _Stopwatch()
        for _ in range(n):
            await call()
        return watch.read()

    return lambda n: runner.run(calls(n))


def concurrent_block(
    runner: asyncio.Runner, call: Callable[[], Awaitable[object]], tasks: int
) -> Block:
    """``n`` calls spread over ``tasks`` concurrent tasks (``n`` rounded up to a multiple)."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    async def calls(n: int) -> Timing:
        per_task = max(1, -(-n // tasks))
        watch = _Stopwatch()
        await asyncio.gather(*(worker(per_task) for _ in range(tasks)))
        wall, cpu = watch.read()
        # Normalised to n calls so the caller's per-request division stays right.
        scale = n / (per_task * tasks)
        return Timing(wall * scale, cpu * scale)

    return lambda n: runner.run(calls(n))


def run_rounds(
    blocks: Mapping[str, Block],
    *,
    rounds: int,
    requests: int,
    warmup: int,
    rng: random.Random,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[Timing]]:
    """Per contender, the seconds per request of each round's block.

    Every contender first runs ``warmup`` calls (connections, caches, lazy imports). Garbage
    is collected before each block and stays enabled while it runs, as in production.
    """
    for block in blocks.values():
        gc.collect()
        block(warmup)
    samples: dict[str, list[Timing]] = {name: [] for name in blocks}
    order = list(blocks)
    for index in range(rounds):
        rng.shuffle(order)
        for name in order:
            gc.collect()
            wall, cpu = blocks[name](requests)
            samples[name].append(Timing(wall / requests, cpu / requests))
        if progress is not None:
            progress(f"round {index + 1}/{rounds}")
    return samples
