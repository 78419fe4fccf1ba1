"""The documentation site builds with --strict, and its generated references cover the code.

The site is built once per module (about five seconds): the configuration and telemetry pages
are generated from the package at build time, so these tests check that what the code defines
reaches the published pages.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from resilience_otel._config.env import ENV_VARS, HEALTH_ENV_VARS
from resilience_otel._telemetry import semconv
from resilience_otel._telemetry.redact import REDACTION_ENV_VARS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = (
    "resilience_otel",
    "resilience_otel.httpx",
    "resilience_otel.redis",
    "resilience_otel.asyncpg",
    "resilience_otel.dlq",
    "resilience_otel.health",
    "resilience_otel.alerts",
    "resilience_otel.grafana",
    "resilience_otel.prometheus",
    "resilience_otel.testing",
)
CONFIG_CLASSES = (
    "Policy",
    "BreakerConfig",
    "RetryConfig",
    "RetryOverride",
    "RetryBudgetConfig",
    "HealthConfig",
    "RedactionConfig",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page(site: Path, source: str) -> str:
    """The HTML built from ``docs/<source>`` (directory URLs: ``a/b.md`` -> ``a/b/index.html``)."""
    stem = source.removesuffix(".md")
    html = site / ("index.html" if stem == "index" else f"{stem}/index.html")
    return html.read_text(encoding="utf-8")


def text_of(html: str) -> str:
    """Visible text, roughly: tags dropped, so names split by highlighting markup rejoin."""
    return re.sub(r"<[^>]+>", "", html)


def nav_pages(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from nav_pages(value)


def test_every_nav_page_is_built(site: Path) -> None:
    """Every page in mkdocs.yml's nav exists as HTML in the built site."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    sources = list(nav_pages(config["nav"]))
    assert len(sources) >= 25
    for source in sources:
        assert (ROOT / "docs" / source).is_file(), source
        assert "<h1" in page(site, source), source


def test_configuration_page_lists_every_environment_variable(site: Path) -> None:
    """Each variable of the env tables (policy, health, redaction) is on the generated page."""
    text = text_of(page(site, "reference/configuration.md"))
    names = [v.name for v in (*ENV_VARS, *HEALTH_ENV_VARS)] + [v[0] for v in REDACTION_ENV_VARS]
    assert len(names) >= 20
    missing = [name for name in names if name not in text]
    assert missing == []
    assert "<!-- generated:" not in page(site, "reference/configuration.md")


def test_configuration_page_lists_every_config_field(site: Path) -> None:
    """Each field of each public config dataclass has a row on the generated page."""
    import resilience_otel

    html = page(site, "reference/configuration.md")
    for name in CONFIG_CLASSES:
        cls = getattr(resilience_otel, name)
        after = html.split(f'<h3 id="{name.lower()}"', 1)[1]
        section = text_of(after.split("<h3", 1)[0])  # up to the next class
        for field in dataclasses.fields(cls):
            assert field.name in section, f"{name}.{field.name}"


def test_telemetry_page_lists_every_metric(site: Path) -> None:
    """Each metric in the names module, by OTel and by Prometheus name, is on the page."""
    text = text_of(page(site, "reference/telemetry.md"))
    otel_names = [
        value[0]
        for value in vars(semconv).values()
        if isinstance(value, tuple) and len(value) == 3 and "." in str(value[0])
    ]
    assert len(otel_names) == len(semconv.PROMETHEUS_NAMES)
    for name in (*otel_names, *semconv.PROMETHEUS_NAMES.values()):
        assert name in text, name
    assert "<!-- generated:" not in page(site, "reference/telemetry.md")


def test_telemetry_page_lists_every_span_event(site: Path) -> None:
    """Each span event name in the names module is on the page."""
    text = text_of(page(site, "reference/telemetry.md"))
    events = [v for k, v in vars(semconv).items() if k.startswith("EVENT_")]
    assert events
    for name in events:
        assert name in text, name


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_api_page_documents_every_public_name(site: Path, module: str) -> None:
    """Each name in a public module's ``__all__`` has its own entry on the API page."""
    html = page(site, "reference/api.md")
    exported = importlib.import_module(module).__all__
    missing = [name for name in exported if f'id="{module}.{name}"' not in html]
    assert missing == []
