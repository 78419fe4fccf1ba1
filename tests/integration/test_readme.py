"""The README's examples run, so they cannot rot."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience_otel import CircuitOpenError

from .faultserver import FaultServer, status

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_quick_start_runs_against_a_real_server(fault_server: FaultServer) -> None:
    """The quick start fetches a quote through the transport from a local server."""
    namespace: dict[str, object] = {"QUOTES_URL": fault_server.url("")}
    exec(compile(_python_block("## Quick start"), "README quick start", "exec"), namespace)  # noqa: S102
    assert namespace["quote"]
    assert fault_server.count("/quotes/AAPL", "GET") == 1


def test_quick_start_reports_an_open_breaker(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the upstream down, the quick start's handler catches CircuitOpenError."""
    monkeypatch.setenv("QUOTES_RETRY_BASE_DELAY", "10")  # milliseconds: keep the test quick
    fault_server.set_default("503")
    code = _python_block("## Quick start")
    setup, _, guarded = code.partition("try:")
    namespace: dict[str, object] = {"QUOTES_URL": fault_server.url("")}
    exec(compile(setup, "README quick start", "exec"), namespace)  # noqa: S102
    client = namespace["client"]
    for _ in range(5):  # five failed attempts (default threshold, retries included) open it
        try:
            client.get("/quotes/AAPL")  # type: ignore[attr-defined]
        except CircuitOpenError:
            break
    seen = fault_server.count("/quotes/AAPL", "GET")
    exec(compile("try:" + guarded, "README quick start", "exec"), namespace)  # noqa: S102
    assert fault_server.count("/quotes/AAPL", "GET") == seen
    assert "quote" not in namespace
    assert fault_server.count("/quotes/AAPL", "GET") == 5


def test_mapping_example_builds_policies() -> None:
    """The many-services example builds one policy per service."""
    namespace: dict[str, object] = {}
    code = _python_block("### Many services from a mapping or TOML")
    code = code.replace('policies = load_policies("resilience.toml")', "")
    exec(compile(code, "README mapping example", "exec"), namespace)  # noqa: S102
    policies = namespace["policies"]
    assert set(policies) == {"alpaca", "openai"}  # type: ignore[call-overload]


@pytest.fixture
def httpx_logger_level() -> Iterator[None]:
    """Restore the httpx logger's level the example changes."""
    logger = logging.getLogger("httpx")
    level = logger.level
    yield
    logger.setLevel(level)


def test_redaction_example_redacts_keys_and_path_segments(
    fault_server: FaultServer, httpx_logger_level: None
) -> None:
    """The example quiets httpx's log and its dead letter hides the e-mail, tenant and account."""
    fault_server.set_default(status(503, headers={"Retry-After": "0"}))  # instant retries
    namespace: dict[str, object] = {"BILLING_URL": fault_server.url("").rstrip("/")}
    code = _python_block("## Redaction and secrets")
    exec(compile(code, "README redaction example", "exec"), namespace)  # noqa: S102
    assert logging.getLogger("httpx").level == logging.WARNING
    [letter] = namespace["dead"].entries()  # type: ignore[attr-defined]
    assert letter.operation.endswith(
        "/v1/users/REDACTED/invoices?tenant=REDACTED&account=REDACTED&page=2"
    )
    for secret in ("bob@example.com", "acme", "=42"):
        assert secret not in repr(letter)
    targets = {r.target for r in fault_server.requests}
    assert targets == {"/v1/users/bob@example.com/invoices?tenant=acme&account=42&page=2"}
    assert fault_server.count() == 3  # the upstream got every attempt, with the real URL
