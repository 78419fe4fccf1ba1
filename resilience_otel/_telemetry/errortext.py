"""What spans, logs and dead letters say about an exception: a safe text, never the raw one.

Every message has the URLs in it redacted. Redis error replies and PostgreSQL error texts
repeat the values they were given (``unknown command 'X', with args beginning with: ...``,
``invalid input syntax for type integer: "..."``, ``DETAIL: Key (email)=(...)``): they are
scrubbed too, keeping their wording, the Redis error prefix and the SQLSTATE, unless the
policy opts in to the raw text (``RedactionConfig.record_error_text``). Which client raised an
error is told from its class's module, so this module imports neither client.
"""

from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry.semconv.attributes import exception_attributes as ea

from .redact import DEFAULT_REDACTOR, Redactor

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "ErrorText",
    "error_code",
    "error_describer",
    "error_text",
    "qualified_type",
    "record_error",
    "safe_stacktrace",
]

ErrorText = Callable[[BaseException], str]
"""``error -> safe message``."""

_MAX_MESSAGE = 500
_MAX_CHAIN = 4  # chained exceptions shown in a stacktrace
_MAX_FRAMES = 32  # innermost frames shown per exception

# -- which client an error comes from ------------------------------------------------------------
_PLAIN, _REDIS_REPLY, _POSTGRES = 0, 1, 2


_ORIGINS: dict[type[BaseException], int] = {}  # bounded: error classes are few


def _origin(cls: type[BaseException]) -> int:
    known = _ORIGINS.get(cls)
    if known is None:
        known = _PLAIN
        for klass in cls.__mro__:
            module = klass.__module__
            if module == "redis.exceptions" and klass.__name__ == "ResponseError":
                known = _REDIS_REPLY  # a server reply (client-side errors repeat no values)
                break
            if module.startswith("asyncpg.exceptions") and klass.__name__ == "PostgresMessage":
                known = _POSTGRES
                break
        if len(_ORIGINS) < 512:
            _ORIGINS[cls] = known
    return known


# -- Redis -----------------------------------------------------------------------------------------
# redis-py strips these prefixes and picks the class from them.
_REDIS_CLASS_CODES = {
    "NoScriptError": "NOSCRIPT",
    "ExecAbortError": "EXECABORT",
    "BusyLoadingError": "LOADING",
    "ReadOnlyError": "READONLY",
    "NoPermissionError": "NOPERM",
    "OutOfMemoryError": "OOM",
    "TryAgainError": "TRYAGAIN",
    "MovedError": "MOVED",
    "AskError": "ASK",
    "ClusterDownError": "CLUSTERDOWN",
    "ClusterCrossSlotError": "CROSSSLOT",
    "MasterDownError": "MASTERDOWN",
}
_REDIS_CODE = re.compile(r"[A-Z][A-Z_]{1,31}(?= |$)")
_REDIS_PIPELINE = re.compile(r"Command # (\d+) \(.*\) of pipeline caused error: ", re.S)
_REDIS_SCRIPT = re.compile(r"@?user_script:.*", re.S)
_REDIS_ARGS = re.compile(r"with args beginning with:.*", re.S)
# A quoted value runs to the last quote of its kind on the line: servers quote values without
# escaping the quotes inside them ("x" leaked "y"), and an unterminated one runs to the end.
_QUOTED = re.compile(r"'(?:.*'|.*)|\"(?:.*\"|.*)")
# then any word holding a digit
_DIGITS = re.compile(r"[\w.:@/+\-]*\d[\w.:@/+\-]*")


def _quoted(match: re.Match[str]) -> str:
    found = match.group(0)
    quote = found[0]
    closed = len(found) > 1 and found[-1] == quote
    return f"{quote}?{quote}" if closed else f"{quote}?"


def _redis_code(error: BaseException, text: str) -> str:
    code = getattr(error, "status_code", None)
    if isinstance(code, str) and code:
        return code
    found = _REDIS_CODE.match(text)
    if found is not None:
        return found.group(0)
    for klass in type(error).__mro__:
        if klass.__name__ in _REDIS_CLASS_CODES:
            return _REDIS_CLASS_CODES[klass.__name__]
    return "ERR"  # redis-py strips the generic prefix from plain ResponseErrors


def _scrub_redis(error: BaseException, text: str) -> str:
    code = _redis_code(error, text)
    if text.startswith(code + " ") or text == code:
        text = text[len(code) :].lstrip()
    pipeline = _REDIS_PIPELINE.match(text)
    head = ""
    if pipeline is not None:  # redis-py quotes the whole command: keep only its index
        head = f"Command # {pipeline.group(1)} (?) of pipeline caused error: "
        text = text[pipeline.end() :]
    text = _REDIS_SCRIPT.sub("user_script: ?", text)
    text = _REDIS_ARGS.sub("with args beginning with: ?", text)
    text = _DIGITS.sub("?", _QUOTED.sub(_quoted, text))
    return f"{code} {head}{text}".rstrip()


# -- PostgreSQL ------------------------------------------------------------------------------------
# A double-quoted name right after one of these words is an identifier, not a value: kept.
_PG_TOKENS = re.compile(
    r"(?P<ident>\b(?:relation|column|constraint|table|index|schema|database|type|function|"
    r"sequence|view|trigger|extension|operator|cursor|statement|savepoint|role|collation|"
    r"domain|policy|publication|subscription|tablespace) \"[^\"]*\")"
    r"|'(?:.*'|.*)|\"(?:.*\"|.*)"
    r"|(?P<param>\$\d+)"
    r"|[\w.:@/+\-]*\d[\w.:@/+\-]*"
)


def _pg_token(match: re.Match[str]) -> str:
    if match.group("ident") is not None or match.group("param") is not None:
        return match.group(0)
    return _quoted(match) if match.group(0)[0] in "'\"" else "?"


def _scrub_postgres(text: str) -> str:
    # DETAIL, HINT and CONTEXT lines quote rows and values (Key (email)=(...)): first line only.
    first = text.split("\n", 1)[0]
    return _PG_TOKENS.sub(_pg_token, first)


# -- the text ----------------------------------------------------------------------------------
def error_text(
    error: BaseException, redactor: Redactor = DEFAULT_REDACTOR, raw: bool = False
) -> str:
    """The message to record for ``error``: URLs redacted (by ``redactor``), Redis replies and
    PostgreSQL texts scrubbed of the values they repeat unless ``raw``; at most 500 chars."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not break the call being recorded
        return ""
    if not raw:
        origin = _origin(type(error))
        if origin == _REDIS_REPLY:
            text = _scrub_redis(error, text)
        elif origin == _POSTGRES:
            text = _scrub_postgres(text)
    return redactor.text(text)[:_MAX_MESSAGE]


def error_describer(redactor: Redactor = DEFAULT_REDACTOR, raw: bool = False) -> ErrorText:
    """An :data:`ErrorText` bound to a client's redactor and its policy's opt-in."""
    return functools.partial(error_text, redactor=redactor, raw=raw)


def error_code(error: BaseException) -> str | None:
    """The server's error code: the SQLSTATE of a PostgreSQL error, the prefix of a Redis
    reply (``ERR``, ``WRONGTYPE``, ``NOSCRIPT``); ``None`` for other errors."""
    origin = _origin(type(error))
    if origin == _POSTGRES:
        state = getattr(error, "sqlstate", None)
        return state if isinstance(state, str) else None
    if origin == _REDIS_REPLY:
        try:
            text = str(error)
        except Exception:
            text = ""
        return _redis_code(error, text)
    return None


def qualified_type(error: BaseException) -> str:
    """``module.QualName`` of the error's class (bare for builtins), as OTel records it."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"


def safe_stacktrace(error: BaseException, describe: ErrorText) -> str:
    """A Python-style traceback of ``error`` and its causes: frame locations only (source
    lines may hold literals) and each exception's message as ``describe`` makes it."""
    chain: list[tuple[BaseException, str]] = []
    current: BaseException | None = error
    link = ""
    while current is not None and len(chain) < _MAX_CHAIN:
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "direct cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    parts: list[str] = []
    for exc, link_to_next in reversed(chain):
        frames = traceback.StackSummary.extract(
            traceback.walk_tb(exc.__traceback__), limit=None, lookup_lines=False
        )[-_MAX_FRAMES:]
        lines = ["Traceback (most recent call last):\n"] if frames else []
        lines += [f'  File "{f.filename}", line {f.lineno}, in {f.name}\n' for f in frames]
        lines.append(f"{qualified_type(exc)}: {describe(exc)}\n")
        parts.append("".join(lines))
        if link_to_next == "direct cause":
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
            )
        elif link_to_next == "context":
            parts.append(
                "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
    return "".join(parts)


def record_error(span: Span, error: BaseException, describe: ErrorText) -> None:
    """Add the ``exception`` event (type, safe message, safe stacktrace) to ``span``;
    the replacement for ``span.record_exception``, which records the raw text."""
    span.add_event(
        "exception",
        {
            ea.EXCEPTION_TYPE: qualified_type(error),
            ea.EXCEPTION_MESSAGE: describe(error),
            ea.EXCEPTION_STACKTRACE: safe_stacktrace(error, describe),
        },
    )
