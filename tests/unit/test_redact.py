"""Redaction: credentials never leave in URLs or in messages quoting them."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience_otel._telemetry.redact import Redactor, is_sensitive_name, redact_text, redact_url


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


# -- pattern matching ----------------------------------------------------------------------
ISSUE_KEYS = [
    "api_token",
    "auth_token",
    "x-api-key",
    "private_token",
    "access-token",
    "client-secret",
    "jwt",
    "oauth_token",
]
MORE_SENSITIVE_KEYS = [
    "apiKey",
    "X-API-KEY",
    "refresh_token",
    "session_id",
    "sessionid",
    "sid",
    "db_password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "hmac",
    "sig",
    "signature",
    "X-Amz-Signature",
    "x-goog-credential",
    "credentials",
    "authorization",
    "code",
    "cookie",
    "bearer",
    "otp",
    "ticket",
]
ORDINARY_KEYS = ["page", "limit", "symbol", "q", "sort", "from", "to", "fields", "id", "lang"]


@pytest.mark.parametrize("key", ISSUE_KEYS + MORE_SENSITIVE_KEYS)
def test_pattern_redacts_every_credential_like_key(key: str) -> None:
    """Any key containing a credential word is redacted, whatever its case or separators."""
    assert redact_url(f"https://api.test/v1?{key}=s3cr3t&page=2") == (
        f"https://api.test/v1?{key}=REDACTED&page=2"
    )


@pytest.mark.parametrize("key", ORDINARY_KEYS)
def test_pattern_keeps_ordinary_keys(key: str) -> None:
    """Ordinary parameters keep their values."""
    assert redact_url(f"https://api.test/v1?{key}=AAPL") == f"https://api.test/v1?{key}=AAPL"


def test_percent_encoded_key_is_matched_after_decoding() -> None:
    """An encoded key (api%5Ftoken) is judged by its decoded name."""
    assert "s3cr3t" not in redact_url("https://api.test/?api%5Ftoken=s3cr3t")


def test_is_sensitive_name_documents_the_false_positive_choice() -> None:
    """A harmless key containing a credential word (keyword) is redacted: leaking is worse."""
    assert is_sensitive_name("keyword")
    assert not is_sensitive_name("symbol")


_KEY_PARTS = st.sampled_from(
    ["token", "secret", "key", "password", "signature", "auth", "session", "jwt", "credential"]
)
_AFFIX = st.text(alphabet="abcxyz_-.", max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    prefix=_AFFIX,
    part=_KEY_PARTS,
    suffix=_AFFIX,
    upper=st.booleans(),
    value=st.text(min_size=1, max_size=20),
    others=st.lists(st.sampled_from(ORDINARY_KEYS), max_size=3),
)
def test_no_value_of_a_sensitive_key_survives(
    prefix: str, part: str, suffix: str, upper: bool, value: str, others: list[str]
) -> None:
    """Whatever the key's affixes, case and the value's characters, the value never survives."""
    key = prefix + (part.upper() if upper else part) + suffix
    marker = "ZQ" + value + "QZ"  # never occurs elsewhere in the URL
    query = "&".join([*(f"{o}=1" for o in others), f"{quote(key)}={quote(marker, safe='')}"])
    out = redact_url(f"https://api.test/v1/items?{query}")
    assert marker not in out
    assert quote(marker, safe="") not in out
    assert quote_plus(marker, safe="") not in out


# -- user rules --------------------------------------------------------------------------------
def test_redactor_adds_user_keys_to_the_pattern() -> None:
    """A Redactor with extra keys redacts them (any case) besides the built-in pattern."""
    redactor = Redactor(query_keys=["Tenant"])
    assert redactor.url("https://api.test/?TENANT=acme&token=t&page=2") == (
        "https://api.test/?TENANT=REDACTED&token=REDACTED&page=2"
    )


def test_path_segments_are_kept_without_a_rule() -> None:
    """Without a rule path segments pass through (they are not redacted by default)."""
    url = "https://api.test/v1/reset/9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    assert redact_url(url) == url


def test_path_rule_redacts_matching_segments_only() -> None:
    """A segment fully matching a rule becomes REDACTED; other segments and the query stay."""
    redactor = Redactor(path_segments=[r"[0-9a-f]{32}", re.compile(r"[^/]+@[^/]+")])
    url = "https://api.test/v1/users/bob@example.com/reset/9f8e7d6c5b4a39281706f5e4d3c2b1a0?page=2"
    assert redactor.url(url) == "https://api.test/v1/users/REDACTED/reset/REDACTED?page=2"


def test_path_rule_applies_to_urls_in_text() -> None:
    """URLs quoted in messages get the same path rule."""
    redactor = Redactor(path_segments=[r"sk-\w+"])
    assert redactor.text("GET https://api.test/keys/sk-abc123 failed") == (
        "GET https://api.test/keys/REDACTED failed"
    )


@pytest.mark.parametrize(
    "name", ["Authorization", "proxy-authorization", "Cookie", "set-cookie", "X-Api-Key"]
)
def test_default_sensitive_headers(name: str) -> None:
    """Credential headers are sensitive by default."""
    assert Redactor().header_is_sensitive(name)


def test_user_headers_are_sensitive() -> None:
    """Header names a user adds are sensitive too; other headers are not."""
    redactor = Redactor(headers=["X-Tenant"])
    assert redactor.header_is_sensitive("x-tenant")
    assert redactor.header_is_sensitive("x_tenant")  # as OTel attribute names spell it
    assert not redactor.header_is_sensitive("content-type")


def test_repeated_urls_are_served_from_a_bounded_cache() -> None:
    """Redacting many distinct URLs keeps the cache bounded."""
    redactor = Redactor()
    for n in range(5000):
        redactor.url(f"https://api.test/v1/items/{n}?token=t")
    assert len(redactor._cache) <= Redactor.CACHE_SIZE
