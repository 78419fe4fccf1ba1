"""Redaction settings: in Policy, from the environment, a mapping or TOML, and on transports."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience_otel import (
    ConfigError,
    InMemoryDeadLetterQueue,
    Policy,
    RedactionConfig,
    ResilientTransport,
    RetryConfig,
    load_policies,
    policies_from_mapping,
)
from resilience_otel.testing import FakeClock


def test_defaults_add_nothing_and_keep_error_text_scrubbed() -> None:
    """A policy's default redaction adds no keys and does not record raw error texts."""
    redaction = Policy(service="svc").redaction
    assert redaction == RedactionConfig()
    assert redaction.record_error_text is False


def test_names_are_normalised() -> None:
    """Names are stored lower-case with one spelling for - and _."""
    config = RedactionConfig(query_keys=["Tenant_ID"], headers=["X-Tenant"])
    assert config.query_keys == frozenset({"tenant-id"})
    assert config.headers == frozenset({"x-tenant"})


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"query_keys": "tenant"}, "RedactionConfig.query_keys"),
        ({"headers": ["ok", ""]}, "RedactionConfig.headers"),
        ({"headers": [3]}, "RedactionConfig.headers"),
        ({"path_segments": ["("]}, "RedactionConfig.path_segments"),
        ({"path_segments": r"\d+"}, "RedactionConfig.path_segments"),
        ({"record_error_text": "no"}, "RedactionConfig.record_error_text"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(
    kwargs: dict[str, object], named: str
) -> None:
    """A string for a list, an empty or non-string name, a bad regex, a non-bool: ConfigError."""
    with pytest.raises(ConfigError) as caught:
        RedactionConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == named
    assert named in str(caught.value)


def test_policy_rejects_a_non_config() -> None:
    """Policy.redaction must be a RedactionConfig."""
    with pytest.raises(ConfigError, match=r"Policy\.redaction"):
        Policy(service="svc", redaction={"query_keys": ["x"]})  # type: ignore[arg-type]


def test_from_env_reads_the_redaction_variables() -> None:
    """REDACT_* and RECORD_ERROR_TEXT are read; the service's prefixed variable wins."""
    policy = Policy.from_env(
        "alpaca",
        {
            "REDACT_QUERY_KEYS": "tenant, account",
            "ALPACA_REDACT_QUERY_KEYS": "customer",
            "REDACT_HEADERS": "X-Tenant",
            "REDACT_PATH_SEGMENTS": r"[0-9a-f]{32}  [^/]+@[^/]+",
            "ALPACA_RECORD_ERROR_TEXT": "true",
        },
    )
    redaction = policy.redaction
    assert redaction.query_keys == frozenset({"customer"})
    assert redaction.headers == frozenset({"x-tenant"})
    assert [p.pattern for p in redaction.path_segments] == [r"[0-9a-f]{32}", r"[^/]+@[^/]+"]
    assert redaction.record_error_text is True


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RECORD_ERROR_TEXT": "maybe"}, "RECORD_ERROR_TEXT"),
        ({"SVC_REDACT_PATH_SEGMENTS": "("}, "SVC_REDACT_PATH_SEGMENTS"),
    ],
)
def test_bad_redaction_variables_name_the_variable(env: dict[str, str], named: str) -> None:
    """A malformed variable raises ConfigError naming it and its value."""
    with pytest.raises(ConfigError) as caught:
        Policy.from_env("svc", env)
    assert caught.value.field == named
    assert f"{named}=" in str(caught.value)


def test_mapping_and_toml_configure_redaction(tmp_path: Path) -> None:
    """A [service.redaction] table sets the same fields; unknown keys name their path."""
    toml = tmp_path / "resilience.toml"
    toml.write_text(
        "[alpaca.redaction]\n"
        'query_keys = ["tenant"]\n'
        'headers = ["x-tenant"]\n'
        "path_segments = ['sk-\\w+']\n"
        "record_error_text = false\n",
        encoding="utf-8",
    )
    redaction = load_policies(toml)["alpaca"].redaction
    assert redaction.query_keys == frozenset({"tenant"})
    assert redaction.path_segments[0].fullmatch("sk-abc")
    with pytest.raises(ConfigError, match=r"alpaca\.redaction\.keys"):
        policies_from_mapping({"alpaca": {"redaction": {"keys": ["x"]}}})
    with pytest.raises(ConfigError, match=r"alpaca\.redaction.*query_keys"):
        policies_from_mapping({"alpaca": {"redaction": {"query_keys": "tenant"}}})


# -- transports --------------------------------------------------------------------------------
def test_transport_keys_add_to_the_policy_keys() -> None:
    """Keys given to the transport and in the policy are both redacted in dead letters."""
    dead = InMemoryDeadLetterQueue()
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(503)),
        policy=Policy(
            service="svc",
            retry=RetryConfig(max_attempts=1),
            redaction=RedactionConfig(query_keys=["account"]),
        ),
        dead_letters=dead,
        clock=FakeClock(),
        redact_query_keys=["tenant"],
    )
    with httpx.Client(transport=transport) as client:
        client.get("https://api.test/v1?tenant=acme&account=42&page=2")
    [letter] = dead.entries()
    assert letter.operation == "GET https://api.test/v1?tenant=REDACTED&account=REDACTED&page=2"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"redact_query_keys": "tenant"}, "redact_query_keys"),
        ({"redact_headers": [None]}, "redact_headers"),
        ({"redact_path_segments": ["[unclosed"]}, "redact_path_segments"),
    ],
)
def test_bad_transport_options_are_config_errors(kwargs: dict[str, object], named: str) -> None:
    """The transport's redaction options are validated at construction."""
    with pytest.raises(ConfigError, match=named):
        ResilientTransport(
            httpx.MockTransport(lambda request: httpx.Response(200)),
            policy=Policy(service="svc"),
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def capture_all_request_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ask opentelemetry-instrumentation-httpx to capture every request header."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")


def test_captured_request_headers_are_redacted(capture_all_request_headers: None) -> None:
    """Headers the instrumentation captures reach our attempt span redacted when sensitive."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        policy=Policy(service="svc", redaction=RedactionConfig(headers=["x-account"])),
        tracer_provider=provider,
        clock=FakeClock(),
        redact_headers=["X-Tenant"],
    )
    client = httpx.Client(transport=transport)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    try:
        client.get(
            "https://api.test/v1",
            headers={
                "Authorization": "Bearer tok-abc",
                "X-Api-Key": "k3y",
                "X-Tenant": "acme",
                "X-Account": "acct-9",
                "Accept": "application/json",
            },
        )
    finally:
        HTTPXClientInstrumentor.uninstrument_client(client)
        client.close()
        provider.shutdown()
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    captured = {k: v for k, v in attributes.items() if k.startswith("http.request.header.")}
    assert captured["http.request.header.accept"] == ("application/json",)
    for name in ("authorization", "x_api_key", "x_tenant", "x_account"):
        assert captured[f"http.request.header.{name}"] == ("REDACTED",)
    text = repr(attributes)
    for secret in ("tok-abc", "k3y", "acme", "acct-9"):
        assert secret not in text


def test_path_rule_from_the_policy_applies_to_url_full() -> None:
    """A policy's path rule redacts url.full on attempt spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    transport = ResilientTransport(
        httpx.MockTransport(lambda request: httpx.Response(200)),
        policy=Policy(
            service="svc", redaction=RedactionConfig(path_segments=[re.compile(r"acct-\d+")])
        ),
        tracer_provider=provider,
        clock=FakeClock(),
    )
    with httpx.Client(transport=transport) as client:
        client.get("https://api.test/v1/accounts/acct-991/orders")
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["url.full"] == "https://api.test/v1/accounts/REDACTED/orders"
    provider.shutdown()
