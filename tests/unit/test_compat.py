"""The compatibility suite's own pieces (``compat/``): the wrapping plugin, the network guard,
outcome folding, and how the runner reads its files and judges two runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio

from compat import plugin
from compat.run import compare, matches, read_known, read_pins, recheck
from resilience_otel import AsyncResilientTransport, ResilientTransport


@pytest.fixture
def wrapped() -> Iterator[None]:
    """Clients are wrapped as the plugin's ``--compat-wrap`` does, and unwrapped afterwards."""
    policy = plugin._policy()
    plugin._wrap_httpx(policy)
    plugin._wrap_redis(policy)
    yield
    while plugin._undo:
        plugin._undo.pop()()


@pytest.mark.usefixtures("wrapped")
def test_httpx_clients_get_our_transport_around_theirs() -> None:
    """A wrapped Client holds our transport around the one it would have used, mounts too."""
    inner = httpx.MockTransport(lambda request: httpx.Response(204))
    mounted = httpx.MockTransport(lambda request: httpx.Response(202))
    client = httpx.Client(transport=inner, mounts={"http://mounted": mounted, "all://none": None})
    assert isinstance(client._transport, ResilientTransport)
    assert client.get("http://example.test/").status_code == 204
    assert client.get("http://mounted/").status_code == 202
    mounts = list(client._mounts.values())
    assert None in mounts  # "no transport here" stays as it was
    assert any(isinstance(transport, ResilientTransport) for transport in mounts)
    assert isinstance(httpx.AsyncClient()._transport, AsyncResilientTransport)


@pytest.mark.usefixtures("wrapped")
def test_redis_clients_are_instrumented_at_construction() -> None:
    """Every redis.Redis and redis.asyncio.Redis built while wrapped is instrumented once."""
    for client in (redis.Redis(port=1), redis.asyncio.Redis(port=1)):
        assert getattr(client, "_resilience_guard", None) is not None


def test_unwrapping_restores_the_clients() -> None:
    """After the plugin's undo, new clients are plain again."""
    plugin._wrap_httpx(plugin._policy())
    plugin._wrap_redis(plugin._policy())
    plugin.pytest_unconfigure(None)  # type: ignore[arg-type]
    assert isinstance(httpx.Client()._transport, httpx.HTTPTransport)
    assert getattr(redis.Redis(port=1), "_resilience_guard", None) is None


@pytest.mark.parametrize(
    ("address", "routed"),
    [
        (("127.0.0.1", 8000), ("127.0.0.1", 8000)),
        (("::1", 8000, 0, 0), ("::1", 8000, 0, 0)),
        (("localhost", 8000), ("localhost", 8000)),
        ("/tmp/redis.sock", "/tmp/redis.sock"),
        (("127.0.0.1", 6379), ("127.0.0.1", 7000)),
        (("::1", 6379, 0, 0), ("::1", 7000, 0, 0)),
        (("127.0.0.1", 5380), ("127.0.0.1", 7001)),
        (("127.0.0.1", 5432), None),
        (("93.184.215.14", 80), None),
        (("93.184.215.14", 6379), None),
        (("example.com", 80), None),
    ],
)
def test_network_guard_keeps_to_loopback_and_off_shared_services(address: Any, routed: Any) -> None:
    """Only loopback is reachable; moved ports lead to their new ones, PostgreSQL's nowhere."""
    assert plugin._route(address, {6379: 7000, 5380: 7001}) == routed


def test_network_guard_refuses_the_shared_redis_unless_moved() -> None:
    """With no test-owned Redis, connections meant for the shared one are refused."""
    assert plugin._route(("127.0.0.1", 6379), {}) is None


def test_moved_ports_apply_to_binds_too() -> None:
    """A server an upstream test binds on a fixed port listens on the moved one instead."""
    assert plugin._moved(("127.0.0.1", 5380), {5380: 7001}) == ("127.0.0.1", 7001)
    assert plugin._moved(("127.0.0.1", 0), {5380: 7001}) == ("127.0.0.1", 0)
    assert plugin._moved("/tmp/s.sock", {5380: 7001}) == "/tmp/s.sock"


def test_port_map_option_is_parsed_and_checked() -> None:
    """``--compat-ports`` reads FROM:TO pairs and names itself when it cannot."""
    assert plugin._port_map("6379:7000,5380:7001") == {6379: 7000, 5380: 7001}
    with pytest.raises(pytest.UsageError, match=r"--compat-ports: expected .* got '6379'"):
        plugin._port_map("6379")


def _report(when: str, outcome: str, **extra: Any) -> Any:
    return SimpleNamespace(
        nodeid="t", when=when, outcome=outcome, failed=outcome == "failed",
        skipped=outcome == "skipped", **extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ([("setup", "passed"), ("call", "passed"), ("teardown", "passed")], "passed"),
        ([("setup", "passed"), ("call", "failed"), ("teardown", "failed")], "failed"),
        ([("setup", "passed"), ("call", "passed"), ("teardown", "failed")], "error"),
        ([("setup", "failed"), ("teardown", "passed")], "error"),
        ([("setup", "skipped"), ("teardown", "passed")], "skipped"),
    ],
)
def test_outcomes_fold_the_three_phases(reports: list[tuple[str, str]], expected: str) -> None:
    """Setup, call and teardown reports make one outcome; a failed teardown spoils a pass."""
    outcomes = plugin._Outcomes(None)
    for when, outcome in reports:
        outcomes.pytest_runtest_logreport(_report(when, outcome))
    assert outcomes.outcomes == {"t": expected}


def test_outcomes_tell_xfail_apart() -> None:
    """An expected failure is 'xfailed', an unexpected pass 'xpassed'."""
    outcomes = plugin._Outcomes(None)
    outcomes.pytest_runtest_logreport(_report("call", "skipped", wasxfail=""))
    assert outcomes.outcomes == {"t": "xfailed"}
    outcomes.pytest_runtest_logreport(_report("call", "passed", wasxfail=""))
    assert outcomes.outcomes == {"t": "xpassed"}


def test_pins_and_known_differences_are_read(tmp_path: Path) -> None:
    """The versions file gives name -> version; known differences give (suite, id) -> reason."""
    versions = tmp_path / "versions.txt"
    versions.write_text("# suites\nhttpx==0.28.1  # pinned\nRedis==8.1.0\n")
    assert read_pins(versions) == {"httpx": "0.28.1", "redis": "8.1.0"}
    known = tmp_path / "known.txt"
    known.write_text("# comment\n\nhttpx | tests/a.py::t[x | y] | checks the type\n")
    assert read_known(known) == {("httpx", "tests/a.py::t[x | y]"): "checks the type"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("httpx==\n", "is not pinned as name==version"),
        ("httpx>=0.28\n", "is not pinned as name==version"),
    ],
)
def test_unpinned_versions_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    """A line that is not name==version stops the run, naming the file and the line."""
    versions = tmp_path / "versions.txt"
    versions.write_text(text)
    with pytest.raises(SystemExit, match=fragment):
        read_pins(versions)


@pytest.mark.parametrize(
    "line", ["httpx | tests/a.py::t\n", "aiohttp | tests/a.py::t | why\n", "httpx |  | why\n"]
)
def test_malformed_known_differences_are_refused(tmp_path: Path, line: str) -> None:
    """A line without suite, test id and reason, or with an unknown suite, stops the run."""
    known = tmp_path / "known.txt"
    known.write_text(line)
    with pytest.raises(SystemExit, match=r"known.txt:1: expected 'suite \| test id \| reason'"):
        read_known(known)


@pytest.mark.parametrize(
    ("pattern", "test", "matched"),
    [
        ("tests/a.py::t", "tests/a.py::t", True),
        ("tests/a.py::t", "tests/a.py::t2", False),
        ("tests/a.py::t[*]", "tests/a.py::t[http://[::1]]", True),
        ("tests/a.py::t[*]", "tests/a.py::tx[1]", False),
        ("tests/a.py::t[ab]", "tests/a.py::ta", False),
    ],
)
def test_known_difference_patterns(pattern: str, test: str, matched: bool) -> None:
    """``*`` stands for any text; brackets are literal."""
    assert matches(pattern, test) is matched


def test_compare_fails_only_on_unexplained_lost_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """A pass lost when wrapped fails the run unless listed; other changes are only shown."""
    plain = {"a": "passed", "b": "passed", "c": "failed", "d": "passed", "e": "skipped"}
    wrapped = {"a": "passed", "b": "failed", "c": "passed", "d": "error", "e": "skipped"}
    known = {("httpx", "d"): "checks the transport's type"}
    assert compare("httpx", plain, wrapped, known) == ["b"]
    out = capsys.readouterr().out
    assert "passes plain, not wrapped (FAILS the run): 1" in out
    assert "d: passed -> error  (checks the transport's type)" in out
    assert "other differences: 1\n    c: failed -> passed" in out


def test_compare_reports_stale_known_differences(capsys: pytest.CaptureFixture[str]) -> None:
    """A listed test that no longer differs is named, so the list stays honest."""
    known = {("redis", "gone"): "was different"}
    assert compare("redis", {"gone": "passed"}, {"gone": "passed"}, known) == []
    assert "known-differences.txt but not different now: gone" in capsys.readouterr().out


def test_recheck_keeps_only_tests_that_fail_wrapped_again_alone() -> None:
    """A test that passes on a rerun is load flakiness; one failing both reruns is a difference."""
    script = {
        "t::flaky": ["passed"],
        "t::broken": ["failed", "failed"],
        "t::late": ["failed", "passed"],
    }
    runs: list[tuple[list[str], int]] = []

    def run(tests: list[str], attempt: int) -> dict[str, str]:
        runs.append((list(tests), attempt))
        return {test: script[test][attempt - 1] for test in tests}

    assert recheck(["t::flaky", "t::broken", "t::late"], run) == ["t::broken"]
    assert runs == [(["t::flaky", "t::broken", "t::late"], 1), (["t::broken", "t::late"], 2)]
    assert recheck([], run) == []
    assert len(runs) == 2  # nothing to recheck runs nothing
