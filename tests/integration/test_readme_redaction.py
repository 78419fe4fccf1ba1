"""The README's "Redaction and secrets" example runs against a real loopback server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

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
