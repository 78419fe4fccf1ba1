"""Keeping credentials out of spans, logs, metrics and dead letters.

Query keys and header names are judged by pattern: a name containing a credential word
(``token``, ``secret``, ``key``, ``password``, ``signature``, ``auth``, ``session``, ...) is
sensitive, whatever its case or separators. A harmless name that happens to contain one
(``keyword``, ``author``, ``zipcode``) is redacted too: a redacted value costs a little
debugging, a leaked one costs a credential.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from .._core.exceptions import ConfigError

__all__ = [
    "DEFAULT_SENSITIVE_QUERY_KEYS",
    "REDACTED",
    "RedactionConfig",
    "Redactor",
    "is_sensitive_name",
    "redact_text",
    "redact_url",
    "redaction_from_env",
]

REDACTED = "REDACTED"

# Examples of what the pattern below catches (kept for reference and backwards compatibility).
DEFAULT_SENSITIVE_QUERY_KEYS: frozenset[str] = frozenset(
    {
        "token", "access_token", "refresh_token", "id_token", "key", "api_key", "apikey",
        "api-key", "password", "passwd", "pwd", "secret", "client_secret", "signature", "sig",
        "auth", "authorization", "credential", "session", "sessionid", "code",
    }
)  # fmt: skip

# Searched in the lower-cased name; the anchored words must start it or be all of it.
_SENSITIVE_NAME = re.compile(
    r"token|secret|key|passw|pwd|passphrase|sig|auth|session|jwt|cred|code|cookie|bearer"
    r"|hmac|otp|ticket|private|^x-(?:amz|goog)-|^(?:pass|sid|pin)$"
)


@functools.lru_cache(maxsize=4096)
def is_sensitive_name(name: str) -> bool:
    """Whether a query key or header name is credential-like (cached: names are few)."""
    return _SENSITIVE_NAME.search(name.lower()) is not None


def _names(field: str, value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{field} must be a list of names, got {value!r}"
            + (" (a single string: wrap it in a list)" if isinstance(value, str) else ""),
            field=field,
        )
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{field} must hold non-empty strings, got {item!r}", field=field)
        names.append(_normal(item))
    return frozenset(names)


def _normal(name: str) -> str:
    # Header attribute names spell "-" as "_" (http.request.header.x_api_key): one spelling.
    return name.strip().lower().replace("_", "-")


def _patterns(field: str, value: object) -> tuple[re.Pattern[str], ...]:
    if isinstance(value, str | bytes | re.Pattern) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{field} must be a list of regular expressions, got {value!r}", field=field
        )
    compiled = []
    for item in value:
        if isinstance(item, re.Pattern):
            compiled.append(item)
            continue
        if not isinstance(item, str) or not item:
            raise ConfigError(
                f"{field} must hold non-empty regex strings, got {item!r}", field=field
            )
        try:
            compiled.append(re.compile(item))
        except re.error as exc:
            raise ConfigError(
                f"{field}: {item!r} is not a valid regex ({exc})", field=field
            ) from exc
    return tuple(compiled)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedactionConfig:
    """What a policy's clients keep out of spans, logs and dead letters, beyond the defaults.

    The defaults always apply: userinfo in URLs, the values of credential-like query keys,
    credential headers, and (for Redis and PostgreSQL) the values that server error texts
    repeat.

    Args:
        query_keys: more query keys whose values are redacted (exact names, any case).
        headers: more header names that never reach span attributes (any case, ``-`` or ``_``).
        path_segments: regular expressions; a URL path segment that fully matches one becomes
            ``REDACTED`` in ``url.full``, dead-letter operations and URLs quoted in error texts.
            None by default: path segments are kept unless you supply a rule.
        record_error_text: record Redis and PostgreSQL error texts as the server wrote them
            (with the values they repeat). Off by default: the error type, the SQLSTATE or Redis
            error prefix and a scrubbed message are recorded. URLs are redacted either way.
    """

    query_keys: frozenset[str] = frozenset()
    headers: frozenset[str] = frozenset()
    path_segments: tuple[re.Pattern[str], ...] = ()
    record_error_text: bool = False

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "query_keys", _names("RedactionConfig.query_keys", self.query_keys))
        _set(self, "headers", _names("RedactionConfig.headers", self.headers))
        _set(self, "path_segments", _patterns("RedactionConfig.path_segments", self.path_segments))
        if not isinstance(self.record_error_text, bool):
            raise ConfigError(
                f"RedactionConfig.record_error_text must be True or False, "
                f"got {self.record_error_text!r}",
                field="RedactionConfig.record_error_text",
            )


class Redactor:
    """Redacts URLs, URLs in text and header names for one client (compiled once).

    Args:
        query_keys / headers / path_segments: added to the defaults, as in
            :class:`RedactionConfig`.
    """

    CACHE_SIZE = 1024
    __slots__ = ("_cache", "_extra_headers", "_extra_keys", "_path")

    def __init__(
        self,
        query_keys: Iterable[str] = (),
        headers: Iterable[str] = (),
        path_segments: Iterable[str | re.Pattern[str]] = (),
    ) -> None:
        self._extra_keys = _names("redact_query_keys", query_keys)
        self._extra_headers = _names("redact_headers", headers)
        patterns = _patterns("redact_path_segments", path_segments)
        self._path = (
            re.compile("|".join(f"(?:{p.pattern})" for p in patterns)) if patterns else None
        )
        # url -> redacted url; bounded (cleared when full), as attempts repeat few URLs
        self._cache: dict[str, str] = {}

    @classmethod
    def for_config(
        cls,
        config: RedactionConfig,
        query_keys: Iterable[str] = (),
        headers: Iterable[str] = (),
        path_segments: Iterable[str | re.Pattern[str]] = (),
    ) -> Redactor:
        """A redactor for a policy's config plus a client's own additions."""
        return cls(
            [*config.query_keys, *_names("redact_query_keys", query_keys)],
            [*config.headers, *_names("redact_headers", headers)],
            [*config.path_segments, *_patterns("redact_path_segments", path_segments)],
        )

    def key_is_sensitive(self, key: str) -> bool:
        """Whether a query value under ``key`` is redacted."""
        return is_sensitive_name(key) or (
            bool(self._extra_keys) and _normal(key) in self._extra_keys
        )

    def header_is_sensitive(self, name: str) -> bool:
        """Whether a header's value must never be recorded."""
        return is_sensitive_name(name) or (
            bool(self._extra_headers) and _normal(name) in self._extra_headers
        )

    def url(self, url: str) -> str:
        """``url`` with userinfo replaced by ``REDACTED:REDACTED``, sensitive query values and
        rule-matching path segments by ``REDACTED``; the fragment is dropped."""
        if self._path is None and "@" not in url and "?" not in url and "#" not in url:
            return url  # nothing to hide: skip the parse (this runs on every attempt)
        cache = self._cache
        done = cache.get(url)
        if done is None:
            done = self._redact(url)
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            cache[url] = done
        return done

    def _redact(self, url: str) -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            return REDACTED
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}:{REDACTED}@" + netloc.rpartition("@")[2]
        path = parts.path
        if self._path is not None and path:
            path = "/".join(
                REDACTED if s and self._path.fullmatch(s) else s for s in path.split("/")
            )
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = "&".join(
                f"{quote(k, safe='')}={REDACTED if self.key_is_sensitive(k) else quote(v, safe='')}"
                for k, v in pairs
            )
        return urlunsplit((parts.scheme, netloc, path, query, ""))

    def text(self, text: str) -> str:
        """``text`` with every URL in it redacted (exception messages may quote them)."""
        if "://" not in text:
            return text
        return _URL_IN_TEXT.sub(self._redact_match, text)

    def _redact_match(self, match: re.Match[str]) -> str:
        # Sentence punctuation right after a URL belongs to the sentence, not the URL.
        url = match.group(0)
        stripped = url.rstrip(".,:;!?)]}")
        return self.url(stripped) + url[len(stripped) :]


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+")

DEFAULT_REDACTOR = Redactor()


def redact_url(url: str, sensitive_keys: Iterable[str] = ()) -> str:
    """``url`` redacted by the default rules plus ``sensitive_keys`` (see :class:`Redactor`)."""
    if sensitive_keys:
        return Redactor(query_keys=sensitive_keys).url(url)
    return DEFAULT_REDACTOR.url(url)


def redact_text(text: str) -> str:
    """Redact every URL found in free text by the default rules."""
    return DEFAULT_REDACTOR.text(text)


# (variable, field, how the value is split): comma-separated names, whitespace-separated regexes
REDACTION_ENV_VARS: tuple[tuple[str, str, str], ...] = (
    ("REDACT_QUERY_KEYS", "query_keys", "comma-separated query keys"),
    ("REDACT_HEADERS", "headers", "comma-separated header names"),
    ("REDACT_PATH_SEGMENTS", "path_segments", "whitespace-separated regexes"),
    ("RECORD_ERROR_TEXT", "record_error_text", "true or false"),
)
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def _env_value(field: str, var: str, raw: str) -> object:
    text = raw.strip()
    if field == "record_error_text":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{var}={raw!r} must be true or false", field=var)
    if field == "path_segments":
        return text.split()
    return [name for name in (part.strip() for part in text.split(",")) if name]


def redaction_from_env(env: Mapping[str, object], prefix: str) -> RedactionConfig:
    """The :class:`RedactionConfig` of ``REDACT_QUERY_KEYS``, ``REDACT_HEADERS``,
    ``REDACT_PATH_SEGMENTS`` and ``RECORD_ERROR_TEXT``; a ``prefix``-ed variable (the
    service's) replaces the global one."""
    values: dict[str, object] = {}
    for var, field, what in REDACTION_ENV_VARS:
        for candidate in (prefix + var, var):
            raw = env.get(candidate)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            if not isinstance(raw, str):
                raise ConfigError(
                    f"{candidate} must be a string ({what}), got {raw!r}", field=candidate
                )
            try:
                values[field] = _env_value(field, candidate, raw)
                RedactionConfig(**{field: values[field]})  # type: ignore[arg-type]
            except ConfigError as exc:
                raise ConfigError(f"{candidate}={raw!r}: {exc}", field=candidate) from exc
            break
    return RedactionConfig(**values)  # type: ignore[arg-type]
