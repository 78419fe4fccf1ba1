"""The SQL lexer, the literal scrubber built on it (with property tests) and the read-only
rule's opt-in for functions (no sockets)."""

# Statements are built from generated fragments to test the lexer; nothing is executed.
# ruff: noqa: S608

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience_otel._clients.postgres.sql import (
    COMMENT,
    LITERAL,
    OP,
    PARAM,
    QUOTED,
    SPACE,
    WORD,
    analyze,
    analyze_and_scrub,
    is_read_only,
    strip_literals,
    tokenize,
)

PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MARKER = "hunter2"


def kinds(text: str, *, backslash_quotes: bool = False) -> list[tuple[str, str]]:
    """(kind, text) of every token but whitespace."""
    tokens = tokenize(text, backslash_quotes=backslash_quotes)
    return [(token.kind, token.text) for token in tokens if token.kind != SPACE]


# -- the lexer -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "literal",
    [
        "'plain'",
        "'it''s'",
        "''",
        "E'it\\'s'",
        "e'tab\\t and \\\\'",
        "E'both '' and \\''",
        "U&'d\\0061t\\+000061'",
        "N'national'",
        "B'1010'",
        "X'1F'",
        "$$dollar 'quoted' text$$",
        "$tag$ $$ inside $tag$",
        "$a_1$x$a_1$",
        "42",
        "1.5",
        ".5",
        "1.",
        "1.5e10",
        "12e3",
        "1E-3",
        "0x1F",
        "0o17",
        "0b101",
        "1_000_000",
        "0x_FF",
        "123abc",  # letters glued to a number stay with it (PostgreSQL 15+ rejects them)
        "'unterminated",
        "E'unterminated \\",
        "$$unterminated",
        '"unterminated identifier',
    ],
)
def test_literal_is_one_token(literal: str) -> None:
    """Each form of constant, and every unterminated one, is a single literal token."""
    assert kinds(f"SELECT {literal}") == [(WORD, "SELECT"), (LITERAL, literal)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"Col ""x"""', [(QUOTED, '"Col ""x"""')]),
        ('U&"d\\0061t"', [(QUOTED, 'U&"d\\0061t"')]),
        ("$1 $23", [(PARAM, "$1"), (PARAM, "$23")]),
        ("a$1 b$$x", [(WORD, "a$1"), (WORD, "b$$x")]),  # $ inside a word is part of it
        ("-- note\n", [(COMMENT, "-- note")]),
        ("/* a /* b */ c */ x", [(COMMENT, "/* a /* b */ c */"), (WORD, "x")]),
        ("/* open", [(COMMENT, "/* open")]),
        ("a-/*c*/b", [(WORD, "a"), (OP, "-"), (COMMENT, "/*c*/"), (WORD, "b")]),
        ("1..2", [(LITERAL, "1"), (OP, "."), (LITERAL, ".2")]),
        ("x::int;", [(WORD, "x"), (OP, ":"), (OP, ":"), (WORD, "int"), (OP, ";")]),
        ("t.c", [(WORD, "t"), (OP, "."), (WORD, "c")]),
        ("café_ü", [(WORD, "café_ü")]),
        ("Estate 'x'", [(WORD, "Estate"), (LITERAL, "'x'")]),  # E only as a prefix
    ],
)
def test_other_tokens(text: str, expected: list[tuple[str, str]]) -> None:
    """Identifiers, parameters, comments, operators and separators are told apart."""
    assert kinds(text) == expected


def test_backslash_reading_of_plain_strings() -> None:
    """With backslash escapes a plain string ends later than with standard strings."""
    text = "'a\\' b '"
    assert kinds(text) == [(LITERAL, "'a\\'"), (WORD, "b"), (LITERAL, "'")]
    assert kinds(text, backslash_quotes=True) == [(LITERAL, text)]


@PROPERTY
@given(st.text())
def test_tokens_cover_the_text(text: str) -> None:
    """Any text, malformed or not, splits into tokens that join back into it."""
    tokens = tokenize(text)
    assert "".join(token.text for token in tokens) == text
    assert [token.start for token in tokens] == [
        sum(len(t.text) for t in tokens[:i]) for i in range(len(tokens))
    ]
    strip_literals(text)  # never raises


# -- property tests of the scrubber ----------------------------------------------------------------
# A statement is a list of fragments: (text, what the scrubbed output has in its place).
Fragment = tuple[str, str]

_content = st.builds(
    lambda before, after: before + MARKER + after,
    st.text(max_size=12),
    st.text(max_size=12),
)


def _dollar(content: str, tag: str) -> Fragment:
    while (content + f"${tag}$").find(f"${tag}$") != len(content):
        tag += "q"  # a tag the content does not close early
    return f"${tag}${content}${tag}$", "?"


def _block_body(content: str) -> str:
    while "/*" in content or "*/" in content or content.endswith("/"):
        content = content.replace("/*", "").replace("*/", "").rstrip("/")
    return content


_string_literals = st.one_of(
    _content.map(lambda c: ("'" + c.replace("'", "''") + "'", "?")),
    _content.map(lambda c: ("E'" + c.replace("\\", "\\\\").replace("'", "\\'") + "'", "?")),
    _content.map(lambda c: ("e'" + c.replace("\\", "\\\\").replace("'", "''") + "'", "?")),
    _content.map(lambda c: ("U&'" + c.replace("'", "''") + "'", "?")),
    _content.map(lambda c: ("N'" + c.replace("'", "''") + "'", "?")),
    st.builds(_dollar, _content, st.sampled_from(["", "x", "tag_1"])),
    st.from_regex(r"\A[bB]'[01]{0,8}'\Z").map(lambda t: (t, "?")),
    st.from_regex(r"\A[xX]'[0-9a-fA-F]{0,8}'\Z").map(lambda t: (t, "?")),
)
_numbers = st.from_regex(
    r"\A(?:[0-9](?:_?[0-9]){0,5}(?:\.[0-9]{0,3})?(?:[eE][+-]?[0-9]{1,3})?"
    r"|\.[0-9]{1,4}|0[xX][0-9a-fA-F]{1,6}|0[oO][0-7]{1,6}|0[bB][01]{1,8})\Z"
).map(lambda t: (t, "?"))
_comments = st.one_of(
    _content.map(lambda c: ("--" + re.sub(r"[\n\r]", "", c) + "\n", " ")),
    _content.map(lambda c: ("/*" + _block_body(c) + "*/", " ")),
    st.builds(
        lambda a, b, c: (f"/*{_block_body(a)}/*{_block_body(b)}*/{_block_body(c)}*/", " "),
        _content,
        _content,
        _content,
    ),
)
_kept = st.sampled_from(
    [
        *("SELECT", "FROM", "WHERE", "t", "col_1", "Estate", "$1", "$12", '"Quoted ""Id"""'),
        *("(", ")", ",", ";", "=", "+", "::", "<>", "*", "-", "/"),
    ]
).map(lambda t: (t, t))
_fragments = st.lists(st.one_of(_kept, _string_literals, _numbers, _comments), max_size=12)
_SEPARATORS = (" ", "\n", "\t ", "  ")


def _join(fragments: list[Fragment], column: int, separators: list[int]) -> str:
    return "".join(
        fragment[column] + _SEPARATORS[separators[i % len(separators)]]
        for i, fragment in enumerate(fragments)
    )


def _squash(text: str) -> str:
    return " ".join(text.split())


@PROPERTY
@given(_fragments, st.lists(st.integers(0, len(_SEPARATORS) - 1), min_size=1, max_size=4))
def test_no_literal_or_comment_survives(fragments: list[Fragment], separators: list[int]) -> None:
    """Literals become ``?``, comments go, the rest is kept exactly: no marker survives."""
    statement = _join(fragments, 0, separators)
    scrubbed = strip_literals(statement)
    assert MARKER not in scrubbed
    assert _squash(scrubbed) == _squash(_join(fragments, 1, separators))
    assert analyze_and_scrub(statement) == (analyze(statement), scrubbed)


@PROPERTY
@given(st.lists(st.one_of(_kept, _string_literals, _numbers, _comments), max_size=8))
def test_literals_next_to_punctuation_are_scrubbed(fragments: list[Fragment]) -> None:
    """Fragments glued to commas and parentheses without spaces are scrubbed just as well."""
    statement = ",".join(text for text, _ in fragments)
    expected = ",".join(kept for _, kept in fragments)
    scrubbed = strip_literals(statement)
    assert MARKER not in scrubbed
    assert _squash(scrubbed.replace(" ", "")) == _squash(expected.replace(" ", ""))


_backslash_strings = _content.map(lambda c: "'" + c.replace("\\", "\\\\").replace("'", "\\'") + "'")


@PROPERTY
@given(st.lists(st.one_of(_backslash_strings, _kept.map(lambda f: f[0])), max_size=10))
def test_strings_written_for_backslash_servers_never_leak(parts: list[str]) -> None:
    """Strings escaped for ``standard_conforming_strings=off`` never leak either."""
    assert MARKER not in strip_literals(" ".join(parts))


@PROPERTY
@given(st.lists(st.one_of(_string_literals, _comments), min_size=1, max_size=4))
def test_write_words_inside_literals_and_comments_do_not_count(
    hidden: list[Fragment],
) -> None:
    """Write words in literals and comments keep a SELECT read-only; a second statement not."""
    words = " DELETE FROM t; INSERT INTO t DROP "
    fragments = [(text.replace(MARKER, words), kept) for text, kept in hidden]
    select = "SELECT " + " ".join(text for text, _ in fragments) + "\n FROM t"
    assert is_read_only(select)
    assert not is_read_only(select + "; DELETE FROM t")


# -- the read-only rule's opt-in -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "trusted", "read_only"),
    [
        ("SELECT place_order(1)", False, False),
        ("SELECT place_order(1)", True, True),
        ("SELECT place_order(1)", frozenset({"place_order"}), True),
        ("SELECT shop.place_order(1)", frozenset({"place_order"}), True),
        ("SELECT other.place_order(1)", frozenset({"shop.place_order"}), False),
        ("SELECT shop.place_order(1)", frozenset({"shop.place_order"}), True),
        ("SELECT place_order(1), audit(2)", frozenset({"place_order"}), False),
        ("SELECT pg_notify('c', 'x')", True, False),
        ("SELECT nextval('s')", True, False),
        ("SELECT pg_advisory_lock(1)", True, False),
        ("SELECT place_order(1); SELECT 1", True, False),
        ("SELECT place_order(1) FOR UPDATE", True, False),
    ],
)
def test_read_only_functions_opt_in(
    query: str, trusted: bool | frozenset[str], read_only: bool
) -> None:
    """Trusted functions (all or named) are resendable; writing built-ins and locks never."""
    assert is_read_only(query, read_only_functions=trusted) is read_only


def test_analysis_lists_the_functions_called() -> None:
    """The analysis names the functions that may write, qualified as written."""
    analysis = analyze('SELECT count(*), place_order(1), "Audit"(2), shop.f(3) FROM t')
    assert analysis.functions == frozenset({"place_order", "audit", "shop.f"})
    assert not analysis.writes
    assert analysis.operation == "SELECT"
