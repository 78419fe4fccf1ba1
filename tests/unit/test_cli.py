"""The command line fails in one clear line: user errors exit 2 naming the option and the value.

Every test runs ``resilience_otel.cli.main`` in-process. The Grafana tests talk only to
127.0.0.1: a port nobody listens on, or a loopback server answering an error.
"""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from resilience_otel import ConfigError, HealthConfig
from resilience_otel.alerts import render_rules
from resilience_otel.cli import main
from tests.integration.faultserver import FaultServer, status

# The longest duration Prometheus parses (int64 nanoseconds), in milliseconds.
MAX_PROMETHEUS_MS = (2**63 - 1) // 1_000_000
_DURATION = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def run(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI; return (exit code, stdout, stderr), whether it returned or exited."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str) -> None:
    """``err`` is exactly one line, no traceback, and contains every needle."""
    assert "Traceback" not in err
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "error: " in err
    for needle in needles:
        assert needle in err, (needle, err)


def duration_ms(text: str) -> int:
    """A Prometheus duration such as ``1d2h3m4s5ms`` in milliseconds."""
    assert _DURATION.sub("", text) == "", text
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION.findall(text))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HEALTH_ALERT_THRESHOLD", "GRAFANA_TOKEN", "GRAFANA_USER", "GRAFANA_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def free_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A loopback HTTP server answering every request with 500 and a JSON message."""
    with FaultServer() as fault:
        fault.set_default(status(500, body={"message": "database is locked\nretry later"}))
        yield fault


# -- paths ---------------------------------------------------------------------------------------
def test_render_to_a_missing_directory_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`alerts render --output /nonexistent/x.yml` exits 2 naming the option and the path."""
    code, out, err = run(["alerts", "render", "--output", "/nonexistent/x.yml"], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "--output", "/nonexistent/x.yml", "No such file or directory")


def test_render_to_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output naming a directory exits 2 naming it."""
    code, _, err = run(["alerts", "render", "--output", str(tmp_path)], capsys)
    assert code == 2
    assert_one_line_error(err, "--output", str(tmp_path))


def test_render_below_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output under a path that is a file (unwritable even for root) exits 2."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "rules.yml"
    code, _, err = run(["alerts", "render", "--output", str(target)], capsys)
    assert code == 2
    assert_one_line_error(err, "--output", str(target))


def test_generate_into_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dashboards generate --output-dir <a file>` exits 2 naming the option and the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run(["dashboards", "generate", "--output-dir", str(blocker)], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "--output-dir", str(blocker), "not a directory")
    assert blocker.read_text() == "x"


def test_generate_below_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output-dir whose parent is a file exits 2 naming the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["dashboards", "generate", "--output-dir", str(blocker / "d")], capsys)
    assert code == 2
    assert_one_line_error(err, "--output-dir", str(blocker / "d"))


def test_generate_without_the_grafana_extra_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without grafana-foundation-sdk, `dashboards generate` says which extra to install."""
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)  # import fails
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk.cog.encoder", None)
    code, _, err = run(["dashboards", "generate", "--output-dir", str(tmp_path)], capsys)
    assert code == 2
    assert_one_line_error(err, "pip install 'resilience-otel[grafana]'")
    assert list(tmp_path.iterdir()) == []


# -- option values -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--for-scale", "1e9", "<= 1000"),
        ("--for-scale", "0", "> 0"),
        ("--for-scale", "nan", "> 0"),
        ("--window-scale", "2", "<= 1"),
        ("--window-scale", "-1", "> 0"),
        ("--dead-letter-threshold", "1.5", "integer >= 0"),
        ("--dead-letter-threshold", "-1", "integer >= 0"),
        ("--dead-letter-threshold", "1e3", "integer >= 0"),
        ("--availability", "1.5", "<= 1"),
        ("--availability", "-0.1", ">= 0"),
        ("--availability", "ninety", ">= 0"),
        ("--latency-p95", "0", "> 0"),
        ("--latency-p95", "inf", "> 0"),
        ("--latency-baseline-factor", "0.5", ">= 1"),
        ("--retry-ratio", "0", "> 0"),
    ],
)
def test_bad_alert_option_values_are_one_line(
    option: str, value: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every numeric option is checked for its kind; the error names option, value and range."""
    code, out, err = run(["alerts", "render", option, value], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, option, repr(value), allowed)


def test_largest_for_scale_renders_durations_prometheus_parses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At the largest --for-scale every `for:` is within Prometheus' duration range."""
    code, out, _ = run(["alerts", "render", "--for-scale", "1000"], capsys)
    assert code == 0
    durations = re.findall(r"^\s+for: (\S+)$", out, re.MULTILINE)
    assert durations
    assert "10d10h" in durations  # 15m * 1000
    assert all(0 <= duration_ms(d) <= MAX_PROMETHEUS_MS for d in durations)


@pytest.mark.integration
@pytest.mark.parametrize("scales", [("1000", "1"), ("1e-9", "1e-9")])
def test_extreme_scales_pass_promtool(scales: tuple[str, str], tmp_path: Path) -> None:
    """promtool accepts the rules at the smallest and largest for/window scales."""
    rules = tmp_path / "rules.yml"
    argv = ["alerts", "render", "--for-scale", scales[0], "--window-scale", scales[1]]
    assert main([*argv, "--output", str(rules)]) == 0
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_whole_dead_letter_threshold_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """--dead-letter-threshold 3 renders `> 3`."""
    code, out, _ = run(["alerts", "render", "--dead-letter-threshold", "3"], capsys)
    assert code == 0
    assert out == render_rules(dead_letter_threshold=3)
    assert "[15m])) > 3\n" in out


def test_library_rejects_a_fractional_dead_letter_threshold() -> None:
    """render_rules(dead_letter_threshold=1.5) raises ConfigError naming the argument."""
    with pytest.raises(ConfigError, match=r"dead_letter_threshold .*integer.*1\.5"):
        render_rules(dead_letter_threshold=1.5)


def test_argparse_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option is reported on one line with exit 2, like every other user error."""
    code, _, err = run(["alerts", "render", "--no-such-option"], capsys)
    assert code == 2
    assert_one_line_error(err, "--no-such-option", "--help")


@pytest.mark.parametrize("value", ["0", "1e9", "nan"])
def test_demo_duration_is_bounded(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --duration` takes seconds > 0 up to a day; the error names option and value."""
    code, _, err = run(["demo", "--duration", value], capsys)
    assert code == 2
    assert_one_line_error(err, "--duration", repr(value), "86400")


# -- HEALTH_ALERT_THRESHOLD ----------------------------------------------------------------------
def test_health_alert_threshold_valid_for_the_monitor_renders(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEALTH_ALERT_THRESHOLD=0.9 (valid for the monitor) renders the rules for 0.9."""
    monkeypatch.setenv("HEALTH_ALERT_THRESHOLD", "0.9")
    code, out, err = run(["alerts", "render"], capsys)
    assert (code, err) == (0, "")
    assert out == render_rules(availability=0.9)


@pytest.mark.parametrize(
    "raw", ["0", "0.5", "0.9", "0.93", "0.95", "0.999", "1", "1.5", "-0.1", "lots", "95%"]
)
def test_alerts_and_monitor_agree_on_health_alert_threshold(
    raw: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`alerts render` accepts HEALTH_ALERT_THRESHOLD exactly when the health monitor does."""
    try:
        HealthConfig.from_env({"HEALTH_ALERT_THRESHOLD": raw})
    except ConfigError:
        monitor_accepts = False
    else:
        monitor_accepts = True
    monkeypatch.setenv("HEALTH_ALERT_THRESHOLD", raw)
    code, _, err = run(["alerts", "render"], capsys)
    assert (code == 0) is monitor_accepts, err
    if not monitor_accepts:
        assert_one_line_error(err, f"HEALTH_ALERT_THRESHOLD={raw!r}")


def burn_products(availability: float) -> list[tuple[float, float]]:
    """The (factor, budget) of every burn-rate comparison, long and short window each."""
    text = render_rules(availability=availability)
    found = re.findall(r"> \(([\d.e+-]+) \* ([\d.e+-]+)\)", text)
    assert len(found) == 8
    return [(float(factor), float(budget)) for factor, budget in found]


@pytest.mark.parametrize("availability", [0.01, 0.5, 0.9, 0.93, 0.95, 0.999, 1.0])
def test_every_burn_rate_threshold_can_be_reached(availability: float) -> None:
    """Above availability 0 every burn-rate condition can fire: it needs under 100% errors."""
    assert all(factor * budget < 1 for factor, budget in burn_products(availability))


def test_burn_factors_never_drop_below_one() -> None:
    """At availability 0 (a 100% budget, never exhausted) every factor is 1: nothing burns."""
    assert set(burn_products(0.0)) == {(1.0, 1.0)}
    assert all(factor >= 1 for factor, _ in burn_products(0.05))


def test_low_objective_keeps_the_reachable_burn_pair_as_is() -> None:
    """At 0.9 the 14.4x pair is capped to 9x (90% errors) and the 6x pair stays 6x."""
    text = render_rules(availability=0.9)
    assert "> (9 * 0.1)" in text
    assert "> (6 * 0.1)" in text
    assert "over 9x or 6x the 10% error budget" in text


# -- the Grafana URL and credentials -------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["notaurl", "ftp://grafana.example", "http://", "http://:3000", "http://h:99999"]
)
def test_bad_grafana_url_is_one_line(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--url must be http(s) with a host; the error names the option, the value and the rule."""
    code, _, err = run(["dashboards", "import", "--url", url, "--token", "t"], capsys)
    assert code == 2
    assert_one_line_error(err, "--url", repr(url), "http")


def test_a_password_in_a_bad_url_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    """The error for a bad --url masks the user and password inside it."""
    code, _, err = run(["dashboards", "import", "--url", "ftp://admin:s3cret@grafana"], capsys)
    assert code == 2
    assert_one_line_error(err, "--url", "ftp://***@grafana")
    assert "s3cret" not in err


def test_unreachable_grafana_is_one_line(
    free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Connection refused on loopback exits 2 with one line saying Grafana cannot be reached."""
    url = f"http://127.0.0.1:{free_port}"
    code, out, err = run(["dashboards", "import", "--url", url, "--token", "t"], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "cannot reach Grafana: Connection refused", "resilience-overview")
    assert "HTTPConnectionPool" not in err  # the OS reason, not the client's wrappers


def test_grafana_http_error_is_one_line(
    server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An HTTP 500 from Grafana (multi-line message) exits 2 with one line naming the status."""
    code, _, err = run(["dashboards", "import", "--url", server.base_url, "--token", "t"], capsys)
    assert code == 2
    assert_one_line_error(err, "HTTP 500", "database is locked retry later")


def test_grafana_user_and_password_come_from_the_environment(
    server: FaultServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRAFANA_USER and GRAFANA_PASSWORD authenticate with basic auth; the secret is not echoed."""
    monkeypatch.setenv("GRAFANA_USER", "admin")
    monkeypatch.setenv("GRAFANA_PASSWORD", "pa55-env")
    code, _, err = run(["dashboards", "import", "--url", server.base_url], capsys)
    assert code == 2  # the server answers 500; what matters is what it was sent
    expected = "Basic " + base64.b64encode(b"admin:pa55-env").decode()
    assert {r.headers.get("authorization") for r in server.requests} == {expected}
    assert "pa55-env" not in err


def test_grafana_password_from_the_environment_completes_user_option(
    server: FaultServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--user on the command line takes its password from GRAFANA_PASSWORD."""
    monkeypatch.setenv("GRAFANA_PASSWORD", "pa55")
    run(["dashboards", "import", "--url", server.base_url, "--user", "ops"], capsys)
    expected = "Basic " + base64.b64encode(b"ops:pa55").decode()
    assert {r.headers.get("authorization") for r in server.requests} == {expected}


def test_grafana_token_from_the_environment_is_sent_as_bearer(
    server: FaultServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRAFANA_TOKEN authenticates when no option is given."""
    monkeypatch.setenv("GRAFANA_TOKEN", "tok-env")
    run(["dashboards", "import", "--url", server.base_url], capsys)
    assert {r.headers.get("authorization") for r in server.requests} == {"Bearer tok-env"}


def test_token_option_beats_grafana_user_in_the_environment(
    server: FaultServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit --token wins over GRAFANA_USER/GRAFANA_PASSWORD."""
    monkeypatch.setenv("GRAFANA_USER", "admin")
    monkeypatch.setenv("GRAFANA_PASSWORD", "pa55")
    run(["dashboards", "import", "--url", server.base_url, "--token", "opt"], capsys)
    assert {r.headers.get("authorization") for r in server.requests} == {"Bearer opt"}


@pytest.mark.parametrize(
    ("argv", "env", "needles"),
    [
        (["--user", "ops"], {}, ("--password", "GRAFANA_PASSWORD", "'ops'")),
        (["--password", "x"], {}, ("--password", "--user", "GRAFANA_USER")),
        ([], {"GRAFANA_TOKEN": "t", "GRAFANA_USER": "u"}, ("GRAFANA_TOKEN", "GRAFANA_USER")),
        (["--token", "t", "--password", "x"], {}, ("--password", "--token")),
    ],
)
def test_incomplete_or_conflicting_credentials_are_one_line(
    argv: list[str],
    env: dict[str, str],
    needles: tuple[str, ...],
    free_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials that cannot be used exit 2 before any request, naming options and variables."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = f"http://127.0.0.1:{free_port}"
    code, _, err = run(["dashboards", "import", "--url", url, *argv], capsys)
    assert code == 2
    assert_one_line_error(err, *needles)
    assert "cannot reach" not in err


def test_import_help_documents_the_credential_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dashboards import --help` names GRAFANA_TOKEN, GRAFANA_USER and GRAFANA_PASSWORD."""
    code, out, _ = run(["dashboards", "import", "--help"], capsys)
    assert code == 0
    for var in ("GRAFANA_TOKEN", "GRAFANA_USER", "GRAFANA_PASSWORD"):
        assert var in out
