"""The Grafana dashboard references only metric names that master/metrics.py and server/metrics.py
really export (read from their registries), and covers what on-call needs to see."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

import master.metrics
import server.metrics
from tools.helmtools.validate import CHART_DIR

DASHBOARD = CHART_DIR / "dashboards" / "exportd.json"
METRIC = re.compile(r"\bexportd_[a-zA-Z0-9_:]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name `registry` can expose, with Counter/Histogram suffixes."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def _queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _dashboard() -> Any:
    return json.loads(Path(DASHBOARD).read_text())


def test_exported_names_include_suffixes() -> None:
    names = exported_names(master.metrics.REGISTRY) | exported_names(server.metrics.REGISTRY)
    assert "exportd_moves_total" in names and "exportd_moves" not in names
    assert "exportd_report_ack_seconds_bucket" in names
    assert "exportd_group_servers_wanted" in names


def test_dashboard_uses_only_exported_metric_names() -> None:
    exported = exported_names(master.metrics.REGISTRY) | exported_names(server.metrics.REGISTRY)
    used = {name for query in _queries(_dashboard()) for name in METRIC.findall(query)}
    assert used, "the dashboard has no exportd queries"
    unknown = used - exported
    assert unknown == set(), f"not exported by master/ or server/metrics.py: {sorted(unknown)}"


def test_every_panel_has_a_query_and_the_topics_are_covered() -> None:
    dashboard = _dashboard()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = {name for query in _queries(dashboard) for name in METRIC.findall(query)}
    needed = {
        "exportd_master_is_leader", "exportd_master_epoch",            # leader and epoch
        "exportd_group_utilisation", "exportd_group_servers_wanted",    # groups and advice
        "exportd_task_records_total", "exportd_task_consumer_lag",     # per-task rate and lag
        "exportd_moves_total",                                          # moves
        "exportd_task_errors_total", "exportd_api_requests_total",      # errors
    }
    assert needed <= used
