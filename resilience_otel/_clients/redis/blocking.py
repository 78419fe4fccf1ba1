"""Block times of Redis blocking commands, read from their arguments.

A blocking command (``BLPOP k 5``, ``XREAD BLOCK 5000 STREAMS s $``, ``WAIT 1 100``) may wait
up to its own block time by design; its attempt may take that block time plus the policy's
attempt timeout. Only commands named here are parsed, and only their block argument: the
parser is found once per command spelling (the shell caches it with the command's name).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["BlockTime", "block_parser", "pipeline_block"]

BlockTime = Callable[[tuple[Any, ...]], float | None]
"""``args -> seconds`` the command may block (``math.inf``: forever), or ``None`` when this
call does not block (``XREAD`` without ``BLOCK``) or its block time cannot be read."""


def _number(value: Any) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 and not math.isnan(number) else None


def _seconds(value: Any) -> float | None:
    number = _number(value)
    if number is None:
        return None
    return math.inf if number == 0 else number  # 0 blocks forever


def _milliseconds(value: Any) -> float | None:
    number = _number(value)
    if number is None:
        return None
    return math.inf if number == 0 else number / 1000.0


def _last_seconds(args: tuple[Any, ...]) -> float | None:
    # BLPOP/BRPOP/BZPOPMIN/BZPOPMAX key [key ...] timeout; BLMOVE/BRPOPLPUSH ... timeout
    return _seconds(args[-1]) if len(args) > 1 else None


def _second_seconds(args: tuple[Any, ...]) -> float | None:
    # BLMPOP/BZMPOP timeout numkeys key [key ...] ...
    return _seconds(args[1]) if len(args) > 1 else None


def _block_option(args: tuple[Any, ...]) -> float | None:
    # XREAD [COUNT n] [BLOCK ms] STREAMS ...; XREADGROUP GROUP g c [COUNT n] [BLOCK ms] ...
    for index in range(1, len(args) - 1):
        word = args[index]
        if isinstance(word, bytes):
            word = word.decode("ascii", "replace")
        if not isinstance(word, str):
            continue
        upper = word.upper()
        if upper == "STREAMS":
            return None  # keys and IDs follow: a key named "BLOCK" is not the option
        if upper == "BLOCK":
            return _milliseconds(args[index + 1])
    return None


def _arg_milliseconds(position: int) -> BlockTime:
    def parse(args: tuple[Any, ...]) -> float | None:
        # WAIT numreplicas timeout; WAITAOF numlocal numreplicas timeout
        return _milliseconds(args[position]) if len(args) > position else None

    return parse


_PARSERS: dict[str, BlockTime] = {
    "BLPOP": _last_seconds,
    "BRPOP": _last_seconds,
    "BRPOPLPUSH": _last_seconds,
    "BLMOVE": _last_seconds,
    "BZPOPMIN": _last_seconds,
    "BZPOPMAX": _last_seconds,
    "BLMPOP": _second_seconds,
    "BZMPOP": _second_seconds,
    "XREAD": _block_option,
    "XREADGROUP": _block_option,
    "WAIT": _arg_milliseconds(2),
    "WAITAOF": _arg_milliseconds(3),
}


def block_parser(name: str) -> BlockTime | None:
    """The block-time reader of command ``name`` (upper case), or ``None`` if it never blocks."""
    return _PARSERS.get(name)


def pipeline_block(commands: list[tuple[str, tuple[Any, ...]]]) -> float | None:
    """How long a pipeline (not a transaction: inside ``MULTI`` nothing blocks) may block in
    all: the sum of its blocking commands' block times, or ``None`` when none blocks."""
    total: float | None = None
    for name, args in commands:
        parse = _PARSERS.get(name)
        if parse is None:
            continue
        seconds = parse(args)
        if seconds is not None:
            total = seconds if total is None else total + seconds
    return total
