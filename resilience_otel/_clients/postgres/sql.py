"""A PostgreSQL lexer and what is built on it: literal scrubbing and the read-only rule.

The lexer follows PostgreSQL's own (``src/backend/parser/scan.l``) where it decides where a
token ends: string constants (``'..'`` with ``''``, ``E'..'`` with backslash escapes,
``U&'..'``, ``N'..'``, bit strings ``B'..'``/``X'..'``), dollar quotes (``$$..$$``,
``$tag$..$tag$``), quoted identifiers, numeric constants (``1.5e10``, ``0x1F``, ``1_000``),
``--`` and nested ``/* */`` comments, parameters (``$1``), operators and ``;``. Malformed
input never leaks: an unterminated string, quoted identifier or comment runs to the end of the
text and is a literal (or a comment); letters glued to a number belong to the number.

Whether a backslash escapes a quote in ``'..'`` depends on the server's
``standard_conforming_strings`` (on, the default, it does not). The text alone cannot tell,
so where it matters (a plain string holding a backslash) the text is read both ways: what is
a literal or a comment in either reading is scrubbed, and a statement is read-only only if it
is read-only in both.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .sqlwords import (
    ANALYZE,
    NAMING,
    NOT_CALLS,
    READ_FIRST,
    ROW_LOCKS,
    SAFE_FUNCTIONS,
    WRITE_WORDS,
    WRITER_FUNCTIONS,
    WRITER_PREFIXES,
)

__all__ = [
    "COMMENT",
    "LITERAL",
    "OP",
    "PARAM",
    "QUOTED",
    "SPACE",
    "WORD",
    "Analysis",
    "Token",
    "analyze",
    "analyze_and_scrub",
    "is_read_only",
    "operation_name",
    "strip_literals",
    "tokenize",
]

WORD = "word"  # keyword or unquoted identifier
QUOTED = "quoted"  # quoted identifier: "Name", U&"..."
LITERAL = "literal"  # string, dollar-quoted, bit-string or numeric constant
PARAM = "param"  # $1
COMMENT = "comment"
SPACE = "space"
OP = "op"  # one character of an operator or punctuation: ( ) , ; . :: ...


class Token(NamedTuple):
    """One token: its kind, its text and where it starts in the statement."""

    kind: str
    text: str
    start: int


# -- the lexer -----------------------------------------------------------------------------------
_START = "A-Za-z_\x80-\U0010ffff"  # identifier start: letters, underscore, any non-ASCII
_JUNK = f"[{_START}0-9$]*"  # identifier characters glued to a number or parameter
_DIGITS = "[0-9](?:_?[0-9])*"
_STANDARD = r"'(?:[^']++|'')*+(?:'|\Z)"  # '' escapes a quote; unterminated: to the end
_ESCAPED = r"'(?:[^'\\]++|''|\\.)*+\\?(?:'|\Z)"  # a backslash also escapes
_NUMBER = (
    rf"(?:0[xX](?:_?[0-9A-Fa-f])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
    rf"|(?:{_DIGITS}(?:\.(?!\.)(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?){_JUNK}"
)
_DOLLAR = rf"\$(?P<tag>(?:[{_START}][{_START}0-9]*)?)\$.*?(?:\$(?P=tag)\$|\Z)"


def _token_pattern(plain: str) -> re.Pattern[str]:
    """The lexer's pattern, ``plain`` being how a ``'..'`` string ends."""
    literal = (
        rf"[eE]{_ESCAPED}|[uU]&{_STANDARD}|[bBxX]{_STANDARD}|[nN]{plain}|{plain}"
        rf"|{_DOLLAR}|{_NUMBER}"
    )
    # The commonest tokens first: the regex engine tries the alternatives in order.
    alternatives = [
        r"(?P<space>[ \t\n\r\f\v]+)",
        r"(?P<punct>[(),;=:*+<>\[\]]|\.(?![0-9]))",  # never the start of anything longer
        rf"(?P<word>(?![eE]'|[uU]&['\"]|[bBxXnN]')[{_START}][{_START}0-9$]*)",
        rf"(?P<literal>{literal})",
        r"(?P<line>--[^\n\r]*)",
        r"(?P<block>/\*)",
        rf"(?P<param>\$[0-9]+{_JUNK})",
        r'(?P<quoted>(?:[uU]&)?"(?:[^"]++|"")*+")',
        r'(?P<unterminated>(?:[uU]&)?".*)',  # a quoted identifier that never ends
        r"(?P<op>.)",
    ]
    return re.compile("|".join(alternatives), re.S)


_PATTERN = _token_pattern(_STANDARD)
_PATTERN_BACKSLASH = _token_pattern(_ESCAPED)
_KINDS = {
    "space": SPACE,
    "line": COMMENT,
    "block": COMMENT,
    "literal": LITERAL,
    "param": PARAM,
    "word": WORD,
    "quoted": QUOTED,
    "unterminated": LITERAL,
    "punct": OP,
    "op": OP,
}
_COMMENT_MARK = re.compile(r"/\*|\*/")


def tokenize(text: str, *, backslash_quotes: bool = False) -> list[Token]:
    """Split ``text`` into tokens; their texts joined give ``text`` back.

    Args:
        backslash_quotes: read ``'..'`` as a server with ``standard_conforming_strings=off``
            does (a backslash escapes the next character).
    """
    return list(_scan(text, _PATTERN_BACKSLASH if backslash_quotes else _PATTERN))


def _scan(text: str, pattern: re.Pattern[str]) -> Iterator[Token]:
    position, end = 0, len(text)
    while position < end:
        # finditer runs the scan in C; only a block comment (which nests) stops it.
        for match in pattern.finditer(text, position):
            group = match.lastgroup or "op"
            start = match.start()
            if group == "block":
                position = _comment_end(text, match.end())
                yield Token(COMMENT, text[start:position], start)
                break
            yield Token(_KINDS[group], match.group(), start)
        else:
            return


def _comment_end(text: str, position: int) -> int:
    """Where a ``/*`` comment whose body starts at ``position`` ends (comments nest)."""
    depth = 1
    while depth:
        mark = _COMMENT_MARK.search(text, position)
        if mark is None:
            return len(text)  # unterminated: the rest is comment
        depth += 1 if mark.group() == "/*" else -1
        position = mark.end()
    return position


def _other_reading(text: str, tokens: list[Token]) -> list[Token] | None:
    """The tokens as read with backslash escapes in ``'..'``, when that reading can differ
    (a plain string holds a backslash); ``None`` when both readings are the same."""
    for kind, token, _ in tokens:
        if kind == LITERAL and token[0] in "'nN" and "\\" in token:
            return tokenize(text, backslash_quotes=True)
    return None


# -- scrubbing -----------------------------------------------------------------------------------
def strip_literals(query: str) -> str:
    """``query`` with every literal replaced by ``?`` and every comment removed.

    String, dollar-quoted, bit-string and numeric constants become ``?``; keywords,
    identifiers (quoted or not), parameters (``$1``) and operators are kept. A token that is
    inside a literal or comment under the other reading of backslashes is a ``?`` too.
    """
    tokens = tokenize(query)
    return _scrub(query, tokens, _other_reading(query, tokens))


def _scrub(query: str, tokens: list[Token], other: list[Token] | None) -> str:
    hidden = None if other is None else _hidden(len(query), other)
    parts: list[str] = []
    for kind, text, start in tokens:
        if kind == LITERAL:
            parts.append("?")
        elif kind in (SPACE, COMMENT):
            # One separator where a comment was; never two in a row, none at the start.
            if parts and not parts[-1][-1].isspace():
                parts.append(text if kind == SPACE else " ")
        elif hidden is not None and hidden.find(1, start, start + len(text)) != -1:
            if parts[-1:] != ["?"]:  # one ? for a run the other reading calls a literal
                parts.append("?")
        else:
            parts.append(text)
    return "".join(parts).rstrip()


def _hidden(size: int, other: list[Token]) -> bytearray:
    """Positions inside a literal or comment under the other reading of backslashes."""
    hidden = bytearray(size)
    for kind, text, start in other:
        if kind in (LITERAL, COMMENT):
            hidden[start : start + len(text)] = b"\x01" * len(text)
    return hidden


# -- the read-only rule --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Analysis:
    """What a statement's text says about it.

    Attributes:
        operation: its first keyword, upper-cased and at most 16 characters (``UNKNOWN``
            when it has none): a bounded label value.
        writes: whether it may change data whatever its functions do (not one statement,
            not a read-only form, a write keyword, a built-in function that writes).
        functions: the functions it calls that are not known to be free of side effects,
            lower-cased, ``schema.name`` when qualified.
    """

    operation: str
    writes: bool
    functions: frozenset[str]

    def read_only(self, trusted: bool | frozenset[str] = False) -> bool:
        """Whether the statement is safe to resend after it reached the server.

        Args:
            trusted: ``True`` if every function it calls is read-only, or the lower-cased
                names of the functions known to be (a bare name matches in any schema).
        """
        if self.writes:
            return False
        if not self.functions or trusted is True:
            return True
        if trusted is False:
            return False
        return all(name in trusted or name.rpartition(".")[2] in trusted for name in self.functions)


def analyze(query: str) -> Analysis:
    """Read ``query``'s tokens: operation, whether it writes, which functions it calls."""
    scan = _scan(query, _PATTERN)
    tokens: list[Token] = []
    for token in scan:  # up to the first word: most statements are decided there
        tokens.append(token)
        if token.kind in (SPACE, COMMENT) or (token.kind == OP and token.text in "(;"):
            continue
        operation = token.text.upper()[:16] if token.kind == WORD else "UNKNOWN"
        if operation not in READ_FIRST:
            return Analysis(operation, True, frozenset())
        break
    tokens.extend(scan)
    return _analysis(tokens, _other_reading(query, tokens))


def analyze_and_scrub(query: str) -> tuple[Analysis, str]:
    """:func:`analyze` and :func:`strip_literals` at the cost of one reading."""
    tokens = tokenize(query)
    other = _other_reading(query, tokens)
    return _analysis(tokens, other), _scrub(query, tokens, other)


def _analysis(tokens: list[Token], other: list[Token] | None) -> Analysis:
    operation, writes, functions = _judge(tokens)
    if other is not None:
        _, other_writes, other_functions = _judge(other)
        writes = writes or other_writes
        functions = functions | other_functions
    return Analysis(operation, writes, functions)


def is_read_only(query: str, *, read_only_functions: bool | frozenset[str] = False) -> bool:
    """Whether ``query`` is safe to resend after it reached the server (from its text).

    One statement only; ``SELECT``, ``SHOW``, ``VALUES``, ``TABLE``, ``WITH`` or ``EXPLAIN``
    without a write keyword, row locks or a function that is not a known side-effect-free
    built-in, unless ``read_only_functions`` vouches for the functions it calls. A plain
    ``EXPLAIN`` (no ``ANALYZE``) only plans its statement and is read-only.
    """
    return analyze(query).read_only(read_only_functions)


def operation_name(query: str) -> str:
    """The statement's first keyword, upper-cased (``SELECT``); a bounded label value."""
    return analyze(query).operation


def _judge(tokens: list[Token]) -> tuple[str, bool, frozenset[str]]:
    """(operation, writes, functions) of a statement's tokens."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind == OP and token.text == ";":
            statements.append([])
        elif token.kind != SPACE and token.kind != COMMENT:
            statements[-1].append(token)
    statements = [statement for statement in statements if statement]
    if not statements:
        return "UNKNOWN", True, frozenset()
    code = statements[0]
    first = next((t for t in code if not (t.kind == OP and t.text == "(")), None)
    operation = first.text.upper()[:16] if first is not None and first.kind == WORD else "UNKNOWN"
    if len(statements) > 1 or operation not in READ_FIRST:
        return operation, True, frozenset()
    words = _keywords(code)
    if operation == "EXPLAIN" and not words & ANALYZE:
        return operation, False, frozenset()  # plans the statement without running it
    functions, writer = _calls(code)
    writes = writer or bool(words & WRITE_WORDS) or _locks_rows(code)
    return operation, writes, functions


def _keywords(code: list[Token]) -> set[str]:
    """Upper-cased unquoted words that are not parts of dotted names (``t.update``)."""
    words = set()
    last = len(code) - 1
    for index, token in enumerate(code):
        if token.kind != WORD:
            continue
        if index and code[index - 1].text == ".":
            continue
        if index < last and code[index + 1].text == ".":
            continue
        words.add(token.text.upper())
    return words


def _locks_rows(code: list[Token]) -> bool:
    """``FOR UPDATE``, ``FOR NO KEY UPDATE``, ``FOR SHARE``, ``FOR KEY SHARE``."""
    return any(
        token.kind == WORD
        and token.text.upper() == "FOR"
        and following.kind == WORD
        and following.text.upper() in ROW_LOCKS
        for token, following in itertools.pairwise(code)
    )


def _calls(code: list[Token]) -> tuple[frozenset[str], bool]:
    """The functions ``code`` calls that may have side effects, and whether one of them is a
    built-in that writes."""
    functions: set[str] = set()
    writer = False
    for index in range(len(code) - 1):
        token = code[index]
        if token.kind != WORD and token.kind != QUOTED:
            continue
        if code[index + 1].kind != OP or code[index + 1].text != "(":
            continue
        previous = code[index - 1] if index else None
        schema: str | None = None
        if previous is not None and previous.text == "." and index >= 2:
            schema = _name(code[index - 2])
        elif previous is not None and previous.kind == WORD and previous.text.lower() in NAMING:
            continue  # a column list: AS t(a, b), WITH RECURSIVE r(n)
        name = _name(token)
        if name in WRITER_FUNCTIONS or name.startswith(WRITER_PREFIXES):
            writer = True
        elif not _harmless(token, schema, name):
            functions.add(name if schema is None else f"{schema}.{name}")
    return frozenset(functions), writer


def _harmless(token: Token, schema: str | None, name: str) -> bool:
    """Whether ``name(`` is syntax, a type modifier or a side-effect-free built-in."""
    if token.kind != WORD:
        return False  # a quoted name is the user's own function
    if schema is None and name in NOT_CALLS:
        return True
    return schema in (None, "pg_catalog") and name in SAFE_FUNCTIONS


def _name(token: Token) -> str:
    """A name as compared: lower-cased; a quoted identifier without its quotes."""
    text = token.text
    if token.kind == QUOTED:
        text = text[text.index('"') + 1 : -1].replace('""', '"')
    return text.lower()
