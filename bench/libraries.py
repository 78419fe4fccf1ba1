"""``python -m bench.libraries``: what each library adds to one mocked httpx GET, alone.

The comparison table of docs/benchmarks.md: raw httpx, then each library wrapping the same call
the way its documentation shows — tenacity's ``@retry``, pybreaker's ``breaker.call``, stamina's
``@retry``, httpx-retries' transport, and our transport with telemetry off and on — on
``httpx.MockTransport``, interleaved in rounds as in ``python -m bench``.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence

import httpx
import pybreaker
import stamina
import tenacity
from httpx_retries import RetryTransport

from resilience_otel import Policy, ResilientTransport

from .contenders import bench_policy, ok_response
from .db import _providers
from .report import latency_table, summarise
from .timing import Block, run_rounds, sync_block

URL = "http://bench.test/quote"


def _blocks() -> dict[str, Block]:
    def client(transport: httpx.BaseTransport | None = None) -> httpx.Client:
        return httpx.Client(transport=transport or httpx.MockTransport(ok_response))

    raw, plain = client(), client()
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential())
    def with_tenacity() -> httpx.Response:
        return plain.get(URL)

    @stamina.retry(on=httpx.HTTPError, attempts=3)
    def with_stamina() -> httpx.Response:
        return plain.get(URL)

    mock = httpx.MockTransport(ok_response)
    retries = client(RetryTransport(transport=mock))
    off = client(ResilientTransport(mock, policy=bench_policy(telemetry=False)))
    full = client(ResilientTransport(mock, policy=Policy(service="bench"), **_providers()))
    calls: dict[str, Callable[[], object]] = {
        "raw": lambda: raw.get(URL),
        "tenacity": with_tenacity,
        "pybreaker": lambda: breaker.call(plain.get, URL),
        "stamina": with_stamina,
        "httpx-retries": lambda: retries.get(URL),
        "ours-off": lambda: off.get(URL),
        "ours-full": lambda: full.get(URL),
    }
    return {name: sync_block(call) for name, call in calls.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.libraries", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    samples = run_rounds(_blocks(), rounds=args.rounds, requests=args.requests, warmup=200,
                         rng=random.Random(0))  # fmt: skip
    print("### One mocked httpx GET per request, each library alone\n")
    print(latency_table(summarise(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
