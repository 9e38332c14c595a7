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
from tools.helmtools.validate import CHART_DIR

# The first test builds helm when it is not cached yet: allow for it.
pytestmark = pytest.mark.timeout(1800)

Manifest = dict[str, Any]


REQUIRED = CHART_DIR / "values-minimal.yaml"


def _values(chart_dir: Path, which: str) -> list[Path]:
    """The chart's defaults plus what it refuses to render without (tokens, certificates), or
    the three-group example."""
    return [REQUIRED] if which == "default" else [chart_dir / "values-three-groups.yaml"]


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
        https = {"scheme": "HTTPS"} if deployment in _kind(docs, "Deployment", "master") else {}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http",
                                                         **https}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http",
                                                          **https}
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

    default = render(REQUIRED)
    assert "default (group \"default\"): HPA 2..10 on CPU 70%" in default
    assert "WARNING: zookeeper.hosts is empty" in default
    three = render(chart / "values-three-groups.yaml")
    assert "tenant-acme (group \"acme\"): 2 replicas, drain grace 180s" in three
    assert 'exportd_group_servers_wanted{group="bulk"}' in three
    assert "WARNING" not in three
    lab = tmp_path / "lab.yaml"
    lab.write_text(yaml.safe_dump({"iceberg": {"allowSqlite": True, "catalogs": {
        "lab": {"uri": "sqlite:////data/catalog.db", "warehouse": "file:///data/warehouse"},
        "lake": {"uri": "https://rest.data.svc", "warehouse": "s3://lake/w"}}}}))
    iceberg = render(REQUIRED, lab)
    assert "Iceberg catalogs (masters and servers): lab, lake" in iceberg
    assert "WARNING: iceberg.allowSqlite=true" in iceberg
    assert "WARNING: iceberg.catalogs.lab.warehouse is a local path" in iceberg
    assert "Iceberg" not in default


def test_no_api_without_tokens_and_no_pods_without_certificates(
        helm: Path, chart_dir: Path) -> None:
    """The chart refuses what the processes would refuse, at render time, in one line."""
    zk = "zookeeper.auth.existingSecret=z"
    with pytest.raises(HelmToolsError, match=r"\): auth\.existingSecret is required"):
        helm_template(chart_dir, [], set_values=["tls.insecure=true", zk])
    with pytest.raises(HelmToolsError, match=r"zookeeper\.auth\.existingSecret is required"):
        helm_template(chart_dir, [], set_values=["tls.insecure=true", "auth.existingSecret=t"])
    with pytest.raises(HelmToolsError, match="must differ"):
        _render(chart_dir, "default", "zookeeper.auth.serverUsername=exportd-master")
    with pytest.raises(HelmToolsError, match="TLS certificates are required"):
        helm_template(chart_dir, [], set_values=["auth.existingSecret=t", zk])
    with pytest.raises(HelmToolsError, match="servers need a certificate each"):
        helm_template(chart_dir, [], set_values=["auth.existingSecret=t", zk,
                                                 "tls.master.existingSecret=m"])
    with pytest.raises(HelmToolsError, match="both set"):
        _render(chart_dir, "default", "auth.none=true")
    with pytest.raises(HelmToolsError, match="token name"):
        _render(chart_dir, "default", "auth.adminTokenName=Not OK")


def test_an_api_without_auth_only_when_told_and_only_on_loopback(
        helm: Path, chart_dir: Path) -> None:
    docs = helm_template(chart_dir, [], set_values=["auth.none=true", "tls.insecure=true",
                                                    "zookeeper.auth.existingSecret=z"])
    (master,) = _kind(docs, "Deployment", "master")
    (container,) = master["spec"]["template"]["spec"]["containers"]
    assert _setting(container, "EXPORTD_API__AUTH") == "none"
    assert _setting(container, "EXPORTD_HTTP__HOST") == "127.0.0.1"
    assert _setting(container, "EXPORTD_TLS__INSECURE") is True
    assert "http://127.0.0.1:8080/readyz" in container["readinessProbe"]["exec"]["command"][-1]
    assert not any(name.startswith("EXPORTD_API__ADMIN_TOKENS") for name in _env(container))
    assert validate_manifests(docs, K8S_VERSION) == []


def test_named_tokens_and_certificates_reach_the_pods(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default")
    assert validate_manifests(docs, K8S_VERSION) == []
    (master,) = _kind(docs, "Deployment", "master")
    spec = master["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = _env(container)
    assert env["EXPORTD_API__ADMIN_TOKENS__ADMIN"]["value"] == "'$(API_ADMIN_TOKEN)'"
    assert env["EXPORTD_API__READ_TOKENS__READ"]["value"] == "'$(API_READ_TOKEN)'"
    assert _setting(container, "EXPORTD_TLS__CERT_FILE") == "/etc/exportd-tls/tls.crt"
    assert _setting(container, "EXPORTD_HTTP__HOST") == "0.0.0.0"
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    (cert,) = _kind(docs, "Certificate")
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"] == "exportd-master-tls"
    assert cert["spec"]["uris"] == ["exportd://exportd/master/exportd-master"]
    assert "master.exportd.exportd" in cert["spec"]["dnsNames"]
    assert "exportd-master.exportd.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"]["name"] == "exportd-ca"
    (server,) = _kind(docs, "Deployment", "server")
    sspec = server["spec"]["template"]["spec"]
    (svolume,) = [v for v in sspec["volumes"] if v["name"] == "tls"]
    attributes = svolume["csi"]["volumeAttributes"]
    assert svolume["csi"]["driver"] == "csi.cert-manager.io"
    assert attributes["csi.cert-manager.io/uri-sans"] == "exportd://exportd/server/${POD_NAME}"
    assert _setting(sspec["containers"][0], "EXPORTD_TLS__KEY_FILE") == \
        "/etc/exportd-tls/tls.key"
    # With an existing Secret for the masters, no Certificate of the chart's own.
    docs = _render(chart_dir, "default", "tls.master.existingSecret=my-master-tls")
    assert _kind(docs, "Certificate") == []
    (master,) = _kind(docs, "Deployment", "master")
    (volume,) = [v for v in master["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "my-master-tls"


def test_network_policies_limit_ingress_to_the_ports_in_use(helm: Path, chart_dir: Path) -> None:
    docs = _render(chart_dir, "default")
    policies = {p["metadata"]["name"]: p["spec"] for p in _kind(docs, "NetworkPolicy")}
    assert set(policies) == {"exportd-master", "exportd-server"}
    master = policies["exportd-master"]
    assert master["policyTypes"] == ["Ingress"]
    api, grpc = master["ingress"]
    assert api["ports"] == [{"port": "http", "protocol": "TCP"}] and "from" not in api
    assert grpc["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert grpc["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "exportd", "app.kubernetes.io/instance": "exportd"}}}]
    (server,) = policies["exportd-server"]["ingress"]
    assert server["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert _kind(_render(chart_dir, "default", "networkPolicy.enabled=false"),
                 "NetworkPolicy") == []


def test_each_pod_gets_its_own_roles_zookeeper_login_and_egress(
        helm: Path, chart_dir: Path) -> None:
    """Masters get the masters' password and the servers' digest, servers the other way round;
    ZooKeeper's CA (secure port) and egress rules reach both; a file root gets its volume."""
    docs = _render(chart_dir, "three-groups",
                   "egress.fileRoot=/exports", "kafka.allowUnlistedClusters=true",
                   "serverDefaults.extraVolumes[0].name=exports",
                   "serverDefaults.extraVolumes[0].persistentVolumeClaim.claimName=exports",
                   "serverDefaults.extraVolumeMounts[0].name=exports",
                   "serverDefaults.extraVolumeMounts[0].mountPath=/exports")
    assert validate_manifests(docs, K8S_VERSION) == []

    def secret_keys(container: Manifest) -> set[str]:
        return {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
                if "secretKeyRef" in e.get("valueFrom", {})
                and e["valueFrom"]["secretKeyRef"]["name"] == "exportd-zookeeper"}

    (master,) = _kind(docs, "Deployment", "master")
    (mc,) = master["spec"]["template"]["spec"]["containers"]
    assert secret_keys(mc) == {"master-password", "server-digest"}
    assert _setting(mc, "EXPORTD_ZOOKEEPER__USERNAME") == "exportd-master"
    assert _setting(mc, "EXPORTD_ZOOKEEPER__CA_FILE") == "/etc/exportd-zk-tls/ca.crt"
    assert "EXPORTD_ZOOKEEPER__CERT_FILE" not in _env(mc)
    assert _setting(mc, "EXPORTD_EGRESS__FILE_ROOT") == "/exports"
    assert _setting(mc, "EXPORTD_KAFKA__ALLOW_UNLISTED_CLUSTERS") is True
    servers = _kind(docs, "Deployment", "server")
    assert len(servers) == 3
    for server in servers:
        spec = server["spec"]["template"]["spec"]
        (sc,) = spec["containers"]
        assert secret_keys(sc) == {"server-password", "master-digest"}
        assert _setting(sc, "EXPORTD_ZOOKEEPER__USERNAME") == "exportd-server"
        assert _setting(sc, "EXPORTD_EGRESS__HTTP_ALLOW_NETWORKS") == ["10.40.0.0/16"]
        mounts = {m["name"]: m["mountPath"] for m in sc["volumeMounts"]}
        assert mounts["zookeeper-tls"] == "/etc/exportd-zk-tls"
        assert mounts["exports"] == "/exports"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["zookeeper-tls"]["secret"]["secretName"] == "zookeeper-ca"
        assert volumes["exports"]["persistentVolumeClaim"]["claimName"] == "exports"
    # A client certificate for ZooKeeper only when asked for.
    docs = _render(chart_dir, "three-groups", "zookeeper.tls.clientCertificate=true")
    (master,) = _kind(docs, "Deployment", "master")
    (mc,) = master["spec"]["template"]["spec"]["containers"]
    assert _setting(mc, "EXPORTD_ZOOKEEPER__KEY_FILE") == "/etc/exportd-zk-tls/tls.key"


def test_iceberg_catalogs_the_processes_or_a_cluster_could_not_use_are_refused(
        helm: Path, chart_dir: Path) -> None:
    """Names a variable cannot carry, a SQLite file other pods cannot see, a secret that would
    land in a ConfigMap: refused at render, in one line."""
    def catalog(name: str, uri: str = "https://rest.data.svc", warehouse: str = "s3://lake/w",
                *more: str) -> list[str]:
        at = f"iceberg.catalogs.{name}"
        return [f"{at}.uri={uri}", f"{at}.warehouse={warehouse}", *(f"{at}.{m}" for m in more)]

    for bad in ("Lake", "my-lake", "a__b", "_lake", "lake_"):
        with pytest.raises(HelmToolsError, match="a catalog name is lowercase letters"):
            _render(chart_dir, "default", *catalog(bad))
    sqlite = catalog("lab", "sqlite:////var/lib/exportd/catalog.db",
                     "file:///var/lib/exportd/warehouse")
    with pytest.raises(HelmToolsError, match="SQLite catalog only works when every master"):
        _render(chart_dir, "default", *sqlite)
    docs = _render(chart_dir, "default", *sqlite, "iceberg.allowSqlite=true")
    assert validate_manifests(docs, K8S_VERSION) == []
    for config in _kind(docs, "ConfigMap", "master") + _kind(docs, "ConfigMap", "server"):
        lab = yaml.safe_load(config["data"]["config.yaml"])["iceberg"]["catalogs"]["lab"]
        assert lab == {"type": "sql", "uri": "sqlite:////var/lib/exportd/catalog.db",
                       "warehouse": "file:///var/lib/exportd/warehouse"}
    with pytest.raises(HelmToolsError, match=r"lake\.uri holds a password"):
        _render(chart_dir, "default", *catalog("lake", "postgresql://exportd:pw@pg/iceberg"))
    with pytest.raises(HelmToolsError, match=r"lake\.uri holds a password"):
        _render(chart_dir, "default", *catalog("lake", "postgresql://pg/ice?password=pw"))
    _render(chart_dir, "default", *catalog("lake", "postgresql+psycopg://pg.db:5432/iceberg"))
    with pytest.raises(HelmToolsError, match=r"lake\.properties\.token looks like a secret"):
        _render(chart_dir, "default", *catalog("lake", "https://r", "s3://l/w",
                                               "properties.token=t"))
    with pytest.raises(HelmToolsError, match=r"credentials\.existingSecret, which is empty"):
        _render(chart_dir, "default", *catalog("lake", "https://r", "s3://l/w",
                                               "credentials.tokenKey=token"))
    with pytest.raises(HelmToolsError, match="both set: choose one"):
        _render(chart_dir, "default", *catalog("lake", "https://r", "s3://l/w",
                                               "credentials.existingSecret=s",
                                               "credentials.uriKey=uri"))
    with pytest.raises(HelmToolsError, match=r"lake\.warehouse: s3://bucket/prefix"):
        _render(chart_dir, "default", *catalog("lake", "https://r", "/data/warehouse"))
    with pytest.raises(HelmToolsError, match=r"lake\.type \"hive\": sql or rest"):
        _render(chart_dir, "default", *catalog("lake", "https://r", "s3://l/w", "type=hive"))
