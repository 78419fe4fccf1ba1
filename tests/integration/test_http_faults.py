"""The httpx transports against a real HTTP server injecting faults on loopback.

Every test asserts how many requests the server actually read: that is what retries and the
breaker are for.
"""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from resilience_otel import (
    AsyncResilientTransport,
    BreakerState,
    CircuitOpenError,
    ResilientTransport,
    RetriesExhaustedError,
)

from .conftest import PolicyFactory
from .faultserver import FaultServer, hang, slow, status

pytestmark = pytest.mark.integration

_IDEMPOTENCY_KEY = {"Idempotency-Key": "order-42"}


def _gaps(server: FaultServer) -> list[float]:
    """Seconds between consecutive requests as the server received them."""
    times = [request.received_at for request in server.requests]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def _sync_client(server: FaultServer, transport: ResilientTransport) -> httpx.Client:
    return httpx.Client(transport=transport, base_url=server.base_url)


def _async_client(server: FaultServer, transport: AsyncResilientTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url=server.base_url)


# -- 503 bursts ------------------------------------------------------------------------------
def test_sync_503_burst_then_200_is_retried_until_success(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """Two 503s then a 200: the sync client gets the 200 after three requests."""
    fault_server.script("/quotes", ["503", "503", "200"])
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.get("/quotes")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert fault_server.count("/quotes", "GET") == 3


@pytest.mark.anyio
async def test_async_503_burst_then_200_is_retried_until_success(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """Two 503s then a 200: the async client gets the 200 after three requests."""
    fault_server.script("/quotes", ["503", "503", "200"])
    async with _async_client(fault_server, AsyncResilientTransport(policy=make_policy())) as client:
        response = await client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.count("/quotes", "GET") == 3


def test_503_burst_longer_than_max_attempts_returns_the_last_503(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """After max_attempts 503s the caller gets the last 503 response, and no fourth request."""
    fault_server.set_default("503")
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.get("/quotes")
    assert response.status_code == 503
    assert response.json()["error"] == "Service Unavailable"
    assert fault_server.count("/quotes") == 3


def test_429_retry_after_is_waited_before_the_retry(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A 429 with Retry-After: 1 delays the retry by about a second, not the 10 ms backoff."""
    fault_server.script("/orders", [status(429, headers={"Retry-After": "1"}), "200"])
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.get("/orders")
    assert response.status_code == 200
    assert fault_server.count("/orders") == 2
    (gap,) = _gaps(fault_server)
    assert 0.95 <= gap < 2.0


# -- slow and hanging responses ----------------------------------------------------------------
def test_sync_slow_response_beyond_call_timeout_is_cancelled_and_retried(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A response slower than call_timeout is abandoned at the timeout and the retry succeeds."""
    fault_server.script("/quotes", [slow(2.0), "200"])
    transport = ResilientTransport(policy=make_policy(call_timeout=0.3))
    with _sync_client(fault_server, transport) as client:
        response = client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.count("/quotes") == 2
    (gap,) = _gaps(fault_server)
    assert 0.25 <= gap < 1.5  # the retry came at the 0.3 s timeout, not after the 2 s delay
    assert transport.breaker.snapshot().failures == 1


@pytest.mark.anyio
async def test_async_slow_response_beyond_call_timeout_is_cancelled_and_retried(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport also cancels a too-slow attempt at call_timeout and retries it."""
    fault_server.script("/quotes", [slow(2.0), "200"])
    transport = AsyncResilientTransport(policy=make_policy(call_timeout=0.3))
    async with _async_client(fault_server, transport) as client:
        response = await client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.count("/quotes") == 2
    (gap,) = _gaps(fault_server)
    assert 0.25 <= gap < 1.5
    assert transport.breaker.snapshot().failures == 1


def test_slow_response_within_call_timeout_succeeds_first_time(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A response slower than usual but within call_timeout is neither retried nor a failure."""
    fault_server.script("/quotes", [slow(0.1)])
    transport = ResilientTransport(policy=make_policy(call_timeout=0.3))
    with _sync_client(fault_server, transport) as client:
        response = client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.count("/quotes") == 1
    assert transport.breaker.snapshot().failures == 0


def test_sync_hanging_upstream_raises_read_timeout_after_bounded_retries(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """Against a server that never answers, each attempt ends at call_timeout; then ReadTimeout."""
    fault_server.set_default(hang())
    transport = ResilientTransport(policy=make_policy(call_timeout=0.2))
    started = time.monotonic()
    with (
        _sync_client(fault_server, transport) as client,
        pytest.raises(httpx.ReadTimeout) as caught,
    ):
        client.get("/quotes")
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 3
    assert fault_server.count("/quotes") == 3
    assert 0.6 <= elapsed < 2.0


@pytest.mark.anyio
async def test_async_hanging_upstream_raises_read_timeout_after_bounded_retries(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport bounds a hanging upstream the same way: 3 x call_timeout, then error."""
    fault_server.set_default(hang())
    transport = AsyncResilientTransport(policy=make_policy(call_timeout=0.2))
    started = time.monotonic()
    async with _async_client(fault_server, transport) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get("/quotes")
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 3
    assert fault_server.count("/quotes") == 3
    assert 0.6 <= elapsed < 2.0


# -- broken connections and bodies -------------------------------------------------------------
def test_sync_connection_reset_on_get_is_retried_and_succeeds(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A GET whose connection is reset (RST) after the request is resent and gets the 200."""
    fault_server.script("/quotes", ["reset", "200"])
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.count("/quotes") == 2


@pytest.mark.anyio
async def test_async_connection_reset_on_get_is_retried_and_succeeds(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport also resends a GET after a connection reset."""
    fault_server.script("/quotes", ["reset", "200"])
    async with _async_client(fault_server, AsyncResilientTransport(policy=make_policy())) as client:
        response = await client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.count("/quotes") == 2


def test_post_without_idempotency_key_is_not_resent_after_a_reset(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A reset after a POST was read may hide a side effect: it is raised as is, not resent."""
    fault_server.script("/orders", ["reset", "200"])
    with (
        _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client,
        pytest.raises(httpx.ReadError) as caught,
    ):
        client.post("/orders", json={"qty": 1})
    assert not isinstance(caught.value, RetriesExhaustedError)
    assert fault_server.count("/orders", "POST") == 1


def test_sync_truncated_body_on_get_is_retried_and_succeeds(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A body shorter than its Content-Length is read inside the attempt, so the GET is resent."""
    fault_server.script("/quotes", ["truncate", "200"])
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.get("/quotes")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert fault_server.count("/quotes") == 2


@pytest.mark.anyio
async def test_async_truncated_body_on_get_is_retried_and_succeeds(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport also resends a GET whose body was cut short."""
    fault_server.script("/quotes", ["truncate", "200"])
    async with _async_client(fault_server, AsyncResilientTransport(policy=make_policy())) as client:
        response = await client.get("/quotes")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert fault_server.count("/quotes") == 2


def test_truncated_body_is_not_retried_when_read_body_is_off(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """With read_body=False the body is streamed to the caller, so truncation surfaces there."""
    fault_server.script("/quotes", ["truncate", "200"])
    transport = ResilientTransport(policy=make_policy(), read_body=False)
    with (
        _sync_client(fault_server, transport) as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.get("/quotes")
    assert fault_server.count("/quotes") == 1


# -- retry safety for POST -----------------------------------------------------------------------
def test_post_without_idempotency_key_is_not_retried_on_503(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A POST that got a 503 may have had effects: the caller gets the 503 after one request."""
    fault_server.script("/orders", ["503", "200"])
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.post("/orders", json={"qty": 1})
    assert response.status_code == 503
    assert fault_server.count("/orders", "POST") == 1


def test_post_with_idempotency_key_is_retried_on_503(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A POST carrying an Idempotency-Key is resent, with the same key and body, until the 200."""
    fault_server.script("/orders", ["503", "503", "200"])
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        response = client.post("/orders", json={"qty": 1}, headers=_IDEMPOTENCY_KEY)
    assert response.status_code == 200
    assert fault_server.count("/orders", "POST") == 3
    sent = {(r.headers["idempotency-key"], r.body) for r in fault_server.requests}
    assert sent == {("order-42", b'{"qty":1}')}


def test_sync_post_is_retried_on_connection_refused(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """Connection refused means nothing was sent, so even a plain POST is retried, then raised."""
    transport = ResilientTransport(policy=make_policy())
    with _sync_client(fault_server, transport) as client:
        fault_server.stop_listening()
        with pytest.raises(httpx.ConnectError) as caught:
            client.post("/orders", json={"qty": 1})
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 3
    assert fault_server.count() == 0


@pytest.mark.anyio
async def test_async_post_is_retried_on_connection_refused(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport also retries a refused POST and raises ConnectError when exhausted."""
    transport = AsyncResilientTransport(policy=make_policy())
    async with _async_client(fault_server, transport) as client:
        fault_server.stop_listening()
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post("/orders", json={"qty": 1})
    assert isinstance(caught.value, RetriesExhaustedError)
    assert caught.value.attempts == 3
    assert fault_server.count() == 0


def test_client_recovers_when_the_server_listens_again_on_the_same_port(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """After a refused period the same client reaches the server again on its old port."""
    port = fault_server.port
    with _sync_client(fault_server, ResilientTransport(policy=make_policy())) as client:
        assert client.get("/quotes").status_code == 200
        fault_server.stop_listening()
        with pytest.raises(httpx.ConnectError):
            client.get("/quotes")
        fault_server.start_listening()
        response = client.get("/quotes")
    assert response.status_code == 200
    assert fault_server.port == port
    assert fault_server.count("/quotes") == 2


# -- circuit breaker -----------------------------------------------------------------------------
def _open_breaker(client: httpx.Client, server: FaultServer, threshold: int) -> None:
    """Drive ``threshold`` failing calls (the upstream answers 503)."""
    server.set_default("503")
    for _ in range(threshold):
        assert client.get("/quotes").status_code == 503


def test_sync_breaker_opens_at_threshold_and_stops_traffic(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """After 3 failures further calls raise CircuitOpenError and never reach the server."""
    transport = ResilientTransport(policy=make_policy(max_attempts=1, failure_threshold=3))
    with _sync_client(fault_server, transport) as client:
        _open_breaker(client, fault_server, 3)
        assert transport.breaker.state is BreakerState.OPEN
        for _ in range(5):
            with pytest.raises(CircuitOpenError) as caught:
                client.get("/quotes")
            assert isinstance(caught.value, httpx.TransportError)
    assert fault_server.count() == 3


@pytest.mark.anyio
async def test_async_breaker_opens_at_threshold_and_stops_traffic(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """The async transport's breaker also opens after 3 failures and shields the server."""
    fault_server.set_default("503")
    transport = AsyncResilientTransport(policy=make_policy(max_attempts=1, failure_threshold=3))
    async with _async_client(fault_server, transport) as client:
        for _ in range(3):
            assert (await client.get("/quotes")).status_code == 503
        for _ in range(5):
            with pytest.raises(CircuitOpenError) as caught:
                await client.get("/quotes")
            assert isinstance(caught.value, httpx.TransportError)
    assert fault_server.count() == 3


def test_circuit_open_error_names_the_service_and_when_to_retry(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """A rejection carries the service name and a retry_after within reset_timeout."""
    policy = make_policy(max_attempts=1, failure_threshold=3, reset_timeout=0.2)
    with _sync_client(fault_server, ResilientTransport(policy=policy)) as client:
        _open_breaker(client, fault_server, 3)
        with pytest.raises(CircuitOpenError) as caught:
            client.get("/quotes")
    assert caught.value.service == "faults"
    assert 0.0 < caught.value.retry_after <= 0.2


def test_breaker_opening_mid_call_stops_its_retries(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """With 5 attempts allowed but a threshold of 3, the breaker ends the call after 3 requests."""
    fault_server.set_default("503")
    transport = ResilientTransport(policy=make_policy(max_attempts=5, failure_threshold=3))
    with _sync_client(fault_server, transport) as client:
        response = client.get("/quotes")
    assert response.status_code == 503
    assert transport.breaker.state is BreakerState.OPEN
    assert fault_server.count() == 3


def test_failed_probe_after_reset_timeout_reopens_the_breaker(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """After reset_timeout exactly one probe reaches a still-failing server; then it is open."""
    policy = make_policy(max_attempts=1, failure_threshold=3, reset_timeout=0.2)
    transport = ResilientTransport(policy=policy)
    with _sync_client(fault_server, transport) as client:
        _open_breaker(client, fault_server, 3)
        time.sleep(0.25)
        assert client.get("/quotes").status_code == 503  # the probe
        with pytest.raises(CircuitOpenError):
            client.get("/quotes")
    assert transport.breaker.state is BreakerState.OPEN
    assert fault_server.count() == 4


def test_successful_probe_closes_the_breaker_and_traffic_flows(
    fault_server: FaultServer, make_policy: PolicyFactory
) -> None:
    """When the server recovers, the probe closes the breaker and every later call goes through."""
    policy = make_policy(max_attempts=1, failure_threshold=3, reset_timeout=0.2)
    transport = ResilientTransport(policy=policy)
    with _sync_client(fault_server, transport) as client:
        _open_breaker(client, fault_server, 3)
        fault_server.set_default("200")
        with pytest.raises(CircuitOpenError):
            client.get("/quotes")
        time.sleep(0.25)
        assert client.get("/quotes").status_code == 200  # the probe
        assert transport.breaker.state is BreakerState.CLOSED
        statuses = [client.get("/quotes").status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert fault_server.count() == 3 + 1 + 5
