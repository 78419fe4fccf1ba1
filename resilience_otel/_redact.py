"""Keeping credentials out of spans, logs, metrics and dead letters."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DEFAULT_SENSITIVE_QUERY_KEYS", "redact_text", "redact_url"]

REDACTED = "REDACTED"

DEFAULT_SENSITIVE_QUERY_KEYS: frozenset[str] = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "key",
        "api_key",
        "apikey",
        "api-key",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "auth",
        "authorization",
        "credential",
        "session",
        "sessionid",
        "code",
    }
)
_SENSITIVE_PREFIXES = ("x-amz-", "x-goog-")


def _is_sensitive(key: str, extra: frozenset[str]) -> bool:
    lowered = key.lower()
    return (
        lowered in DEFAULT_SENSITIVE_QUERY_KEYS
        or lowered in extra
        or lowered.startswith(_SENSITIVE_PREFIXES)
    )


def redact_url(url: str, sensitive_keys: Iterable[str] = ()) -> str:
    """``url`` with userinfo replaced by ``REDACTED:REDACTED`` and sensitive query values
    replaced by ``REDACTED``; the fragment is dropped."""
    if "@" not in url and "?" not in url and "#" not in url:
        return url  # nothing to hide: skip the parse (this runs on every attempt)
    extra = frozenset(k.lower() for k in sensitive_keys)
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}:{REDACTED}@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{quote(k, safe='')}={REDACTED if _is_sensitive(k, extra) else quote(v, safe='')}"
            for k, v in pairs
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """Redact every URL found in free text (exception messages may quote them)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    # Sentence punctuation right after a URL belongs to the sentence, not the URL.
    url = match.group(0)
    stripped = url.rstrip(".,:;!?)]}")
    return redact_url(stripped) + url[len(stripped) :]
