"""Every Grafana dashboard and alert rule queries only metrics the services export
(docs/architecture.md#metrics).

Queries are parsed with a real PromQL parser (``promql-parser``, the Rust one), the metric names
collected from the syntax tree, and compared with the catalogue of prometheus_client collectors
declared in itinerant/observability/metrics.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from ruamel.yaml import YAML

from itinerant.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
EXPECTED_DASHBOARDS = {"overview.json", "sagas.json", "dlq.json", "llm-spend.json"}
# Series Prometheus itself writes for every scrape target.
SYNTHETIC = {"up"}

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def collectors() -> list[MetricWrapperBase]:
    return [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]


def catalogue() -> set[str]:
    """Series names the services expose, from the collectors in observability/metrics.py."""
    names: set[str] = set()
    for collector in collectors():
        for family in collector.describe():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def test_catalogue_is_the_registered_itinerant_metrics() -> None:
    registered = {
        family.name for family in REGISTRY.collect() if family.name.startswith("itinerant_")
    }
    declared = {family.name for c in collectors() for family in c.describe()}
    assert declared == registered
    assert {
        "itinerant_messages_processed_total",
        "itinerant_processing_seconds_bucket",
        "itinerant_sagas",
    } <= catalogue()


# --- PromQL -------------------------------------------------------------------------------

_RANGE_VARIABLES = re.compile(
    r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}"
)
_VARIABLES = re.compile(r"\$\{\w+(:\w+)?\}|\$\w+|\[\[\w+\]\]")


def grafana_to_promql(query: str) -> str:
    """Replace Grafana's template variables by values, so the query parses as plain PromQL."""
    query = _RANGE_VARIABLES.sub("5m", query)
    return _VARIABLES.sub("placeholder", query)


def metric_names(query: str) -> set[str]:
    """Every metric a PromQL expression selects; fails on selectors without a metric name."""
    expr = promql_parser.parse(query)
    names: set[str] = set()
    nameless: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                nameless.append(str(node))

    promql_parser.walk(expr, pre_visit=visit)
    assert not nameless, f"selectors without a metric name cannot be checked: {nameless}"
    return names


def test_metric_names_finds_every_selector() -> None:
    query = (
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) "
        "/ on() group_left max_over_time(b[10m:1m]) + c offset 5m"
    )
    assert metric_names(query) == {"a_bucket", "b", "c"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(a[5m])")
    with pytest.raises(ValueError):
        metric_names("rate(a)")  # rate needs a range vector


# --- dashboards -------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of a collapsed row


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((?P<expr>.+),\s*\w+\)", text.strip())
        if match:
            text = match["expr"]
        yield f"variable {variable['name']!r}", text


def prometheus_uid() -> str:
    datasources = YAML(typ="safe", pure=True).load(DATASOURCES)["datasources"]
    (prometheus,) = (d for d in datasources if d["type"] == "prometheus")
    uid = prometheus["uid"]
    assert isinstance(uid, str)
    return uid


def test_the_four_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} == EXPECTED_DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse_and_name_catalogued_metrics(path: Path) -> None:
    known = catalogue() | SYNTHETIC
    found = list(queries(load(path)))
    assert len(found) >= 5
    for where, query in found:
        try:
            names = metric_names(grafana_to_promql(query))
        except ValueError as exc:
            pytest.fail(f"{path.name} {where}: {query!r} does not parse: {exc}")
        assert names, f"{path.name} {where}: {query!r} names no metric"
        unknown = names - known
        assert not unknown, f"{path.name} {where}: {sorted(unknown)} are not exported"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    dashboard = load(path)
    uid = prometheus_uid()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            assert variable["datasource"]["uid"] == uid


def test_dashboard_uids_are_unique() -> None:
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_overview_shows_what_design_asks_for() -> None:
    """Throughput, errors, latency percentiles, sagas by state, DLQ by reason and lag."""
    exprs = [query for _, query in queries(load(DASHBOARD_DIR / "overview.json"))]
    text = "\n".join(exprs)
    assert "rate(itinerant_messages_processed_total" in text
    assert re.search(r'outcome=~"[^"]*dead_lettered', text)
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (service, le) (rate(itinerant_processing" in text
    assert "sum by (state) (itinerant_sagas)" in text
    assert "sum by (reason) (rate(itinerant_dlq_messages_total" in text
    assert "itinerant_consumer_lag_messages" in text


# --- alert rules ------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    groups = YAML(typ="safe", pure=True).load(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_and_recording_rules_parse_and_name_catalogued_metrics() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert all(":" in name for name in recorded), "recording rules are named level:metric:ops"
    known = catalogue() | SYNTHETIC | recorded
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        names = metric_names(rule["expr"])
        assert names <= known, f"{name}: {sorted(names - known)} are not exported"
        if "alert" in rule:
            assert names, f"{name} names no metric"


def test_every_catalogued_metric_is_on_a_dashboard_or_in_an_alert() -> None:
    used: set[str] = set()
    for path in DASHBOARDS:
        for _, query in queries(load(path)):
            used |= metric_names(grafana_to_promql(query))
    for rule in rules():
        used |= metric_names(rule["expr"])
    families = {
        family.name: family.type for collector in collectors() for family in collector.describe()
    }
    for family, kind in families.items():
        series = {family + suffix for suffix in _SUFFIXES[kind]}
        assert series & used, f"{family} is exported but never shown"


def test_every_alert_says_what_to_do() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert {
        "ItinerantDLQGrowing",
        "ItinerantSagaFailureRateHigh",
        "ItinerantStepLatencyOverBudget",
        "ItinerantConsumerLagHigh",
        "ItinerantCircuitOpen",
        "ItinerantDeliveryFailing",
        "ItinerantSagasStuckParked",
        "ItinerantServiceDown",
    } <= names
    for rule in alerts:
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), rule["alert"]
        assert len(annotations["description"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
    dlq = next(rule for rule in alerts if rule["alert"] == "ItinerantDLQGrowing")
    assert "itinerant dlq list" in dlq["annotations"]["description"]
