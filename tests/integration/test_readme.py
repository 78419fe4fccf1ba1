"""The README quick start and the guides' examples behave as their text says, against real
servers (tests/docs/test_snippets.py only checks that every block exits 0)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience_otel import CircuitOpenError

from .faultserver import FaultServer, status

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "guides" / "configuration.md"
REDACTION = ROOT / "docs" / "guides" / "redaction.md"
# The address every snippet writes for its HTTP upstream (the docs' snippet convention).
SNIPPET_ADDRESS = "http://127.0.0.1:8080"
QUOTE = {"symbol": "AAPL", "price": 187.5}


def _python_block(page: Path, heading: str, server: FaultServer | None = None) -> str:
    """The first ```python block after ``heading`` in ``page``, aimed at ``server``."""
    text = page.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no python block after {heading!r} in {page.name}"
    code = match.group(1)
    if server is not None:
        assert SNIPPET_ADDRESS in code
        code = code.replace(SNIPPET_ADDRESS, server.base_url)
    return code


def test_quick_start_runs_against_a_real_server(fault_server: FaultServer) -> None:
    """The quick start fetches a quote through the transport from a local server."""
    fault_server.set_default(status(200, body=QUOTE))
    namespace: dict[str, object] = {}
    code = _python_block(README, "## Quick start", fault_server)
    exec(compile(code, "README quick start", "exec"), namespace)  # noqa: S102
    assert namespace["quote"] == QUOTE
    assert fault_server.count("/quotes/AAPL", "GET") == 1


def test_quick_start_reports_an_open_breaker(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the upstream down, the quick start's handler catches CircuitOpenError."""
    monkeypatch.setenv("QUOTES_RETRY_BASE_DELAY", "10")  # milliseconds: keep the test quick
    fault_server.set_default("503")
    code = _python_block(README, "## Quick start", fault_server)
    setup, _, guarded = code.partition("try:")
    namespace: dict[str, object] = {}
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
    assert "quotes is down, try again in" in capsys.readouterr().out


def test_mapping_example_builds_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The many-services example builds one policy per service, from a mapping and from TOML."""
    monkeypatch.chdir(tmp_path)  # the example writes resilience.toml where it runs
    namespace: dict[str, object] = {}
    code = _python_block(CONFIGURATION, "## Many services from a mapping or TOML")
    exec(compile(code, "configuration guide mapping example", "exec"), namespace)  # noqa: S102
    policies = namespace["policies"]
    assert set(policies) == {"alpaca", "billing"}  # type: ignore[call-overload]
    assert (tmp_path / "resilience.toml").is_file()


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
    """The example quiets httpx's log and its dead letter hides the e-mail, tenant and account,
    while the upstream gets every attempt with the real URL."""
    fault_server.set_default(status(503, headers={"Retry-After": "0"}))  # instant retries
    namespace: dict[str, object] = {}
    code = _python_block(REDACTION, "## Adding rules", fault_server)
    exec(compile(code, "redaction guide example", "exec"), namespace)  # noqa: S102
    assert logging.getLogger("httpx").level == logging.WARNING
    [letter] = namespace["dead"].entries()  # type: ignore[attr-defined]
    assert letter.operation.endswith(
        "/v1/users/REDACTED/invoices?tenant=REDACTED&account=REDACTED&page=2"
    )
    for secret in ("bob@example.com", "acme", "=42"):
        assert secret not in repr(letter)
    targets = {r.target for r in fault_server.requests}
    assert targets == {"/fail/503/v1/users/bob@example.com/invoices?tenant=acme&account=42&page=2"}
    assert fault_server.count() == 3  # the upstream got every attempt, with the real URL
