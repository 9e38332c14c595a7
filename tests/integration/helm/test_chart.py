"""helm lint / helm template of helm/exportd with the default values and the three-group example;
every rendered manifest validated against Kubernetes schemas; the shape the issue asks for
(masters, one server Deployment + HPA per group, drain grace, probes, secrets, dashboard)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.helmtools import (
    K8S_VERSION,
    HelmToolsError,
    helm_lint,
    helm_template,
    validate_manifests,
)

# The first test builds helm when it is not cached yet: allow for it.
pytestmark = pytest.mark.timeout(1800)

Manifest = dict[str, Any]


def _values(chart_dir: Path, which: str) -> list[Path]:
    return [] if which == "default" else [chart_dir / "values-three-groups.yaml"]


def _render(chart_dir: Path, which: str, *sets: str) -> list[Manifest]:
    return helm_template(chart_dir, _values(chart_dir, which), set_values=sets)


def _kind(docs: list[Manifest], kind: str, component: str | None = None) -> list[Manifest]:
    out = [d for d in docs if d["kind"] == kind]
    if component is not None:
        out = [d for d in out
               if d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    return out


def _env(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def _setting(container: Manifest, name: str) -> Any:
    """An EXPORTD_* value as the settings loader reads it (YAML-parsed)."""
    return yaml.safe_load(_env(container)[name]["value"])


@pytest.mark.parametrize("which", ["default", "three-groups"])
def test_lint_passes_strict(helm: Path, chart_dir: Path, which: str) -> None:
    out = helm_lint(chart_dir, _values(chart_dir, which))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("which", ["default", "three-groups"])
def test_every_rendered_manifest_matches_the_kubernetes_schemas(
    helm: Path, chart_dir: Path, which: str
) -> None:
    docs = _render(chart_dir, which)
    assert len(docs) >= 10
    assert validate_manifests(docs, K8S_VERSION) == []


def test_service_monitors_render_and_validate_when_enabled(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default", "serviceMonitor.enabled=true")
    monitors = _kind(docs, "ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "master", "server"}
    assert validate_manifests(docs, K8S_VERSION) == []
    assert _kind(_render(chart_dir, "default"), "ServiceMonitor") == []


def test_validation_catches_a_broken_manifest(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default")
    deployment = _kind(docs, "Deployment", "master")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    errors = validate_manifests([deployment], K8S_VERSION)
    assert len(errors) == 1 and "imagee" in errors[0]


def test_masters_are_replicated_spread_and_protected(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default")
    (master,) = _kind(docs, "Deployment", "master")
    spec = master["spec"]["template"]["spec"]
    assert master["spec"]["replicas"] >= 2
    terms = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["labelSelector"]["matchLabels"] == master["spec"]["selector"]["matchLabels"]
    (pdb,) = _kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == master["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] == 1
    services = {s["metadata"]["name"]: s for s in _kind(docs, "Service", "master")}
    assert set(services) == {"exportd-master", "exportd-master-grpc"}
    assert [p["name"] for p in services["exportd-master"]["spec"]["ports"]] == ["http"]
    assert [p["name"] for p in services["exportd-master-grpc"]["spec"]["ports"]] == ["grpc"]
    (container,) = spec["containers"]
    assert container["command"][:1] == ["exportd-master"]
    assert {p["name"] for p in container["ports"]} == {"http", "grpc"}


def test_a_single_master_is_refused(helm: Path, chart_dir: Path) -> None:
    with pytest.raises(HelmToolsError, match="at least 2"):
        _render(chart_dir, "default", "master.replicas=1")


def test_one_server_deployment_and_hpa_per_group(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "three-groups")
    deployments = _kind(docs, "Deployment", "server")
    by_group = {d["metadata"]["labels"]["exportd.io/group"]: d for d in deployments}
    assert len(deployments) == len(by_group) == 3
    assert set(by_group) == {"bulk", "realtime", "acme"}
    hpas = _kind(docs, "HorizontalPodAutoscaler")
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in hpas]
    assert len(targets) == len(set(targets))
    # tenant-acme has autoscaling off: fixed replicas, no HPA; the others one HPA each.
    assert sorted(targets) == ["exportd-server-bulk", "exportd-server-realtime"]
    assert by_group["acme"]["spec"]["replicas"] == 2
    assert "replicas" not in by_group["bulk"]["spec"]  # the HPA owns it
    for hpa in hpas:
        group = hpa["metadata"]["labels"]["exportd.io/group"]
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        external = metrics["External"]["external"]
        assert external["metric"]["name"] == "exportd_group_servers_wanted"
        assert external["metric"]["selector"]["matchLabels"] == {"group": group}
    for group, deployment in by_group.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert _setting(container, "EXPORTD_GROUP") == group


def test_default_values_give_one_group_with_a_cpu_only_hpa(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default")
    assert len(_kind(docs, "Deployment", "server")) == 1
    (hpa,) = _kind(docs, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_duplicate_or_invalid_group_names_are_refused(helm: Path, chart_dir: Path) -> None:
    with pytest.raises(HelmToolsError, match="used twice"):
        _render(chart_dir, "default", "servers[0].name=a", "servers[1].name=a")
    with pytest.raises(HelmToolsError, match="DNS label"):
        _render(chart_dir, "default", "servers[0].name=Bad_Name")


def test_servers_drain_within_their_grace_period(helm: Path, chart_dir: Path) -> None:
    for which, grace in (("default", 120), ("three-groups", 180)):
        for deployment in _kind(_render(chart_dir, which), "Deployment", "server"):
            spec = deployment["spec"]["template"]["spec"]
            assert spec["terminationGracePeriodSeconds"] == grace
            (container,) = spec["containers"]
            timeout = _setting(container, "EXPORTD_SESSION__SHUTDOWN_TIMEOUT")
            assert timeout.endswith("s") and 0 < int(timeout[:-1]) < grace
            assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_probes_config_and_secret_references(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "three-groups")
    configs = {c["metadata"]["name"]: c for c in _kind(docs, "ConfigMap")}
    for deployment in _kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["command"][-2:] == ["--config", "/etc/exportd/config.yaml"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
        assert "config.yaml" in configs[volume["configMap"]["name"]]["data"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert _setting(container, "EXPORTD_ZOOKEEPER__HOSTS").startswith("zk-0")
        secret = _env(container)["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "exportd-s3", "key": "secret-access-key"}
    (master,) = _kind(docs, "Deployment", "master")
    env = _env(master["spec"]["template"]["spec"]["containers"][0])
    assert env["API_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "exportd-api-tokens", "key": "admin-token"}
    realtime = configs["exportd-server-realtime-config"]["data"]["config.yaml"]
    assert "restart_backoff: 2s" in realtime and "log_level: info" in realtime


def test_dashboard_configmap_carries_the_dashboard(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default")
    (cm,) = [c for c in _kind(docs, "ConfigMap") if c["metadata"]["name"] == "exportd-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((chart_dir / "dashboards" / "exportd.json").read_text())
    assert json.loads(cm["data"]["exportd.json"]) == shipped


def test_notes_list_the_groups_and_warn_about_required_values(
    helm: Path, chart_dir: Path, tmp_path: Path
) -> None:
    # `helm template` skips NOTES.txt: render a copy of it as an ordinary template.
    chart = tmp_path / "exportd"
    shutil.copytree(chart_dir, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    indented = "".join(f"  {line}\n" for line in notes.splitlines())
    (chart / "templates" / "notes.yaml").write_text("apiVersion: v1\nnotes: |\n" + indented)

    def render(*values: Path) -> str:
        docs = helm_template(chart, values, set_values=["grafanaDashboard.enabled=false"])
        (doc,) = [d for d in docs if "notes" in d]
        return str(doc["notes"])

    default = render()
    assert "default (group \"default\"): HPA 2..10 on CPU 70%" in default
    assert "WARNING: zookeeper.hosts is empty" in default
    three = render(chart / "values-three-groups.yaml")
    assert "tenant-acme (group \"acme\"): 2 replicas, drain grace 180s" in three
    assert 'exportd_group_servers_wanted{group="bulk"}' in three
    assert "WARNING" not in three
