"""Checks of the arguments every client shell takes (httpx transports, Redis, asyncpg), run
once at construction so a wrong argument fails there, naming itself, not deep in a call."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from .._config.policy import Policy
from .._core.breaker import CircuitBreaker
from .._core.validate import check_bool, check_callable, check_int, check_type
from .._telemetry.events import Observer

__all__ = ["MAX_HOSTS", "check_shell_args", "check_transport_args"]

MAX_HOSTS = 100_000
"""The most per-host breakers a transport may keep (``max_hosts``)."""


def check_shell_args(
    owner: str,
    *,
    policy: object,
    classifier: object,
    breaker: object,
    observers: object,
    clock: object,
    rng: object,
    flags: dict[str, object] | None = None,
) -> None:
    """Raise ``TypeError`` / ``ConfigError`` naming ``owner``'s first bad argument.

    Args:
        owner: the function or class the arguments were given to, e.g. ``"instrument"``.
        flags: further arguments that must be ``True`` or ``False``, by name.
    """
    check_type(f"{owner}(policy=...)", policy, Policy)
    if classifier is not None:
        check_callable(f"{owner}(classifier=...)", classifier)
    if breaker is not None:
        check_type(f"{owner}(breaker=...)", breaker, CircuitBreaker)
    if isinstance(observers, str | bytes) or not isinstance(observers, Iterable):
        raise TypeError(f"{owner}(observers=...) must be a list of Observer, got {observers!r}")
    if isinstance(observers, Collection):  # an iterator is left for the caller to consume
        for observer in observers:
            check_type(f"{owner}(observers=...) item", observer, Observer)
    if not callable(getattr(clock, "monotonic", None)):
        raise TypeError(f"{owner}(clock=...) must be a Clock (with monotonic()), got {clock!r}")
    if rng is not None:
        check_type(f"{owner}(rng=...)", rng, random.Random)
    for name, value in (flags or {}).items():
        check_bool(f"{owner}({name}=...)", value)


def check_transport_args(
    owner: str,
    transport: object,
    base: type,
    *,
    max_hosts: object,
    per_host: object,
    keep_payload: object,
    **common: object,
) -> None:
    """:func:`check_shell_args` plus the httpx transports' own arguments (``read_body`` and
    ``stream_idle_timeout`` are checked in ``_clients.http.stream``)."""
    if transport is not None:
        check_type(f"{owner}(transport=...)", transport, base)
    flags = {"per_host": per_host, "keep_payload": keep_payload}
    check_shell_args(owner, flags=flags, **common)
    check_int(f"{owner}(max_hosts=...)", max_hosts, 1, MAX_HOSTS)
