"""Alert rules as data: validation, the committed rule file, names, annotations and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import pytest

from resilience_otel import ConfigError
from resilience_otel._telemetry import semconv as sc
from resilience_otel.alerts import (
    AlertRule,
    RecordingRule,
    format_duration,
    render_rules,
    rule_groups,
)
from resilience_otel.cli import main

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "alerts"
RULES_FILE = ALERTS_DIR / "resilience-rules.yml"
RUNBOOK = ALERTS_DIR / "RUNBOOK.md"
REGENERATE = "resilience-otel alerts render --output alerts/resilience-rules.yml"

# Prometheus' own series, produced by every scrape.
BUILTIN_SERIES = frozenset({"up"})
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Label values an expression may match, per label, as _semconv defines them.
LABEL_VALUES = {
    sc.OUTCOME: sc.OUTCOME_VALUES,
    sc.ERROR_CLASS: sc.ERROR_CLASS_VALUES,
    sc.STATE: frozenset(sc.BREAKER_STATE_VALUES),
    sc.STATUS: frozenset(sc.HEALTH_STATUS_VALUES),
    sc.REASON: sc.RETRY_REASON_VALUES | sc.DEAD_LETTER_REASON_VALUES,
    sc.CLIENT: sc.CLIENT_VALUES,
}


def alerts() -> list[AlertRule]:
    """Every alerting rule with the default thresholds."""
    return [r for g in rule_groups() for r in g.rules if isinstance(r, AlertRule)]


def recording_rules() -> list[RecordingRule]:
    """Every recording rule."""
    return [r for g in rule_groups() for r in g.rules if isinstance(r, RecordingRule)]


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """The vector selectors of a PromQL expression, in matrix selectors and subqueries too."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def alert_blocks(text: str) -> dict[str, str]:
    """The rendered YAML of each alert, by alert name."""
    parts = re.split(r"^      - (?=alert: |record: )", text, flags=re.MULTILINE)[1:]
    return {p.split("\n", 1)[0][len("alert: ") :]: p for p in parts if p.startswith("alert: ")}


def runbook_anchors() -> set[str]:
    """GitHub anchors of the runbook's level-2 headings."""
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("availability", 1.5),  # HEALTH_ALERT_THRESHOLD's range: 0..1
        ("availability", -0.1),
        ("availability", float("nan")),
        ("availability", "0.99"),
        ("availability", True),
        ("latency_p95_seconds", 0),
        ("latency_p95_seconds", float("inf")),
        ("latency_baseline_factor", 0.5),
        ("retry_ratio", 0),
        ("retry_ratio", -0.2),
        ("for_scale", 0),
        ("for_scale", 1001),  # 15m * 1001 stays valid, but a for: of weeks is a typo
        ("dead_letter_threshold", -1),
        ("dead_letter_threshold", 1.5),  # a count
        ("runbook_url", ""),
        ("runbook_url", "https://example.com/RUNBOOK.md#top"),
    ],
)
def test_out_of_range_option_raises_config_error_naming_it(option: str, value: object) -> None:
    """An invalid threshold raises ConfigError naming the option and the value."""
    with pytest.raises(ConfigError) as caught:
        render_rules(**{option: value})  # type: ignore[arg-type]
    assert caught.value.field == option
    assert option in str(caught.value)
    assert repr(value) in str(caught.value)


def test_inclusive_bounds_are_accepted() -> None:
    """A baseline factor of 1 and a dead-letter threshold of 0 are valid."""
    text = render_rules(latency_baseline_factor=1, dead_letter_threshold=0)
    assert "> 1 * avg_over_time(" in text
    assert "increase(resilience_dead_letters_total[15m])) > 0" in text


# -- the committed file ------------------------------------------------------------------------
def test_committed_rule_file_matches_render_rules() -> None:
    """alerts/resilience-rules.yml is render_rules() with the defaults."""
    committed = RULES_FILE.read_text(encoding="utf-8")
    assert committed == render_rules(), f"rule file is stale; regenerate: {REGENERATE}"


def test_rendered_yaml_has_no_tabs_or_trailing_spaces() -> None:
    """The emitter writes clean YAML: spaces only, no trailing whitespace."""
    lines = render_rules().splitlines()
    assert not [n for n, line in enumerate(lines) if "\t" in line or line != line.rstrip()]


def test_rendered_yaml_lists_every_rule_once() -> None:
    """Each rule of the data appears exactly once in the YAML, in order."""
    text = render_rules()
    names = re.findall(r"^      - (?:alert|record): (\S+)$", text, flags=re.MULTILINE)
    assert names == [
        r.alert if isinstance(r, AlertRule) else r.record for g in rule_groups() for r in g.rules
    ]


# -- names -------------------------------------------------------------------------------------
def test_every_metric_in_every_expr_is_defined_in_semconv() -> None:
    """Exprs select only _semconv metrics, recording rules defined here, or `up`."""
    metrics = set(sc.PROMETHEUS_NAMES.values())
    histograms = {sc.PROMETHEUS_NAMES[name[0]] for name in (sc.CALL_DURATION,)}
    allowed = metrics | BUILTIN_SERIES | {r.record for r in recording_rules()}
    allowed |= {h + suffix for h in histograms for suffix in HISTOGRAM_SUFFIXES}
    rules = [*recording_rules(), *alerts()]
    used = {rule_name(r): {s.name for s in selectors(r.expr)} for r in rules}
    assert all(used.values()), "every expr selects at least one series"
    unknown = {rule: names - allowed for rule, names in used.items() if names - allowed}
    assert unknown == {}


def rule_name(rule: RecordingRule | AlertRule) -> str:
    """The alert or record name of a rule."""
    return rule.alert if isinstance(rule, AlertRule) else rule.record


def test_every_label_value_matched_is_defined_in_semconv() -> None:
    """Matchers on outcome, error_class, state, status, ... use values _semconv allows."""
    bad = []
    for rule in [*recording_rules(), *alerts()]:
        for selector in selectors(rule.expr):
            for matcher in selector.matchers.matchers:
                allowed = LABEL_VALUES.get(matcher.name)
                if allowed is not None and not set(matcher.value.split("|")) <= allowed:
                    bad.append((rule_name(rule), matcher.name, matcher.value))
    assert bad == []


def test_recording_rules_are_named_level_metric_operations() -> None:
    """Recording rules follow Prometheus' `level:metric:operations` naming."""
    names = [r.record for r in recording_rules()]
    assert all(re.fullmatch(r"job_service:resilience_\w+:\w+", n) for n in names), names
    assert len(set(names)) == len(names)


def test_error_ratios_are_recorded_for_every_burn_rate_window() -> None:
    """The SLO windows 5m, 30m, 1h, 2h, 6h, 1d and 3d each have an error-ratio rule."""
    names = {r.record for r in recording_rules()}
    windows = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    assert {f"job_service:resilience_call_errors:ratio_rate{w}" for w in windows} <= names


def test_alert_names_are_camel_case_with_the_resilience_prefix() -> None:
    """Alert names are unique CamelCase words starting with "Resilience"."""
    names = [a.alert for a in alerts()]
    assert all(re.fullmatch(r"Resilience(?:[A-Z][a-z0-9]+)+", n) for n in names), names
    assert len(set(names)) == len(names)


# -- labels and annotations --------------------------------------------------------------------
def test_every_alert_has_a_known_severity() -> None:
    """Severity is critical, warning or info (and the rules use all three)."""
    assert {a.severity for a in alerts()} == {"critical", "warning", "info"}


def test_every_alert_has_a_summary_naming_the_service() -> None:
    """The summary is one line and names {{ $labels.service }}."""
    for alert in alerts():
        assert "{{ $labels.service }}" in alert.summary, alert.alert
        assert "\n" not in alert.summary, alert.alert


def test_every_description_mentions_the_service_and_the_value() -> None:
    """Descriptions use {{ $labels.service }} and {{ $value }} (possibly humanized)."""
    for alert in alerts():
        assert "{{ $labels.service }}" in alert.description, alert.alert
        assert re.search(r"\{\{ \$value( \| \w+)? \}\}", alert.description), alert.alert


def test_every_alert_renders_for_severity_and_runbook_url() -> None:
    """Each rendered alert has a for:, its severity and a runbook_url to its anchor."""
    blocks = alert_blocks(render_rules())
    assert set(blocks) == {a.alert for a in alerts()}
    for alert in alerts():
        block = blocks[alert.alert]
        assert re.search(r"^        for: \d+(?:ms|[smhd])", block, flags=re.MULTILINE), block
        assert f"\n          severity: {alert.severity}\n" in block
        assert f"runbook_url: alerts/RUNBOOK.md#{alert.alert.lower()}\n" in block


def test_every_runbook_url_anchor_has_a_runbook_section() -> None:
    """RUNBOOK.md has a `## <AlertName>` section for every alert."""
    missing = {a.anchor for a in alerts()} - runbook_anchors()
    assert missing == set()


def test_every_runbook_alert_section_is_a_current_alert() -> None:
    """No runbook section describes an alert that no longer exists."""
    sections = {a for a in runbook_anchors() if a.startswith("resilience")}
    assert sections == {a.anchor for a in alerts()}


def test_runbook_url_base_can_be_changed() -> None:
    """runbook_url= makes every alert link into that page."""
    base = "https://git.example.com/ops/blob/main/alerts/RUNBOOK.md"
    text = render_rules(runbook_url=base)
    assert text.count(f"runbook_url: {base}#resilience") == len(alerts())


# -- thresholds and for: -----------------------------------------------------------------------
def test_availability_sets_error_rate_and_burn_rate_thresholds() -> None:
    """availability=0.99 gives a 0.01 error budget in every availability alert."""
    text = render_rules(availability=0.99)
    assert "job_service:resilience_call_errors:ratio_rate5m > 0.01\n" in text
    assert text.count("(14.4 * 0.01)") == 2
    assert text.count("(6 * 0.01)") == 2
    assert text.count("(3 * 0.01)") == 2
    assert text.count("(1 * 0.01)") == 2
    assert "availability below 99%" in text


def expr_of(alert: str, **thresholds: float) -> str:
    """The expression of one alert, rendered for these thresholds."""
    rules = [r for g in rule_groups(**thresholds) for r in g.rules if isinstance(r, AlertRule)]
    return next(r.expr for r in rules if r.alert == alert)


def test_latency_options_set_target_and_baseline_factor() -> None:
    """latency_p95_seconds and latency_baseline_factor appear in the latency rule."""
    expr = expr_of("ResilienceLatencyDegraded", latency_p95_seconds=0.5, latency_baseline_factor=3)
    p95 = "job_service:resilience_call_duration_seconds:p95_rate5m"
    assert expr == f"{p95} > 0.5\nand\n{p95}\n  > 3 * avg_over_time({p95}[1d])"


def test_retry_ratio_sets_the_retry_storm_limit() -> None:
    """retry_ratio is the retries-per-call limit of the storm alert."""
    assert expr_of("ResilienceRetryStorm", retry_ratio=0.5).endswith("\n> 0.5")


def test_dead_letter_threshold_sets_the_accumulation_limit() -> None:
    """dead_letter_threshold is the dead letters per 15m that alert."""
    expr = expr_of("ResilienceDeadLettersAccumulating", dead_letter_threshold=25)
    assert expr == "sum by (job, service) (increase(resilience_dead_letters_total[15m])) > 25"


def test_for_scale_multiplies_every_for() -> None:
    """for_scale=0.01 turns 1m into 600ms and 15m into 9s."""
    default = re.findall(r"for: (\S+)", render_rules())
    scaled = re.findall(r"for: (\S+)", render_rules(for_scale=0.01))
    assert len(scaled) == len(alerts())
    assert dict(zip(default, scaled, strict=True)) == {
        "1m": "600ms",
        "2m": "1s200ms",
        "5m": "3s",
        "10m": "6s",
        "15m": "9s",
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.6, "600ms"), (1.2, "1s200ms"), (60, "1m"), (90, "1m30s"), (86400, "1d")],
)
def test_format_duration_writes_prometheus_durations(seconds: float, text: str) -> None:
    """Durations are written the way Prometheus writes them, down to milliseconds."""
    assert format_duration(seconds) == text


def test_critical_alerts_page_quickly() -> None:
    """Critical alerts wait at most 2 minutes; the breaker and critical errors 1 minute."""
    fors = {a.alert: a.for_ for a in alerts() if a.severity == "critical"}
    assert max(fors.values()) <= 120
    assert fors["ResilienceCircuitBreakerOpen"] == fors["ResilienceCriticalErrors"] == 60


# -- promtool cases and Alertmanager wiring (files only) ----------------------------------------
def test_every_alert_has_a_firing_and_a_not_firing_promtool_case() -> None:
    """alerts/tests/*.yaml expects every alert both firing and silent somewhere."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in sorted((ALERTS_DIR / "tests").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        for name, empty in re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text):
            (silent if empty else firing).add(name)
    names = {a.alert for a in alerts()}
    assert (names - firing, names - silent) == (set(), set())


def test_alertmanager_example_names_only_existing_alerts() -> None:
    """Inhibition rules in the Alertmanager example refer to alerts that exist."""
    text = (ALERTS_DIR / "alertmanager.example.yml").read_text(encoding="utf-8")
    named = set(re.findall(r"Resilience[A-Z]\w+", text))
    assert named
    assert named <= {a.alert for a in alerts()}


# -- command line ------------------------------------------------------------------------------
def test_cli_render_writes_the_output_file(tmp_path: Path) -> None:
    """`alerts render --output FILE` writes render_rules() for the given options."""
    out = tmp_path / "rules.yml"
    argv = [
        "alerts",
        "render",
        "--availability",
        "0.99",
        "--latency-p95",
        "0.5",
        "--for-scale",
        "0.01",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    expected = render_rules(availability=0.99, latency_p95_seconds=0.5, for_scale=0.01)
    assert out.read_text(encoding="utf-8") == expected


def test_cli_render_prints_to_stdout_by_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --output the rules go to standard output."""
    monkeypatch.delenv("HEALTH_ALERT_THRESHOLD", raising=False)
    assert main(["alerts", "render"]) == 0
    assert capsys.readouterr().out == render_rules()


def test_cli_availability_defaults_to_health_alert_threshold(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEALTH_ALERT_THRESHOLD is the availability when --availability is not given."""
    monkeypatch.setenv("HEALTH_ALERT_THRESHOLD", "0.999")
    assert main(["alerts", "render"]) == 0
    assert capsys.readouterr().out == render_rules(availability=0.999)


def test_cli_availability_option_beats_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--availability overrides HEALTH_ALERT_THRESHOLD."""
    monkeypatch.setenv("HEALTH_ALERT_THRESHOLD", "0.999")
    assert main(["alerts", "render", "--availability", "0.99"]) == 0
    assert capsys.readouterr().out == render_rules(availability=0.99)


def test_cli_rejects_an_out_of_range_option_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad option exits with status 2 and names the command-line option."""
    with pytest.raises(SystemExit) as caught:
        main(["alerts", "render", "--latency-p95", "-1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--latency-p95" in err
    assert "'-1'" in err


@pytest.mark.parametrize("value", ["lots", "1.5"])
def test_cli_rejects_a_bad_health_alert_threshold_naming_it(
    value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed or out-of-range HEALTH_ALERT_THRESHOLD exits 2 naming the variable."""
    monkeypatch.setenv("HEALTH_ALERT_THRESHOLD", value)
    with pytest.raises(SystemExit) as caught:
        main(["alerts", "render"])
    assert caught.value.code == 2
    assert f"HEALTH_ALERT_THRESHOLD='{value}'" in capsys.readouterr().err


def test_cli_alerts_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    """`resilience-otel alerts` alone is a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(["alerts"])
    assert caught.value.code == 2
    assert "required" in capsys.readouterr().err


def test_window_scale_shrinks_every_range_but_keeps_four_seconds() -> None:
    """window_scale scales range windows (5m -> 6s at 0.02) and never goes below 4s."""
    text = render_rules(window_scale=0.02)
    assert "[5m]" not in text
    assert "[6s]" in text  # 5m
    assert "[1m12s]" in text  # 1h
    assert "[4s]" not in render_rules(window_scale=0.5)
    assert "[4s]" in render_rules(window_scale=0.001)
    assert "window_scale=0.02" in text.splitlines()[1]


@pytest.mark.parametrize("value", [0, -1, 1.5, "x"])
def test_window_scale_out_of_range_is_rejected(value: object) -> None:
    """window_scale outside (0, 1] raises ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        render_rules(window_scale=value)  # type: ignore[arg-type]
    assert caught.value.field == "window_scale"
