"""Run httpx's and redis-py's own test suites plain, then wrapped, and compare: ``make compat``.

    python -m compat.run                 # both suites
    python -m compat.run --suite httpx   # one suite
    python -m compat.run --compare-only  # compare the outcomes of the last run again

Steps: install ``compat/versions.txt`` into this venv; download the pinned sdists with pip
into ``.compat/sdist`` (once); unpack their ``tests/`` into ``.compat/src``; run each suite's
client-facing tests with ``-p compat.plugin`` (plain), then again with ``--compat-wrap`` (every
client wrapped, see :mod:`compat.plugin`). Redis runs get a test-owned ``redis-server`` on a
free port each, never the shared one (upstream fixtures flush it).

Exit status 1 when a test passes plain but not wrapped and ``compat/known-differences.txt``
does not list it; logs and outcomes are in ``.compat/logs`` and ``.compat/results``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.redis_server import REDIS_SERVER, free_port

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ROOT / "compat" / "versions.txt"
KNOWN = ROOT / "compat" / "known-differences.txt"
WORK = ROOT / ".compat"
RUN_TIMEOUT = 1200.0  # seconds for one run of one suite; a hang fails the run
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass(frozen=True)
class Suite:
    """One upstream suite: which tests are client-facing and how to run them here."""

    name: str
    paths: tuple[str, ...]
    args: tuple[str, ...] = ()
    needs_redis: bool = False
    # its two runs cannot overlap (e.g. a server fixture on a fixed port)
    serial: bool = False
    # ports its tests bind and connect to, moved to free ones in each run (see compat.plugin)
    fixed_ports: tuple[int, ...] = ()


# Files that build a client; the rest (URL, header, decoder models) never meet a transport.
HTTPX = Suite(
    "httpx",
    paths=(
        "tests/client", "tests/test_api.py", "tests/test_asgi.py", "tests/test_auth.py",
        "tests/test_config.py", "tests/test_exceptions.py", "tests/test_main.py",
        "tests/test_multipart.py", "tests/test_timeouts.py", "tests/test_utils.py",
        "tests/test_wsgi.py",
    ),
    # its tests are anyio's; "network" tests reach the internet
    args=("-p", "no:asyncio", "-m", "not network", "--timeout=60"),
    serial=True,  # its server fixture binds 127.0.0.1:8000
)  # fmt: skip

# Left out: cluster, sentinel, TLS and module (search, JSON, bloom, timeseries, vector set)
# tests, which need servers we do not start; entraid/credential-provider tests, multi-database,
# fault-injection scenarios and maintenance notifications, which need Redis Enterprise or a
# proxy; the HTTP client tests, which are not a Redis client.
_REDIS_LEFT_OUT = (
    "test_cluster.py", "test_cluster_transaction.py", "test_sentinel.py",
    "test_sentinel_managed_connection.py", "test_ssl.py", "test_search.py", "test_json.py",
    "test_bloom.py", "test_timeseries.py", "test_vsets.py", "test_credentials.py",
    "test_multidb", "test_scenario",
)  # fmt: skip
REDIS = Suite(
    "redis",
    paths=("tests",),
    args=(
        *(f"--ignore=tests/{where}{name}" for where in ("", "test_asyncio/")
          for name in _REDIS_LEFT_OUT),
        *(f"--ignore=tests/{name}" for name in (
            "maint_notifications", "test_http", "test_auth", "test_search_aggregation.py",
            "test_search_querystring.py", "test_search_result.py")),
        "-m", "not onlycluster and not redismod and not ssl and not replica"
        " and not cp_integration and not multidb_integration",
    ),
    needs_redis=True,
    fixed_ports=(5380,),  # test_cwe_404's delay proxy
)  # fmt: skip
SUITES = {suite.name: suite for suite in (HTTPX, REDIS)}


def read_pins(path: Path = VERSIONS) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of the versions file."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep or not version:
                raise SystemExit(f"{path}: {raw!r} is not pinned as name==version")
            pins[name.strip().lower()] = version.strip()
    return pins


def read_known(path: Path = KNOWN) -> dict[tuple[str, str], str]:
    """``(suite, test id pattern) -> reason`` from the known-differences file."""
    known: dict[tuple[str, str], str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            # a test id may hold " | " (a parameter), a reason may not
            suite, _, rest = raw.partition(" | ")
            test, _, reason = rest.rpartition(" | ")
            parts = [suite.strip(), test.strip(), reason.strip()]
            if not all(parts) or parts[0] not in SUITES:
                raise SystemExit(
                    f"{path}:{number}: expected 'suite | test id | reason' with suite one of "
                    f"{sorted(SUITES)}, got {raw!r}"
                )
            known[(parts[0], parts[1])] = parts[2]
    return known


def matches(pattern: str, test: str) -> bool:
    """Whether ``test`` is ``pattern``, where ``*`` stands for any text (``[`` is literal)."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), test) is not None


def pip(*args: str) -> None:
    """Run this interpreter's pip."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    subprocess.run(command, check=True)  # noqa: S603 (our own interpreter and arguments)


def fetch(name: str, version: str) -> Path:
    """The unpacked tests of ``name==version``, downloaded from the package index once."""
    unpacked = WORK / "src" / f"{name}-{version}"
    if unpacked.is_dir():
        return unpacked
    sdist = WORK / "sdist" / f"{name}-{version}.tar.gz"
    if not sdist.is_file():
        # only this package from source: its build backend comes as a wheel (much faster)
        pip(
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            name,
            f"{name}=={version}",
            "-d",
            str(sdist.parent),
        )
    if not sdist.is_file():
        raise SystemExit(f"pip download did not produce {sdist}")
    partial = unpacked.with_name(unpacked.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    prefix = f"{name}-{version}/"
    with tarfile.open(sdist) as archive:
        # the tests and their pytest settings; the package itself comes from the venv
        members = [
            member
            for member in archive.getmembers()
            if member.name.startswith(prefix + "tests/") or member.name == prefix + "pyproject.toml"
        ]
        if not any(m.name.startswith(prefix + "tests/") for m in members):
            raise SystemExit(f"{sdist.name} ships no tests/")
        archive.extractall(partial.parent / "tmp-extract", members=members, filter="data")
    (partial.parent / "tmp-extract" / f"{name}-{version}").rename(partial)
    shutil.rmtree(partial.parent / "tmp-extract")
    partial.rename(unpacked)
    return unpacked


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A fresh ``redis-server`` on a free loopback port, killed on exit; yields its URL.

    Not ``tests/integration/redis_server.py``: redis-py's tests also need ``DEBUG`` (off by
    default since Redis 7) and protected ``CONFIG SET`` parameters.
    """
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="compat-redis-") as workdir:
        command = [
            REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir,
            "--save", "", "--appendonly", "no", "--enable-debug-command", "yes",
            "--enable-protected-configs", "yes", "--logfile", f"{workdir}/redis.log",
        ]  # fmt: skip
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603 (fixed binary)
        try:
            client = redis.Redis(port=port, socket_connect_timeout=0.2)
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server on port {port} did not start: {workdir}")
                time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}"
        finally:
            server.kill()
            server.wait()


def run_suite(
    suite: Suite, source: Path, mode: str, only: list[str] | None = None, tag: str = ""
) -> dict[str, str]:
    """Run ``suite`` once (``mode`` plain or wrapped; ``only`` these test ids, if given) and
    return its per-test outcomes."""
    results = WORK / "results" / f"{suite.name}-{mode}{tag}.json"
    log = WORK / "logs" / f"{suite.name}-{mode}{tag}.log"
    for path in (results, log):
        path.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        args = [*(suite.paths if only is None else only), *suite.args]
        ports: dict[int, int] = {}
        if suite.needs_redis:
            url = stack.enter_context(redis_server())
            # modules and TLS: a server without them and a closed port; tests that name
            # localhost:6379 themselves reach this server too (see compat.plugin)
            args += [f"--redis-url={url}/0", f"--redis-mod-url={url}",
                     "--redis-ssl-url=rediss://127.0.0.1:1"]  # fmt: skip
            ports = {6379: int(url.rsplit(":", 1)[1])}
        ports.update({port: free_port() for port in suite.fixed_ports})
        args.append("--compat-ports=" + ",".join(f"{a}:{b}" for a, b in ports.items()))
        if mode == "wrapped":
            args.append("--compat-wrap")
        command = [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "compat.plugin",
            f"--compat-outcomes={results}", "-rfE", *args,
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
        }
        started = time.monotonic()
        with log.open("w") as out:
            finished = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
                command, cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT, check=False,
            )  # fmt: skip
    if finished.returncode not in (0, 1) or not results.is_file():
        raise SystemExit(f"{suite.name} ({mode}) did not run (exit {finished.returncode}): {log}")
    outcomes: dict[str, str] = json.loads(results.read_text())
    print(f"  {suite.name:6} {mode:8} {summary(outcomes)}  {time.monotonic() - started:.0f} s")
    return outcomes


def summary(outcomes: dict[str, str]) -> str:
    """``passed 10, failed 2, ...`` in a fixed order."""
    counts = Counter(outcomes.values())
    return ", ".join(f"{name} {counts[name]}" for name in OUTCOMES if counts[name])


def compare(
    name: str, plain: dict[str, str], wrapped: dict[str, str], known: dict[tuple[str, str], str]
) -> list[str]:
    """Print how the two runs of suite ``name`` differ; return the unexplained regressions."""
    patterns = {pattern: reason for (suite, pattern), reason in known.items() if suite == name}
    lost = sorted(
        test for test, got in plain.items() if got == "passed" and wrapped.get(test) != "passed"
    )
    why = {test: next((r for p, r in patterns.items() if matches(p, test)), "") for test in lost}
    unexplained = [test for test in lost if not why[test]]
    other = sorted(
        test
        for test in plain.keys() | wrapped.keys()
        if plain.get(test) != wrapped.get(test) and test not in why
    )
    print(f"\n{name}: plain   {summary(plain)}\n{name}: wrapped {summary(wrapped)}")
    for title, tests in (
        ("passes plain, not wrapped (FAILS the run)", unexplained),
        ("known differences", [test for test in lost if why[test]]),
        ("other differences", other),
    ):
        if tests:
            print(f"  {title}: {len(tests)}")
            for test in tests:
                shown = f"    {test}: {plain.get(test)} -> {wrapped.get(test)}"
                print(f"{shown}  ({why[test]})" if why.get(test) else shown)
    stale = [p for p in patterns if not any(matches(p, test) for test in lost)]
    if stale:
        print(f"  listed in {KNOWN.name} but not different now: {', '.join(stale)}")
    return unexplained


def recheck(tests: list[str], run: Callable[[list[str], int], dict[str, str]]) -> list[str]:
    """The ``tests`` that still fail wrapped when run again alone, twice at most.

    Upstream suites hold timing and garbage-collection tests that now and then fail under the
    load of both runs side by side, plain as well as wrapped; one that passes wrapped on its
    own is not a difference wrapping makes. ``run(tests, attempt)`` runs them wrapped.
    """
    still = list(tests)
    for attempt in (1, 2):
        if not still:
            break
        outcomes = run(still, attempt)
        still = [test for test in still if outcomes.get(test) != "passed"]
    return still


def _rerun(suite: Suite, tests: list[str], attempt: int) -> dict[str, str]:
    return run_suite(
        suite, fetch(suite.name, read_pins()[suite.name]), "wrapped", tests, f"-rerun{attempt}"
    )


def run_all(suites: list[Suite], sources: dict[str, Path]) -> None:
    """Run every suite plain and wrapped, the runs side by side where they can overlap.

    Upstream suites mostly wait (on servers, sleeps and timeouts), so on two cores the runs
    side by side take little longer than the longest alone.
    """
    lanes: list[list[tuple[Suite, str]]] = []
    for suite in suites:
        runs = [(suite, mode) for mode in ("plain", "wrapped")]
        lanes += [runs] if suite.serial else [[run] for run in runs]

    def run_lane(lane: list[tuple[Suite, str]]) -> None:
        for suite, mode in lane:
            run_suite(suite, sources[suite.name], mode)

    with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
        for done in [pool.submit(run_lane, lane) for lane in lanes]:
            done.result()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make compat``."""
    parser = argparse.ArgumentParser(
        prog="python -m compat.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--suite", choices=sorted(SUITES), action="append", help="run only this suite (repeatable)"
    )
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="compare the outcomes of the last run without running anything",
    )
    options = parser.parse_args(argv)
    names = options.suite or list(SUITES)
    known = read_known()
    if not options.compare_only:
        pins = read_pins()
        pip("install", "-q", "-r", str(VERSIONS))
        sources = {name: fetch(name, pins[name]) for name in names}
        started = time.monotonic()
        run_all([SUITES[name] for name in names], sources)
        print(f"  all runs: {time.monotonic() - started:.0f} s")
    failures = 0
    for name in names:
        plain, wrapped = (
            json.loads((WORK / "results" / f"{name}-{mode}.json").read_text())
            for mode in ("plain", "wrapped")
        )
        lost = compare(name, plain, wrapped, known)
        if lost and not options.compare_only:
            lost = recheck(lost, functools.partial(_rerun, SUITES[name]))
            print(f"  rerun alone, wrapped: {len(lost)} still fail")
        failures += len(lost)
    if failures:
        print(f"\n{failures} test(s) pass plain but not wrapped; see .compat/logs/*-wrapped.log")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
