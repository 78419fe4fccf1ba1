"""Every script in ``examples/`` runs as a subprocess against servers started here.

The examples read their upstream URLs and DSNs from the environment; each test points them at
a fault server, an OTLP receiver, Redis or PostgreSQL on loopback and checks what the servers
saw, not only what the script printed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faultserver import FaultServer, RecordedRequest, status

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
FAST = {"RETRY_BASE_DELAY": "10", "RETRY_MAX_DELAY": "50"}  # ms: retries without waiting


@dataclass(frozen=True)
class Ran:
    """An example's output and the requests its fault server recorded."""

    stdout: str
    requests: list[RecordedRequest]

    def to(self, path: str, method: str = "GET") -> list[RecordedRequest]:
        """The recorded requests for ``method path``."""
        return [r for r in self.requests if r.path == path and r.method == method]


def run_example(name: str, **env: str) -> str:
    """Run ``examples/<name>`` with ``env`` added; fail with its stderr unless it exits 0."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CB_", "RETRY_", "OTEL_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- trading_client.py -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trading() -> Iterator[Ran]:
    """One run: AAPL fails once, MSFT always; the first order attempt gets a 503."""
    with FaultServer() as server:
        server.script("/v2/quotes/AAPL", ["503", status(200, body={"symbol": "AAPL"})])
        server.set_default("503", path="/v2/quotes/MSFT")
        server.script("/v2/orders", ["503", status(201, body={"status": "accepted"})])
        out = run_example(
            "trading_client.py", TRADING_API_URL=server.base_url, **FAST,
            ALPACA_QUOTES_RETRY_MAX_ATTEMPTS="2", ALPACA_ORDERS_RETRY_MAX_ATTEMPTS="4",
        )  # fmt: skip
        yield Ran(out, server.requests)


def test_trading_client_retries_a_quote_after_a_503(trading: Ran) -> None:
    """The AAPL quote is fetched again after the 503 and the 200 is printed."""
    assert len(trading.to("/v2/quotes/AAPL")) == 2
    assert 'quote AAPL: HTTP 200 {"symbol": "AAPL"}' in trading.stdout


def test_trading_client_takes_the_quotes_policy_from_the_environment(trading: Ran) -> None:
    """ALPACA_QUOTES_RETRY_MAX_ATTEMPTS=2 limits the failing MSFT quote to two requests."""
    assert len(trading.to("/v2/quotes/MSFT")) == 2
    assert "alpaca-quotes: 2 attempts" in trading.stdout


def test_trading_client_takes_the_orders_policy_from_the_environment(trading: Ran) -> None:
    """The orders policy has its own attempt count from ALPACA_ORDERS_RETRY_MAX_ATTEMPTS."""
    assert "alpaca-orders: 4 attempts" in trading.stdout


def test_trading_client_resends_an_order_with_the_same_idempotency_key(trading: Ran) -> None:
    """The order is POSTed twice, both times with the key that is its client_order_id."""
    posts = trading.to("/v2/orders", "POST")
    keys = {post.headers["idempotency-key"] for post in posts}
    client_ids = {json.loads(post.body)["client_order_id"] for post in posts}
    assert (len(posts), len(keys), keys) == (2, 1, client_ids)


# -- ai_client.py ----------------------------------------------------------------------------------
def _ai_run(retry_after: str) -> Ran:
    with FaultServer() as server:
        rate_limited = status(429, headers={"Retry-After": retry_after})
        server.script("/v1/chat/completions", [rate_limited, "200"], method="POST")
        out = run_example("ai_client.py", AI_API_URL=server.base_url)
        return Ran(out, server.requests)


def test_ai_client_waits_what_retry_after_asks() -> None:
    """After a 429 with Retry-After 0.3 the resend comes no sooner than 0.3 s later."""
    ran = _ai_run("0.3")
    first, second = ran.to("/v1/chat/completions", "POST")
    assert second.received_at - first.received_at >= 0.3
    assert "answer after" in ran.stdout


def test_ai_client_does_not_wait_beyond_its_retry_after_cap() -> None:
    """A Retry-After above max_retry_after (30 s) ends retrying: one request, no answer."""
    ran = _ai_run("600")
    assert len(ran.to("/v1/chat/completions", "POST")) == 1
    assert "no answer: HTTPStatusError" in ran.stdout


# -- cache_and_repository.py -----------------------------------------------------------------------
@dataclass(frozen=True)
class TwoRuns:
    """The example run with PostgreSQL unreachable, then reachable, and what Redis held."""

    down: str
    up: str
    letters_after_down: int
    breaker_keys_after_down: int
    letters_after_up: int
    row: dict[str, Any] | None


@pytest.fixture(scope="module")
def two_runs() -> Iterator[TwoRuns]:
    """Run cache_and_repository.py twice under a unique prefix and table; clean up after."""
    if not (_reachable(6379) and _reachable(5432)):
        pytest.skip("needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432")
    import asyncpg
    import redis

    prefix, table = f"example-test-{os.getpid()}", f"example_orders_test_{os.getpid()}"
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    env = {"EXAMPLE_PREFIX": prefix, "ORDERS_TABLE": table, "RETRY_MAX_ATTEMPTS": "2", **FAST}
    client = redis.Redis()
    try:
        nowhere = f"postgresql://postgres@127.0.0.1:{_free_port()}/test"  # nothing listens
        down = run_example("cache_and_repository.py", **env, DATABASE_URL=nowhere)
        letters_down = int(client.xlen(f"{prefix}:dead-letters"))
        breaker_keys = len(list(client.scan_iter(f"{prefix}:breaker*")))
        up = run_example("cache_and_repository.py", **env, DATABASE_URL=dsn)
        row = _fetch_row(dsn, table)
        yield TwoRuns(down, up, letters_down, breaker_keys,
                      int(client.xlen(f"{prefix}:dead-letters")), row)  # fmt: skip
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        _drop_table(dsn, table, asyncpg)


def _fetch_row(dsn: str, table: str) -> dict[str, Any] | None:
    import asyncio

    import asyncpg

    async def fetch() -> dict[str, Any] | None:
        connection = await asyncpg.connect(dsn)
        try:
            row = await connection.fetchrow(f"SELECT symbol, qty FROM {table}")  # noqa: S608
        finally:
            await connection.close()
        return dict(row) if row is not None else None

    return asyncio.run(fetch())


def _drop_table(dsn: str, table: str, asyncpg: Any) -> None:
    import asyncio

    async def drop() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await connection.close()

    asyncio.run(drop())


def test_repository_write_that_fails_becomes_a_durable_dead_letter(two_runs: TwoRuns) -> None:
    """With PostgreSQL down the order is not saved and one letter waits in the Redis stream."""
    assert "not saved (RetriesExhaustedError): kept as a dead letter" in two_runs.down
    assert two_runs.letters_after_down == 1


def test_repository_breaker_state_lives_in_redis(two_runs: TwoRuns) -> None:
    """The repository's breaker keeps its window in Redis under the example's prefix."""
    assert two_runs.breaker_keys_after_down > 0


def test_next_run_reports_and_acknowledges_earlier_dead_letters(two_runs: TwoRuns) -> None:
    """The second process reports the first one's dead letter and removes it from the stream."""
    assert "dead letters from earlier runs" in two_runs.up
    assert "postgresql INSERT: retries_exhausted after 2 attempts" in two_runs.up
    assert two_runs.letters_after_up == 0


def test_repository_saves_the_order_once_postgresql_is_up(two_runs: TwoRuns) -> None:
    """With PostgreSQL reachable the order row is written."""
    assert two_runs.row == {"symbol": "AAPL", "qty": 10}


def test_second_read_comes_from_the_cache(two_runs: TwoRuns) -> None:
    """The first read goes to PostgreSQL and fills the cache; the second is served by Redis."""
    reads = [line for line in two_runs.up.splitlines() if line.startswith("order ex-0001 from")]
    assert [line.split(":")[0] for line in reads] == [
        "order ex-0001 from PostgreSQL",
        "order ex-0001 from the cache",
    ]


# -- otel_setup.py ---------------------------------------------------------------------------------
class OtlpReceiver:
    """A local OTLP/HTTP endpoint: records every POST (path, content type, body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list[Any]:
        """Every span in every trace export received."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        found = []
        for path, _, body in self.posts:
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        found.extend(scope.spans)
        return found

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def otel() -> Iterator[tuple[str, OtlpReceiver, list[RecordedRequest]]]:
    """One run of otel_setup.py: the upstream answers 503 then 200."""
    receiver = OtlpReceiver()
    try:
        with FaultServer() as server:
            server.script("/quotes/AAPL", ["503", "200"])
            out = run_example(
                "otel_setup.py", QUOTES_URL=server.url("/quotes/AAPL"), PROMETHEUS_PORT="0",
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="example-test",
            )  # fmt: skip
            yield out, receiver, server.requests
    finally:
        receiver.stop()


def test_otel_setup_exports_spans_over_otlp(
    otel: tuple[str, OtlpReceiver, list[RecordedRequest]],
) -> None:
    """The OTLP receiver got protobuf trace exports holding the call's spans."""
    _, receiver, _ = otel
    assert {(path, ctype) for path, ctype, _ in receiver.posts} == {
        ("/v1/traces", "application/x-protobuf")
    }
    assert "refresh quotes" in {span.name for span in receiver.spans()}


def test_otel_setup_exports_one_client_span_per_attempt(
    otel: tuple[str, OtlpReceiver, list[RecordedRequest]],
) -> None:
    """Two attempts reached the upstream; each one's traceparent names its own CLIENT span."""
    out, receiver, requests = otel
    client_kind = 3  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_CLIENT
    exported = {s.span_id.hex() for s in receiver.spans() if s.kind == client_kind}
    sent = {r.headers["traceparent"].split("-")[2] for r in requests}
    assert (len(requests), sent) == (2, exported)
    assert "2 CLIENT spans, one per attempt" in out


def test_otel_setup_marks_the_resend(
    otel: tuple[str, OtlpReceiver, list[RecordedRequest]],
) -> None:
    """The second attempt's span carries http.request.resend_count = 1."""
    _, receiver, _ = otel
    counts = sorted(
        attribute.value.int_value
        for span in receiver.spans()
        for attribute in span.attributes
        if attribute.key == "http.request.resend_count"
    )
    assert counts == [1]
