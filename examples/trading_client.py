"""A trading client: quotes and orders over one httpx API, each endpoint with its own policy.

Quotes are cheap reads: retry them quickly and trip the breaker soon. Orders move money: they
are POSTed with an ``Idempotency-Key`` (here also the ``client_order_id``), which is what lets
the transport resend one after a timeout or a 503 without placing it twice.

Both policies come from the environment (durations in milliseconds)::

    TRADING_API_URL=http://127.0.0.1:8080          # the API (default shown)
    CB_FAILURE_THRESHOLD=5 RETRY_MAX_ATTEMPTS=3     # global defaults for every service
    ALPACA_QUOTES_RETRY_BASE_DELAY=50               # quotes only
    ALPACA_ORDERS_RETRY_MAX_ATTEMPTS=5              # orders only
    ALPACA_ORDERS_CB_TIMEOUT_THRESHOLD=10000        # orders: 10 s per attempt

Run: ``python examples/trading_client.py``.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import httpx

from resilience_otel import AsyncResilientTransport, CircuitOpenError, Policy

SYMBOLS = ("AAPL", "MSFT")


def _describe(policy: Policy) -> str:
    retry, breaker = policy.retry, policy.breaker
    return (
        f"{policy.service}: {retry.max_attempts} attempts, first backoff {retry.base_delay:g}s, "
        f"breaker opens after {breaker.failure_threshold} failures, "
        f"call timeout {breaker.call_timeout}s"
    )


async def get_quotes(client: httpx.AsyncClient) -> None:
    """Fetch a quote per symbol; an open breaker answers at once instead of the API."""
    for symbol in SYMBOLS:
        try:
            response = await client.get(f"/v2/quotes/{symbol}")
        except CircuitOpenError as exc:
            print(f"quote {symbol}: quotes are down, retry in {exc.retry_after:.1f}s")
            continue
        print(f"quote {symbol}: HTTP {response.status_code} {response.text}")


async def place_order(client: httpx.AsyncClient, symbol: str, qty: int) -> None:
    """POST one market order; the same key goes with every resend of it."""
    key = str(uuid.uuid4())
    order = {"client_order_id": key, "symbol": symbol, "qty": qty, "side": "buy",
             "type": "market", "time_in_force": "day"}  # fmt: skip
    try:
        response = await client.post("/v2/orders", json=order, headers={"Idempotency-Key": key})
    except httpx.TransportError as exc:  # CircuitOpenError and exhausted retries included
        print(f"order {key}: not placed ({type(exc).__name__}); it is safe to resend with {key}")
        return
    print(f"order {key}: HTTP {response.status_code} {response.text}")


async def run() -> None:
    """Build one client per endpoint and use them."""
    base_url = os.environ.get("TRADING_API_URL", "http://127.0.0.1:8080")
    quotes_policy = Policy.from_env("alpaca-quotes")
    orders_policy = Policy.from_env("alpaca-orders")
    for policy in (quotes_policy, orders_policy):
        print(_describe(policy))
    quotes_transport = AsyncResilientTransport(policy=quotes_policy)
    orders_transport = AsyncResilientTransport(policy=orders_policy)
    async with (
        httpx.AsyncClient(base_url=base_url, transport=quotes_transport) as quotes,
        httpx.AsyncClient(base_url=base_url, transport=orders_transport) as orders,
    ):
        await get_quotes(quotes)
        await place_order(orders, "AAPL", 10)
    print(f"breakers: quotes {quotes_transport.breaker.state}, "
          f"orders {orders_transport.breaker.state}")  # fmt: skip


def main() -> None:
    """Entry point."""
    asyncio.run(run())


if __name__ == "__main__":
    main()
