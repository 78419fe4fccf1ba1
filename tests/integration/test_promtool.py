"""The alert rules and the Alertmanager example, checked by the real promtool and amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resilience_otel.alerts import render_rules, rule_groups

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "alerts"
RULES_FILE = ALERTS_DIR / "resilience-rules.yml"
ALERTMANAGER_EXAMPLE = ALERTS_DIR / "alertmanager.example.yml"
RULE_COUNT = sum(len(group.rules) for group in rule_groups())


def tool(name: str) -> str:
    """The path of a Prometheus tool; fail (never skip) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make debs` (Debian packages prometheus, "
            "prometheus-alertmanager)"
        )
    return path


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text."""
    argv = [str(a) for a in args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary."""
    return tool("promtool")


@pytest.fixture(scope="module")
def amtool() -> str:
    """The amtool binary."""
    return tool("amtool")


def check_rules(promtool: str, path: Path) -> None:
    """Assert that `promtool check rules` accepts the file and finds every rule."""
    result = run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {RULE_COUNT} rules found" in result.stdout


# -- rule files --------------------------------------------------------------------------------
def test_committed_rules_pass_promtool_check(promtool: str) -> None:
    """alerts/resilience-rules.yml is a valid Prometheus rule file."""
    check_rules(promtool, RULES_FILE)


def test_rules_for_other_thresholds_and_for_scale_pass_promtool_check(
    promtool: str, tmp_path: Path
) -> None:
    """A render with other thresholds and millisecond for: durations is valid too."""
    text = render_rules(
        availability=0.999,
        latency_p95_seconds=0.25,
        latency_baseline_factor=3,
        retry_ratio=0.5,
        dead_letter_threshold=0,
        for_scale=0.01,
    )
    path = tmp_path / "rules.yml"
    path.write_text(text, encoding="utf-8")
    check_rules(promtool, path)


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """Every `promtool test rules` case in alerts/tests passes."""
    files = sorted((ALERTS_DIR / "tests").glob("*.yaml"))
    assert files
    result = run(promtool, "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_unit_tests_fail_against_other_thresholds(promtool: str, tmp_path: Path) -> None:
    """The promtool cases pin the thresholds: rules for a 99% target fail the 95% cases."""
    (tmp_path / "tests").mkdir()
    shutil.copy(ALERTS_DIR / "tests" / "availability.yaml", tmp_path / "tests")
    (tmp_path / "resilience-rules.yml").write_text(render_rules(availability=0.99))
    result = run(promtool, "test", "rules", tmp_path / "tests" / "availability.yaml")
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


# -- Alertmanager example ----------------------------------------------------------------------
def test_alertmanager_example_passes_amtool_check(amtool: str) -> None:
    """alerts/alertmanager.example.yml is a valid Alertmanager configuration."""
    result = run(amtool, "check-config", ALERTMANAGER_EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "3 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("critical", "pager"), ("warning", "chat"), ("info", "low-priority")],
)
def test_alertmanager_example_routes_by_severity(amtool: str, severity: str, receiver: str) -> None:
    """Critical alerts page, warnings go to chat, info goes nowhere loud."""
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_EXAMPLE}",
        "alertname=ResilienceCircuitBreakerOpen",
        "service=quotes",
        f"severity={severity}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_alertmanager_example_commented_receivers_are_valid(amtool: str, tmp_path: Path) -> None:
    """The commented Slack and PagerDuty receivers pass amtool once uncommented."""
    lines, active = [], False
    for line in ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8").splitlines():
        active = active or bool(re.match(r"\s*# (slack|pagerduty)_configs:", line))
        active = active and line.strip() != ""
        lines.append(re.sub(r"^(\s*)# ", r"\1", line, count=1) if active else line)
    config = "\n".join(lines) + "\n"
    assert "\n    slack_configs:" in config
    assert "\n    pagerduty_configs:" in config
    path = tmp_path / "alertmanager.yml"
    path.write_text(config, encoding="utf-8")
    result = run(amtool, "check-config", path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the command line, end to end --------------------------------------------------------------
def test_cli_render_to_stdout_passes_promtool(promtool: str, tmp_path: Path) -> None:
    """`python -m resilience_otel.cli alerts render --availability 0.99` is a valid rule file."""
    result = run(
        sys.executable, "-m", "resilience_otel.cli", "alerts", "render", "--availability", "0.99"
    )
    assert result.returncode == 0, result.stderr
    assert "job_service:resilience_call_errors:ratio_rate5m > 0.01\n" in result.stdout
    assert "(14.4 * 0.01)" in result.stdout
    assert "(6 * 0.01)" in result.stdout
    path = tmp_path / "rules.yml"
    path.write_text(result.stdout, encoding="utf-8")
    check_rules(promtool, path)


def test_cli_render_with_for_scale_to_a_file_passes_promtool(promtool: str, tmp_path: Path) -> None:
    """`--for-scale 0.01 --output FILE` writes test-sized for: durations promtool accepts."""
    path = tmp_path / "rules.yml"
    result = run(
        sys.executable,
        "-m",
        "resilience_otel.cli",
        "alerts",
        "render",
        "--for-scale",
        "0.01",
        "--output",
        path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    text = path.read_text(encoding="utf-8")
    assert "for: 600ms" in text
    assert "for: 1m" not in text
    check_rules(promtool, path)


def test_cli_render_rejects_a_bad_option(tmp_path: Path) -> None:
    """A bad threshold exits 2, names the option and writes no file."""
    path = tmp_path / "rules.yml"
    result = run(
        sys.executable,
        "-m",
        "resilience_otel.cli",
        "alerts",
        "render",
        "--retry-ratio",
        "0",
        "--output",
        path,
    )
    assert result.returncode == 2
    assert "--retry-ratio" in result.stderr
    assert not path.exists()
