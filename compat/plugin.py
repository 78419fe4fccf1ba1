"""pytest plugin for upstream test suites: ``-p compat.plugin``.

Always on:
- a network guard: connections leave through loopback only, and never reach the machine's
  shared Redis (6379) or PostgreSQL (5432), which upstream fixtures would flush: with
  ``--compat-ports 6379:P`` those meant for Redis on 6379 go to the test-owned server on P
  instead, the rest are refused; other host names do not resolve. A test that needs more fails
  the same way in both runs. Other ``FROM:TO`` pairs move a port upstream tests bind and
  connect to, so that two runs side by side do not fight over it.
- ``--compat-outcomes=PATH`` writes every test's outcome (passed, failed, error, skipped,
  xfailed, xpassed) as JSON, for :mod:`compat.run` to compare.

With ``--compat-wrap`` every client is wrapped as it is constructed, under a policy that can
neither retry nor trip (one attempt, a breaker threshold of 10**9, default call timeout):
- ``httpx.Client``/``httpx.AsyncClient``: its transport and every mounted transport are put
  inside ``ResilientTransport``/``AsyncResilientTransport``;
- ``redis.Redis``/``redis.asyncio.Redis``: ``resilience_otel.redis.instrument()`` with its
  defaults.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

REDIS_PORT = 6379
SHARED_PORTS = frozenset({REDIS_PORT, 5432})
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

_undo: list[Callable[[], None]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's options."""
    group = parser.getgroup("compat", "resilience-otel compatibility run")
    group.addoption(
        "--compat-wrap", action="store_true", help="wrap every httpx and redis client we can"
    )
    group.addoption("--compat-outcomes", metavar="PATH", help="write per-test outcomes as JSON")
    group.addoption(
        "--compat-ports",
        type=_port_map,
        default={},
        metavar="FROM:TO,...",
        help="move fixed ports (binds and connects): 6379:P sends connections meant for the "
        "shared Redis to a test-owned one; other pairs let two runs use one fixed port at once",
    )


def _port_map(text: str) -> dict[int, int]:
    """``"6379:5000,5380:5001"`` -> ``{6379: 5000, 5380: 5001}``."""
    try:
        pairs = (item.split(":") for item in text.split(",") if item)
        return {int(old): int(new) for old, new in pairs}
    except ValueError:
        raise pytest.UsageError(f"--compat-ports: expected FROM:TO,... got {text!r}") from None


def pytest_configure(config: pytest.Config) -> None:
    """Install the network guard, and the wrappers when asked."""
    _guard_network(config.getoption("--compat-ports"))
    if config.getoption("--compat-wrap"):
        policy = _policy()
        _wrap_httpx(policy)
        _wrap_redis(policy)
    config.pluginmanager.register(_Outcomes(config.getoption("--compat-outcomes")), "compat-out")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put back everything the plugin patched."""
    while _undo:
        _undo.pop()()


def _patch(owner: Any, name: str, replacement: Any) -> None:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    _undo.append(lambda: setattr(owner, name, original))


# network guard -------------------------------------------------------------------------------


def _route(address: Any, ports: Mapping[int, int]) -> Any:
    """Where a connection to ``address`` goes: ``address`` itself, its port moved by ``ports``,
    or ``None`` (refused: not loopback, or a shared service's port that was not moved)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return address  # a Unix socket path stays on this machine and is nobody else's
    host, port = address[0], address[1]
    if host not in _LOCAL_NAMES:
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    if port in ports:
        return (host, ports[port], *address[2:])
    return None if port in SHARED_PORTS else address


def _moved(address: Any, ports: Mapping[int, int]) -> Any:
    """``address`` to bind, its port moved by ``ports``."""
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in ports:
        return (address[0], ports[address[1]], *address[2:])
    return address


def _guard_network(ports: Mapping[int, int]) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_bind = socket.socket.bind
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        routed = _route(address, ports)
        if routed is None:
            raise ConnectionRefusedError(111, f"compat guard: no connection to {address!r}")
        real_connect(self, routed)

    def connect_ex(self: socket.socket, address: Any) -> int:
        routed = _route(address, ports)
        return 111 if routed is None else real_connect_ex(self, routed)

    def bind(self: socket.socket, address: Any) -> None:
        real_bind(self, _moved(address, ports))

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "") and name not in _LOCAL_NAMES:
            try:
                ipaddress.ip_address(name.split("%")[0])
            except ValueError:
                raise socket.gaierror(
                    socket.EAI_NONAME, f"compat guard: {name} not resolved"
                ) from None
        return real_getaddrinfo(host, *args, **kwargs)

    _patch(socket.socket, "connect", connect)
    _patch(socket.socket, "connect_ex", connect_ex)
    _patch(socket.socket, "bind", bind)
    _patch(socket, "getaddrinfo", getaddrinfo)


# wrappers ------------------------------------------------------------------------------------


def _policy() -> Any:
    from resilience_otel import BreakerConfig, Policy, RetryConfig

    return Policy(
        service="compat",
        breaker=BreakerConfig(failure_threshold=10**9),
        retry=RetryConfig(max_attempts=1),
    )


def _wrap_httpx(policy: Any) -> None:
    import httpx

    from resilience_otel import AsyncResilientTransport, ResilientTransport

    def wrapping(cls: type[Any], wrapper: type[Any]) -> None:
        original = cls.__init__

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self._transport = wrapper(self._transport, policy=policy)
            self._mounts = {
                pattern: None if inner is None else wrapper(inner, policy=policy)
                for pattern, inner in self._mounts.items()
            }

        _patch(cls, "__init__", __init__)

    wrapping(httpx.Client, ResilientTransport)
    wrapping(httpx.AsyncClient, AsyncResilientTransport)


def _wrap_redis(policy: Any) -> None:
    import redis
    import redis.asyncio

    from resilience_otel.redis import instrument

    def wrapping(cls: type[Any]) -> None:
        original = cls.__init__

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            # a subclass calling super().__init__ twice, or a client built inside another's
            if getattr(self, "_resilience_guard", None) is None:
                instrument(self, policy=policy)

        _patch(cls, "__init__", __init__)

    wrapping(redis.Redis)
    wrapping(redis.asyncio.Redis)


# outcomes ------------------------------------------------------------------------------------


class _Outcomes:
    """Collects one outcome per test id and writes them as JSON at the end of the session."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Fold the setup, call and teardown reports into one outcome."""
        nodeid, xfail = report.nodeid, hasattr(report, "wasxfail")
        if report.when == "call":
            if xfail:
                self.outcomes[nodeid] = "xfailed" if report.skipped else "xpassed"
            else:
                self.outcomes[nodeid] = report.outcome
        elif report.failed:  # a failing setup or teardown spoils a pass, not a failure
            if self.outcomes.get(nodeid) in (None, "passed", "xpassed"):
                self.outcomes[nodeid] = "error"
        elif report.skipped:
            self.outcomes[nodeid] = "xfailed" if xfail else "skipped"

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        """Write the outcomes."""
        if self.path:
            Path(self.path).write_text(json.dumps(self.outcomes, indent=0, sort_keys=True))
