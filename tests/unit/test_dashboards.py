"""The generated Grafana dashboards: drift against the committed files and lint rules.

The lint rules are those of Grafana's dashboard linter (grafana/dashboard-linter) that apply to
generated Prometheus dashboards, plus checks against the metric names in ``_telemetry.semconv``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from resilience_otel import ConfigError, alerts
from resilience_otel._telemetry import semconv as sc
from resilience_otel.cli import build_parser
from resilience_otel.grafana import (
    build_dashboards,
    import_dashboards,
    render_dashboard,
    write_dashboards,
)

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
UIDS = ("resilience-overview", "resilience-service")
HISTOGRAMS = frozenset(
    sc.PROMETHEUS_NAMES[name[0]]
    for name in (sc.CALL_DURATION, sc.HTTP_CLIENT_REQUEST_DURATION, sc.DB_CLIENT_OPERATION_DURATION)
)


def _prom(key: str) -> str:
    return key.replace(".", "_")


_SERVER = (sc.SERVER_ADDRESS, sc.SERVER_PORT, sc.ERROR_TYPE)
_HTTP_ATTRS = (sc.HTTP_REQUEST_METHOD, sc.URL_SCHEME, sc.HTTP_RESPONSE_STATUS_CODE, *_SERVER)
_HTTP_LABELS = {_prom(key) for key in _HTTP_ATTRS}
_DB_LABELS = {_prom(key) for key in (sc.DB_SYSTEM_NAME, sc.DB_OPERATION_NAME, *_SERVER)}
# The labels of each metric (the telemetry reference) besides job and instance.
METRIC_LABELS = {
    "resilience_calls_total": {sc.SERVICE, sc.CLIENT, sc.OUTCOME, sc.ERROR_CLASS},
    "resilience_call_duration_seconds_bucket": {sc.SERVICE, sc.CLIENT, sc.OUTCOME, "le"},
    "resilience_retries_total": {sc.SERVICE, sc.CLIENT, sc.REASON},
    "resilience_retries_exhausted_total": {sc.SERVICE, sc.CLIENT},
    "resilience_circuit_breaker_state": {sc.SERVICE, sc.STATE},
    "resilience_circuit_breaker_transitions_total": {sc.SERVICE, sc.FROM_STATE, sc.TO_STATE},
    "resilience_dead_letters_total": {sc.SERVICE, sc.REASON},
    "resilience_dead_letters_dropped_total": {sc.SERVICE},
    "resilience_health_status": {sc.SERVICE, sc.STATUS},
    "resilience_health_score": {sc.SERVICE},
    "resilience_health_error_ratio": {sc.SERVICE},
    "resilience_health_response_time_seconds": {sc.SERVICE, sc.PERCENTILE},
    "http_client_request_duration_seconds_count": _HTTP_LABELS,
    "http_client_request_duration_seconds_bucket": _HTTP_LABELS | {"le"},
    "db_client_operation_duration_seconds_count": _DB_LABELS,
    "db_client_operation_duration_seconds_bucket": _DB_LABELS | {"le"},
    "ALERTS": {"alertname", "alertstate", "service", "severity"},
}
# Stands in for $__rate_interval when checking ranges; nobody writes this duration by hand.
RATE_INTERVAL_MAGIC = "1234567ms"
LABEL_VARIABLES = ("job", "instance", "service")

Model = dict[str, Any]


@pytest.fixture(scope="module")
def dashboards() -> dict[str, Model]:
    """Every dashboard's JSON model, built once for the module."""
    return build_dashboards()


# -- helpers: walking the model and the PromQL ---------------------------------------------------
def _panels(model: Model) -> Iterator[Model]:
    """Every panel that is not a row, including panels nested in collapsed rows."""
    for panel in model["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _targets(models: dict[str, Model]) -> Iterator[tuple[str, Model, Model]]:
    for uid, model in models.items():
        for panel in _panels(model):
            for target in panel.get("targets", []):
                yield f"{uid} / {panel['title']} / {target['refId']}", panel, target


def _expand(expr: str, rate_interval: str = "5m") -> str:
    """The query as Grafana sends it with every variable set to All (``.*``)."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name in LABEL_VARIABLES:
        expr = expr.replace(f'"${name}"', '".*"')
    assert "$" not in expr, f"unexpanded variable in {expr!r}"
    return expr


def _children(node: object) -> list[object]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.SubqueryExpr):
        return [node.expr]
    return []


def _walk(node: object, parents: tuple[object, ...] = ()) -> Iterator[tuple[object, tuple]]:
    """Every node with its ancestors, outermost first."""
    yield node, parents
    for child in _children(node):
        yield from _walk(child, (*parents, node))


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    tree = promql_parser.parse(expr.replace("$__rate_interval", "5m"))
    return [n for n, _ in _walk(tree) if isinstance(n, promql_parser.VectorSelector)]


def _regex_matchers(selector: promql_parser.VectorSelector) -> set[tuple[str, str]]:
    """The selector's ``label=~"value"`` matchers as (label, value) pairs."""
    return {
        (m.name, m.value) for m in selector.matchers.matchers if m.op == promql_parser.MatchOp.Re
    }


def _rate_interval_violations(expr: str) -> list[str]:
    """Range selectors inside rate/irate/increase whose range is not ``$__rate_interval``."""
    tree = promql_parser.parse(_expand(expr, RATE_INTERVAL_MAGIC))
    magic = timedelta(milliseconds=1234567)
    return [
        str(node)
        for node, parents in _walk(tree)
        if isinstance(node, promql_parser.MatrixSelector)
        and isinstance(parents[-1], promql_parser.Call)
        and parents[-1].func.name in {"rate", "irate", "increase"}
        and node.range != magic
    ]


def _bare_counters(expr: str) -> list[str]:
    """Counter selectors (``_total``) not directly inside rate/irate/increase."""
    tree = promql_parser.parse(_expand(expr))
    found = []
    for node, parents in _walk(tree):
        if isinstance(node, promql_parser.VectorSelector) and (node.name or "").endswith("_total"):
            ok = (
                len(parents) >= 2
                and isinstance(parents[-1], promql_parser.MatrixSelector)
                and isinstance(parents[-2], promql_parser.Call)
                and parents[-2].func.name in {"rate", "irate", "increase"}
            )
            if not ok:
                found.append(str(node))
    return found


def _missing_matchers(expr: str, labels: tuple[str, ...]) -> list[str]:
    """Selectors lacking ``label=~"$label"`` for one of ``labels``."""
    return [
        f"{selector} lacks {label}"
        for selector in _selectors(expr)
        for label in labels
        if (label, f"${label}") not in _regex_matchers(selector)
    ]


def _allowed_metrics() -> set[str]:
    recorded = {
        rule.record
        for group in alerts.rule_groups()
        for rule in group.rules
        if isinstance(rule, alerts.RecordingRule)
    }
    return set(sc.PROMETHEUS_NAMES.values()) | {"ALERTS"} | recorded


def _metric_name(selector: promql_parser.VectorSelector) -> str:
    name = selector.name or ""
    base, _, suffix = name.rpartition("_")
    return base if suffix in {"bucket", "count", "sum"} and base in HISTOGRAMS else name


def _variable(model: Model, name: str) -> Model:
    found = [v for v in model["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"{model['uid']}: {len(found)} variables named {name!r}"
    return found[0]


# -- drift and identity --------------------------------------------------------------------------
def test_committed_files_match_generated_dashboards(dashboards: dict[str, Model]) -> None:
    """dashboards/*.json is exactly what build_dashboards() renders (regenerate on change)."""
    committed = {path.stem: path.read_text("utf-8") for path in DASHBOARDS_DIR.glob("*.json")}
    generated = {uid: render_dashboard(model) for uid, model in dashboards.items()}
    assert committed == generated, "run: resilience-otel dashboards generate"


def test_write_dashboards_writes_the_committed_bytes(tmp_path: Path) -> None:
    """write_dashboards() writes <uid>.json files byte-identical to the committed ones."""
    paths = write_dashboards(tmp_path)
    assert [p.name for p in paths] == [f"{uid}.json" for uid in UIDS]
    for path in paths:
        assert path.read_bytes() == (DASHBOARDS_DIR / path.name).read_bytes()


def test_dashboards_have_stable_unique_uids(dashboards: dict[str, Model]) -> None:
    """The uids are fixed (links and imports rely on them) and match each model's uid."""
    assert sorted(dashboards) == list(UIDS)
    assert [model["uid"] for model in dashboards.values()] == list(dashboards)


def test_panel_ids_are_unique_within_each_dashboard(dashboards: dict[str, Model]) -> None:
    """Every panel and row has its own id inside its dashboard."""
    for model in dashboards.values():
        ids = [panel["id"] for panel in model["panels"]]
        ids += [p["id"] for row in model["panels"] for p in row.get("panels", [])]
        assert len(ids) == len(set(ids)), model["uid"]


def test_dashboards_are_tagged_timed_and_read_only(dashboards: dict[str, Model]) -> None:
    """Tags, default time range and refresh are set; generated dashboards are not editable."""
    for model in dashboards.values():
        assert model["tags"] == ["resilience", "resilience-otel"]
        assert model["time"] == {"from": "now-6h", "to": "now"}
        assert model["refresh"] == "30s"
        assert model["editable"] is False


# -- variables -----------------------------------------------------------------------------------
def test_every_dashboard_has_a_prometheus_datasource_variable(
    dashboards: dict[str, Model],
) -> None:
    """A variable `datasource` of type datasource selects among Prometheus data sources."""
    for model in dashboards.values():
        variable = _variable(model, "datasource")
        assert (variable["type"], variable["query"]) == ("datasource", "prometheus")


@pytest.mark.parametrize("name", ["job", "instance"])
def test_every_dashboard_has_job_and_instance_variables(
    dashboards: dict[str, Model], name: str
) -> None:
    """job and instance are multi-select label_values queries over ${datasource} with All."""
    for model in dashboards.values():
        variable = _variable(model, name)
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["query"].startswith("label_values(")
        assert variable["query"].endswith(f", {name})")
        assert (variable["multi"], variable["includeAll"]) == (True, True)
        assert variable["refresh"] == 2  # on time range change


def test_service_dashboard_has_a_service_variable(dashboards: dict[str, Model]) -> None:
    """The detail dashboard picks one service from resilience_calls_total's service label."""
    variable = _variable(dashboards["resilience-service"], "service")
    assert variable["query"] == (
        'label_values(resilience_calls_total{job=~"$job", instance=~"$instance"}, service)'
    )
    assert variable["datasource"]["uid"] == "${datasource}"


# -- panels --------------------------------------------------------------------------------------
def test_every_panel_has_a_unit_and_a_description(dashboards: dict[str, Model]) -> None:
    """fieldConfig.defaults.unit and a non-empty description on every panel."""
    bad = [
        f"{uid} / {panel['title']}"
        for uid, model in dashboards.items()
        for panel in _panels(model)
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        or not panel.get("description", "").strip()
    ]
    assert bad == []


def test_every_panel_and_target_uses_the_datasource_variable(
    dashboards: dict[str, Model],
) -> None:
    """Panels and their targets reference ${datasource}, never a data source of their own."""
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for name, panel, target in _targets(dashboards):
        assert panel["datasource"] == expected, name
        assert target["datasource"] == expected, name


def test_no_datasource_uid_is_hard_coded(dashboards: dict[str, Model]) -> None:
    """Anywhere in the JSON, a datasource reference names a variable, not a fixed uid."""

    def refs(node: object) -> Iterator[object]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and isinstance(value, dict):
                    yield value.get("uid")
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    uids = set(refs(list(dashboards.values())))
    assert uids == {"${datasource}"}


def test_every_panel_has_at_least_one_target(dashboards: dict[str, Model]) -> None:
    """No panel is left without a query."""
    for uid, model in dashboards.items():
        for panel in _panels(model):
            assert panel.get("targets"), f"{uid} / {panel['title']}"


@pytest.mark.parametrize(
    ("title", "states"),
    [
        ("Health status", sc.HEALTH_STATUS_VALUES),
        ("Circuit breaker state", sc.BREAKER_STATE_VALUES),
    ],
)
def test_state_timelines_name_every_state_of_semconv(
    dashboards: dict[str, Model], title: str, states: tuple[str, ...]
) -> None:
    """The value mappings of a state timeline turn its ranks into every known state name."""
    for model in dashboards.values():
        (panel,) = [
            p for p in _panels(model) if (p["type"], p["title"]) == ("state-timeline", title)
        ]
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        texts = sorted(option["text"] for option in mapping["options"].values())
        assert texts == sorted(states)
        assert sorted(mapping["options"]) == [str(rank) for rank in range(len(states))]


def test_data_links_open_the_service_dashboard_for_the_clicked_service(
    dashboards: dict[str, Model],
) -> None:
    """Per-service overview panels link to resilience-service with that service selected."""
    urls = [
        link["url"]
        for panel in _panels(dashboards["resilience-overview"])
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    assert len(urls) >= 5
    for url in urls:
        assert url.startswith("/d/resilience-service?var-service=$")
        assert "${datasource:queryparam}" in url
        assert url.endswith("&${__url_time_range}")


# -- queries -------------------------------------------------------------------------------------
def test_every_query_parses_as_promql(dashboards: dict[str, Model]) -> None:
    """Each target parses once Grafana's variables are substituted."""
    for name, _, target in _targets(dashboards):
        try:
            promql_parser.parse(_expand(target["expr"]))
        except ValueError as exc:  # the parser's error names the position
            pytest.fail(f"{name}: {exc}")


def test_rates_use_rate_interval(dashboards: dict[str, Model]) -> None:
    """rate, irate and increase always range over $__rate_interval."""
    bad = {
        name: v
        for name, _, t in _targets(dashboards)
        if (v := _rate_interval_violations(t["expr"]))
    }
    assert bad == {}


def test_counters_are_only_used_through_rate(dashboards: dict[str, Model]) -> None:
    """A _total counter is never graphed raw (the linter's target-counter-agg-rule)."""
    bad = {name: v for name, _, t in _targets(dashboards) if (v := _bare_counters(t["expr"]))}
    assert bad == {}


def test_every_selector_filters_on_job_and_instance(dashboards: dict[str, Model]) -> None:
    """Every series selector carries job=~"$job" and instance=~"$instance"."""
    bad = {
        name: v
        for name, _, t in _targets(dashboards)
        if (v := _missing_matchers(t["expr"], ("job", "instance")))
    }
    assert bad == {}


def test_service_dashboard_filters_resilience_metrics_on_service(
    dashboards: dict[str, Model],
) -> None:
    """On the detail dashboard every resilience_* selector carries service=~"$service"."""
    bad = [
        f"{panel['title']}: {selector}"
        for panel in _panels(dashboards["resilience-service"])
        for target in panel["targets"]
        for selector in _selectors(target["expr"])
        if (selector.name or "").startswith("resilience_")
        and ("service", "$service") not in _regex_matchers(selector)
    ]
    assert bad == []


def test_every_metric_is_defined_in_semconv(dashboards: dict[str, Model]) -> None:
    """Queries and variables use only _semconv's Prometheus names, ALERTS and recorded rules."""
    allowed = _allowed_metrics()
    exprs = [t["expr"] for _, _, t in _targets(dashboards)]
    for model in dashboards.values():
        for variable in model["templating"]["list"]:
            if variable["type"] == "query":
                match = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"])
                assert match, variable["query"]
                exprs.append(match.group(1))
    used = {_metric_name(s) for expr in exprs for s in _selectors(expr)}
    assert used - allowed == set()
    assert {"resilience_calls_total", "ALERTS"} <= used


def _unknown_labels(expr: str) -> list[str]:
    """Labels matched or grouped by that no metric of the expression carries."""
    tree = promql_parser.parse(_expand(expr))
    selectors = [n for n, _ in _walk(tree) if isinstance(n, promql_parser.VectorSelector)]
    known = {"job", "instance"}.union(*(METRIC_LABELS.get(s.name, set()) for s in selectors))
    used = {m.name for s in selectors for m in s.matchers.matchers if m.name != "__name__"}
    for node, _ in _walk(tree):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            used.update(node.modifier.labels)
    return sorted(used - known)


def test_queries_use_only_labels_the_metrics_have(dashboards: dict[str, Model]) -> None:
    """Matchers and `by` labels exist on the metrics queried (a renamed label shows up here)."""
    bad = {name: v for name, _, t in _targets(dashboards) if (v := _unknown_labels(t["expr"]))}
    assert bad == {}


def test_label_rule_flags_a_label_the_metric_lacks() -> None:
    """The label check reports quantile on the health response time (its label is percentile)."""
    expr = 'max by (quantile) (resilience_health_response_time_seconds{job=~"$job"})'
    assert _unknown_labels(expr) == ["quantile"]


def test_firing_alerts_panel_matches_every_alert_rule(dashboards: dict[str, Model]) -> None:
    """The ALERTS filter alertname=~"Resilience.*" covers every alert in alerts.py."""
    exprs = [t["expr"] for _, _, t in _targets({"o": dashboards["resilience-overview"]})]
    regexes = {
        m.value
        for expr in exprs
        for s in _selectors(expr)
        if s.name == "ALERTS"
        for m in s.matchers.matchers
        if m.name == "alertname"
    }
    assert regexes == {"Resilience.*"}
    names = [
        r.alert for g in alerts.rule_groups() for r in g.rules if isinstance(r, alerts.AlertRule)
    ]
    assert names
    assert all(re.fullmatch("Resilience.*", name) for name in names)


# -- the lint helpers themselves -----------------------------------------------------------------
@pytest.mark.parametrize(
    "expr",
    [
        'rate(resilience_calls_total{job=~"$job"}[5m])',
        'sum(increase(resilience_retries_total{job=~"$job"}[1h]))',
        'irate(resilience_calls_total{job=~"$job"}[1m])',
    ],
)
def test_rate_interval_rule_flags_fixed_ranges(expr: str) -> None:
    """The rate-interval check reports a rate over anything but $__rate_interval."""
    assert _rate_interval_violations(expr) != []


def test_counter_rule_flags_a_raw_counter() -> None:
    """The counter check reports a _total series used without rate."""
    assert _bare_counters('sum(resilience_calls_total{job=~"$job"})') != []


def test_matcher_rule_flags_a_missing_instance_filter() -> None:
    """The job/instance check reports a selector without instance=~"$instance"."""
    expr = 'sum(rate(resilience_calls_total{job=~"$job"}[$__rate_interval]))'
    assert _missing_matchers(expr, ("job", "instance")) != []
    assert _missing_matchers(expr, ("job",)) == []


# -- the import API and CLI, without a server ----------------------------------------------------
def test_import_rejects_a_token_together_with_a_user() -> None:
    """Choosing two ways to authenticate is a ValueError before any request."""
    with pytest.raises(ValueError, match="either a token or a user"):
        import_dashboards("http://127.0.0.1:9", token="t", user="admin", password="pw")


def test_import_requires_a_password_with_a_user() -> None:
    """A user without a password is a ValueError naming the user."""
    with pytest.raises(ValueError, match="'admin' needs a password"):
        import_dashboards("http://127.0.0.1:9", user="admin")


@pytest.mark.parametrize("url", ["notaurl", "ftp://grafana", "http://", "http://h:99999", None])
def test_import_rejects_a_url_that_is_not_http_with_a_host(url: object) -> None:
    """import_dashboards checks its URL first: a ConfigError naming `url` and the value."""
    with pytest.raises(ConfigError, match=r"url must be an http:// or https:// URL") as caught:
        import_dashboards(url, token="t", dashboards={})  # type: ignore[arg-type]
    assert caught.value.field == "url"
    assert repr(url) in str(caught.value)


def test_cli_generate_defaults_to_the_dashboards_directory() -> None:
    """`dashboards generate` writes to ./dashboards unless told otherwise."""
    args = build_parser().parse_args(["dashboards", "generate"])
    assert args.output_dir == Path("dashboards")


def test_cli_import_refuses_token_and_user_together() -> None:
    """--token and --user are mutually exclusive on the command line."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["dashboards", "import", "--url", "http://x", "--token", "t", "--user", "u"]
        )


def test_rendered_json_is_sorted_indented_and_newline_terminated(
    dashboards: dict[str, Model],
) -> None:
    """The committed format: two-space indent, sorted keys, one trailing newline."""
    text = render_dashboard(dashboards["resilience-overview"])
    assert text.startswith('{\n  "annotations": ')
    assert text.endswith("\n}\n")
    keys = list(json.loads(text)["panels"][1])
    assert keys == sorted(keys)
