"""An AI API client: long calls, rate limits answered with ``Retry-After``, a retry budget.

AI calls are slow and expensive, so the policy differs from a typical API's:

- a long ``call_timeout`` (120 s): a completion may take a minute, and cutting it off early
  only pays for it twice;
- on ``429 Too Many Requests`` the wait is the server's ``Retry-After`` (up to 30 s; a
  longer one ends retrying and the 429 comes back at once), with more patience for rate
  limits (6 attempts) than for errors (3);
- a retry budget of 10% of recent calls, so an outage of the provider cannot multiply the
  bill or the load.

The request carries an ``Idempotency-Key`` so that the POST may be resent.

    AI_API_URL=http://127.0.0.1:8081    # the API (default shown)

Run: ``python examples/ai_client.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx

from resilience_otel import (
    AsyncResilientTransport,
    BreakerConfig,
    FailureKind,
    Policy,
    RetryBudgetConfig,
    RetryConfig,
    RetryOverride,
)

POLICY = Policy(
    service="ai",
    breaker=BreakerConfig(call_timeout=120.0, failure_threshold=5, reset_timeout=30.0),
    retry=RetryConfig(
        max_attempts=3,
        base_delay=1.0,
        max_delay=20.0,
        respect_retry_after=True,
        max_retry_after=30.0,
        total_timeout=300.0,
        budget=RetryBudgetConfig(ratio=0.1, min_retries_per_second=0.5, window=60.0),
        by_kind={FailureKind.RATE_LIMITED: RetryOverride(max_attempts=6)},
    ),
)


async def complete(client: httpx.AsyncClient, prompt: str) -> str:
    """One chat completion; returns the answer text."""
    body = {"model": "demo-1", "messages": [{"role": "user", "content": prompt}]}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    response.raise_for_status()  # a 429 after the last attempt (or too long a wait) lands here
    return response.text


async def run() -> None:
    """Ask one question and say how long it took, waits included."""
    base_url = os.environ.get("AI_API_URL", "http://127.0.0.1:8081")
    timeout = httpx.Timeout(POLICY.breaker.call_timeout)  # httpx's own limit must not be lower
    transport = AsyncResilientTransport(policy=POLICY)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout) as client:
        started = time.monotonic()
        try:
            answer = await complete(client, "Summarise today's market in one sentence.")
        except httpx.HTTPError as exc:
            print(f"no answer: {type(exc).__name__}: {exc}")
            return
        print(f"answer after {time.monotonic() - started:.2f}s: {answer}")
    print(f"breaker: {transport.breaker.state}")


def main() -> None:
    """Entry point."""
    asyncio.run(run())


if __name__ == "__main__":
    main()
