"""Redaction: credentials never leave in URLs or in messages quoting them."""

from __future__ import annotations

import pytest

from resilience_otel._redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://alice:hunter2@api.test/v1", "https://REDACTED:REDACTED@api.test/v1"),
        ("https://alice@api.test/v1", "https://REDACTED:REDACTED@api.test/v1"),
        ("https://:hunter2@api.test/v1", "https://REDACTED:REDACTED@api.test/v1"),
        ("http://alice:hunter2@api.test:8443/", "http://REDACTED:REDACTED@api.test:8443/"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://REDACTED:REDACTED@127.0.0.1:6379/0"),
    ],
)
def test_userinfo_is_redacted(url: str, expected: str) -> None:
    """Any userinfo becomes REDACTED:REDACTED; host, port and path stay."""
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "key",
        "api_key",
        "apikey",
        "password",
        "secret",
        "signature",
        "sig",
        "access_token",
        "client_secret",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Goog-Credential",
        "X-Goog-Signature",
    ],
)
def test_sensitive_query_value_is_redacted(key: str) -> None:
    """The value of each sensitive query key is replaced; the key itself is kept."""
    url = f"https://api.test/v1?{key}=s3cr3t"
    assert redact_url(url) == f"https://api.test/v1?{key}=REDACTED"


@pytest.mark.parametrize("key", ["TOKEN", "Api_Key", "ApiKey", "PassWord", "x-amz-signature"])
def test_sensitive_keys_match_case_insensitively(key: str) -> None:
    """Key matching ignores case."""
    assert redact_url(f"https://api.test/?{key}=s3cr3t") == f"https://api.test/?{key}=REDACTED"


def test_other_query_values_are_kept() -> None:
    """Non-sensitive parameters keep their values and order around redacted ones."""
    url = "https://api.test/v1/bars?symbol=AAPL&token=s3cr3t&limit=100"
    assert redact_url(url) == "https://api.test/v1/bars?symbol=AAPL&token=REDACTED&limit=100"


def test_repeated_and_blank_sensitive_values_are_redacted() -> None:
    """Every occurrence of a sensitive key is redacted, even an empty one."""
    url = "https://api.test/?sig=a&sig=b&token="
    assert redact_url(url) == "https://api.test/?sig=REDACTED&sig=REDACTED&token=REDACTED"


def test_fragment_is_dropped() -> None:
    """The fragment (which may hold OAuth tokens) is removed."""
    assert redact_url("https://app.test/cb?page=1#access_token=s3cr3t") == (
        "https://app.test/cb?page=1"
    )


def test_extra_sensitive_keys() -> None:
    """Extra keys (any case) are redacted besides the defaults."""
    url = "https://api.test/?tenant=acme&account=42&page=2"
    assert redact_url(url, ["Tenant", "ACCOUNT"]) == (
        "https://api.test/?tenant=REDACTED&account=REDACTED&page=2"
    )


def test_url_without_secrets_is_unchanged() -> None:
    """A plain URL passes through as it was."""
    assert redact_url("https://api.test/v1/orders?status=open") == (
        "https://api.test/v1/orders?status=open"
    )


def test_unparseable_url_is_fully_redacted() -> None:
    """A URL that cannot be parsed is replaced entirely rather than leaked."""
    assert redact_url("http://alice:hunter2@[::1/") == "REDACTED"


def test_redact_text_redacts_url_with_credentials() -> None:
    """A message quoting a URL with userinfo and a key has both redacted, the rest kept."""
    message = "GET https://bob:s3cret@api.test/v1?key=abc123 failed: connection refused"
    assert redact_text(message) == (
        "GET https://REDACTED:REDACTED@api.test/v1?key=REDACTED failed: connection refused"
    )


def test_redact_text_stops_at_quotes() -> None:
    """A URL in quotes is redacted up to the closing quote."""
    message = "Server error '503' for url 'https://bob:s3cret@api.test/x?token=t'"
    assert redact_text(message) == (
        "Server error '503' for url 'https://REDACTED:REDACTED@api.test/x?token=REDACTED'"
    )


def test_redact_text_handles_several_urls() -> None:
    """Every URL in the text is redacted."""
    message = "from http://a:1@x.test/ to http://b:2@y.test/"
    assert redact_text(message) == (
        "from http://REDACTED:REDACTED@x.test/ to http://REDACTED:REDACTED@y.test/"
    )


def test_redact_text_without_url_is_unchanged() -> None:
    """Text with no URL in it is returned as is."""
    assert redact_text("timeout after 3 attempts: key=abc") == ("timeout after 3 attempts: key=abc")
