"""The chart's PrometheusRule: rendered only when enabled, structurally valid, alerting on stalled
tasks, stale data (freshness) and pending tasks with metric names the processes really export;
and the dashboard shows the same."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import master.metrics
import server.metrics
from tests.integration.helm.test_dashboard import METRIC, exported_names
from tools.helmtools import K8S_VERSION, helm_template, validate_manifests
from tools.helmtools.validate import CHART_DIR

pytestmark = pytest.mark.timeout(1800)


def _render(chart_dir: Path, *sets: str) -> list[dict[str, Any]]:
    return helm_template(chart_dir, [CHART_DIR / "values-minimal.yaml"], set_values=sets)


def _rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    return {r["alert"]: r for doc in rules for g in doc["spec"]["groups"] for r in g["rules"]}


def test_alert_rules_render_only_when_enabled_and_validate(helm: Path, chart_dir: Path) -> None:
    assert _rules(_render(chart_dir)) == {}
    docs = _render(chart_dir, "prometheusRule.enabled=true",
                   "prometheusRule.freshnessSeconds=600",
                   "prometheusRule.labels.release=kube-prometheus-stack")
    assert validate_manifests(docs, K8S_VERSION) == []
    rules = _rules(docs)
    assert set(rules) == {"ExportdTaskStalled", "ExportdTaskDataNotFresh", "ExportdTasksPending"}
    assert "exportd_task_stalled" in rules["ExportdTaskStalled"]["expr"]
    assert rules["ExportdTaskDataNotFresh"]["expr"].endswith("> 600")
    assert "exportd_tasks_pending" in rules["ExportdTasksPending"]["expr"]
    # Prometheus templates survive Helm's: the annotations name the task.
    assert "{{ $labels.task }}" in rules["ExportdTaskStalled"]["annotations"]["summary"]
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    exported = exported_names(master.metrics.REGISTRY) | exported_names(server.metrics.REGISTRY)
    used = {name for r in rules.values() for name in METRIC.findall(r["expr"])}
    assert used and used <= exported, used - exported


def test_validation_catches_a_broken_rule(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "prometheusRule.enabled=true")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    del rule["spec"]["groups"][0]["rules"][1]["expr"]
    errors = validate_manifests([rule], K8S_VERSION)
    assert len(errors) == 2 and "for" in errors[0] and "expr" in errors[1], errors


def test_dashboard_shows_stalled_freshness_and_pending() -> None:
    dashboard = json.loads((CHART_DIR / "dashboards" / "exportd.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert {"exportd_task_stalled", "exportd_task_freshness_seconds",
            "exportd_task_last_commit_age_seconds", "exportd_tasks_pending"} <= used
    assert any(re.search(r'state="stalled"', e) for e in exprs)
