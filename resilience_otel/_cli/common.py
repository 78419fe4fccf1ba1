"""Command-line plumbing shared by the subcommands: one-line errors and typed option values.

Every expected failure (a bad option value, a path that cannot be written, a server that
cannot be reached or answers an error) ends as one line on standard error,
``<prog>: error: <what>``, and exit status 2, like argparse's own errors. A traceback means
a bug.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CliParser",
    "CommandError",
    "fail",
    "number",
    "one_line",
    "whole_number",
]

# ASCII notation only: float() would also take "1_000", "٣" and "infinity".
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_WHOLE = re.compile(r"[0-9]+")
_USERINFO = re.compile(r"//[^/@\s]*@")


class CommandError(Exception):
    """An expected failure of a command; ``main`` reports it on one line and exits with 2."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) collapsed to one space."""
    return " ".join(text.split())


def fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` as one line on stderr and exit with status 2.

    The user part of any ``scheme://user:password@host`` in the message is masked.
    """
    text = _USERINFO.sub("//***@", one_line(message))
    parser.exit(2, f"{parser.prog}: error: {text}\n")


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Report a usage error on one line and exit with status 2."""
        fail(self, f"{message} (see '{self.prog} --help')")


def number(what: str, admits: Callable[[float], bool], allowed: str) -> Callable[[str], float]:
    """An argparse ``type``: a finite decimal number that ``admits`` accepts.

    The error reads ``must be <what> <allowed>, got '<text>'``; argparse prefixes the option.
    """

    def parse(text: str) -> float:
        value = float(text) if _NUMBER.fullmatch(text.strip()) else math.nan
        if not (math.isfinite(value) and admits(value)):
            raise argparse.ArgumentTypeError(f"must be {what} {allowed}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` written with ASCII digits."""

    def parse(text: str) -> int:
        value = int(text.strip()) if _WHOLE.fullmatch(text.strip()) else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {low} and <= {high}, got {text!r}"
            )
        return value

    parse.__name__ = "integer"
    return parse
