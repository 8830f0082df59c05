"""Monitoring objects: the ServiceMonitor and PrometheusRule (CRDs, whose schemas
kubernetes-validate does not ship, so their structure is checked here), and the Grafana
dashboard. Every metric they name is one the gateway exports: here against the exposition of the
gateway's metrics registry (families are listed before any traffic), and in
tests/e2e/test_manifests_run.py against a real /metrics scrape of the deployed parts."""

from __future__ import annotations

import re

import pytest
from prometheus_client import generate_latest

from tests.deploy.manifests import (
    alert_rules,
    dashboard,
    exported_series,
    metric_names,
    of_kind,
    overlay,
    queries,
    render,
)

SEVERITIES = {"critical", "warning"}
REQUIRED_ALERTS = {"SplitmindNoHealthyDecodeWorker", "SplitmindHighErrorRatio", "SplitmindTTFTHigh",
                   "SplitmindKVTransfersMissing"}


def gateway_exposition() -> str:
    from api.metrics import GatewayMetrics
    from router.registry import WorkerRegistry

    return generate_latest(GatewayMetrics(WorkerRegistry([], 5.0)).registry).decode()


def test_the_service_monitor_scrapes_the_gateway_service() -> None:
    [monitor] = [o for o in render("k8s/monitoring") if o["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["namespace"] == "splitmind"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+s", endpoint["interval"])
    for name in ("cpu", "gpu", "multi-gateway"):
        services = [s for s in of_kind(overlay(name), "Service").values()
                    if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in services] == ["splitmind-gateway"]
        assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}


def test_the_alerts_are_well_formed() -> None:
    [rule] = [o for o in render("k8s/monitoring") if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["spec"]["groups"]
    rules = alert_rules()
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for r in rules:
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, r
        assert re.fullmatch(r"[A-Z][A-Za-z]+", r["alert"]) and re.fullmatch(r"\d+[smh]", r["for"])
        assert r["labels"]["severity"] in SEVERITIES and r["annotations"]["summary"]
        assert r["annotations"]["runbook"].startswith("docs/operations.md#")
        assert r["expr"].count("(") == r["expr"].count(")") and metric_names(r["expr"]), r["alert"]


def test_every_runbook_link_is_a_section_of_the_guide() -> None:
    from tests.deploy.manifests import ROOT

    guide = (ROOT / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", guide, re.M)}
    for r in alert_rules():
        assert r["annotations"]["runbook"].split("#")[1] in anchors, r["alert"]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "splitmind" and board["panels"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_every_metric_named_is_exported_by_the_gateway() -> None:
    exported = exported_series(gateway_exposition())
    assert "splitmind_kv_transfers_total" in exported and "splitmind_ttft_seconds_bucket" in exported
    for where, expr in queries().items():
        unknown = metric_names(expr) - set(exported)
        assert not unknown, f"{where}: {sorted(unknown)} not exported"


@pytest.mark.parametrize("expr", ["rate(splitmind_no_such_metric_total[5m])", "splitmind_ttft_seconds_total"])
def test_a_name_the_gateway_does_not_export_is_caught(expr: str) -> None:
    assert metric_names(expr) - set(exported_series(gateway_exposition()))
