"""The provisioned Grafana dashboard, checked statically: valid JSON whose every query names
metrics and labels that exist (Keel's from ``keel.workflows.metrics.METRICS``, the SDK's from
``keel.workers.metrics.SDK_METRICS``, which the metrics tests find on a real ``/metrics``),
and panels for what an operator asks about."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from keel.workers.metrics import SDK_METRICS
from keel.workflows.metrics import METRICS, SDK_LABELS

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy/grafana/dashboards/keel.json"
NAME = re.compile(r"\b(?:keel|temporal)_[a-z0-9_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
SDK_METRIC_LABELS = {
    "namespace",
    "task_queue",
    "workflow_type",
    "activity_type",
    "worker_type",
    "service_name",
    "le",
}
"""Labels the SDK's metrics carry (the ones the dashboard may group or filter by)."""


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expression)`` of every panel target and template variable."""
    out = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"${var['name']}", var["query"]["query"]))
    return out


def _metric(name: str) -> tuple[str, set[str]]:
    """The metric a series name belongs to, and the labels it may carry."""
    if name.startswith("temporal_"):
        base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        assert base in SDK_METRICS, f"{name}: not one of the SDK metrics the tests check"
        return base, SDK_METRIC_LABELS
    if name in METRICS:
        spec = METRICS[name]
        assert spec.kind == "counter", f"{name} is a histogram: use _bucket, _sum or _count"
    else:
        base, _, suffix = name.rpartition("_")
        assert base in METRICS and suffix in {"bucket", "sum", "count"}, f"unknown {name}"
        spec = METRICS[base]
        assert spec.kind == "histogram", f"{name}: {base} is a counter"
    return spec.name, {*spec.labels, *SDK_LABELS, "le"}


def test_the_dashboard_is_grafana_json_with_a_stable_uid(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "keel-overview" and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "keel-prometheus"


def test_every_query_names_metrics_and_labels_that_exist(dashboard: dict[str, Any]) -> None:
    for title, expr in _queries(dashboard):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), title
        names = NAME.findall(expr)
        assert names, f"{title}: no metric"
        labels: set[str] = set()
        for name in names:
            labels |= _metric(name)[1]
        used = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        used |= set(MATCHER.findall(expr))
        used |= set(re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr))
        unknown = used - labels - {""}
        assert not unknown, f"{title}: {sorted(unknown)} are not labels of {names}"


def test_every_keel_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    shown = {_metric(n)[0] for _, expr in _queries(dashboard) for n in NAME.findall(expr)}
    assert set(METRICS) <= shown, sorted(set(METRICS) - shown)
    assert set(SDK_METRICS) <= shown, "SDK_METRICS lists only what the dashboard shows"


@pytest.mark.parametrize(
    ("question", "pattern"),
    [
        (
            "first-pass acceptance per contract and node",
            r'outcome="first_pass".*by \(contract, node\)',
        ),
        ("retries by kind", r"by \(contract, node, kind\) \(increase\(keel_agent_retries_total"),
        (
            "approval rate by gate",
            r'by \(gate\).*keel_gate_decisions_total\{[^}]*decision="approve"',
        ),
        ("gate latency p50", r"histogram_quantile\(0\.5, .*keel_gate_latency_seconds_bucket"),
        ("gate latency p95", r"histogram_quantile\(0\.95, .*keel_gate_latency_seconds_bucket"),
        ("confidence distribution", r"by \(le\) \(increase\(keel_agent_confidence_bucket"),
        ("escalations and expiries", r"keel_gate_expiries_total"),
        ("tokens", r"by \(contract, direction\) \(increase\(keel_agent_tokens_total"),
    ],
)
def test_a_panel_answers(dashboard: dict[str, Any], question: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for _, expr in _queries(dashboard)), question


def test_ratios_divide_like_by_like(dashboard: dict[str, Any]) -> None:
    """A rate's numerator and denominator group by the same labels over the same window."""
    for title, expr in _queries(dashboard):
        if " / " not in expr:
            continue
        numerator, denominator = expr.split(" / ")
        assert GROUPING.findall(numerator) == GROUPING.findall(denominator), title
        assert NAME.findall(numerator) == NAME.findall(denominator), title
        assert re.findall(r"\[[^\]]+\]", numerator) == re.findall(r"\[[^\]]+\]", denominator)
