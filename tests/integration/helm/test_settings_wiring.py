"""What the chart passes the processes loads into their real settings models.

Each rendered Deployment's environment is resolved the way the kubelet does it (field refs,
secret refs, `$(VAR)` expansion of earlier variables), its ConfigMap's config.yaml written to a
file, and both given to tasks.settings.load_settings with MasterSettings / ServerSettings: a
renamed setting or a value of the wrong type fails here instead of in a crash-looping pod.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.cluster import Role
from tasks.iceberg.catalogs import S3Access, catalog_properties
from tasks.settings import load_settings
from tools.helmtools import helm_template
from tools.helmtools.validate import CHART_DIR
from tools.infra.zkauth import ZkCredentials, secret_data

pytestmark = pytest.mark.timeout(1800)

REQUIRED = CHART_DIR / "values-minimal.yaml"

POD_IP = "10.1.2.3"
ZK = ZkCredentials(master_password="m4ster'zk", server_password="s3rver:zk")
SECRETS = {
    ("exportd-s3", "access-key-id"): "AKIAIOSFODNN7EXAMPLE",
    ("exportd-s3", "secret-access-key"): "wJalrXUtnFEMI/K7MDENG/bPxRfiCY+EXAMPLEKEY",
    ("exportd-api-tokens", "read-token"): "r3ad-t0ken",
    ("exportd-api-tokens", "admin-token"): "4dm'in-t0ken",
    ("exportd-kafka", "sasl-password"): "k4fka'pa$$word",
    ("partner-kafka", "sasl-password"): "p4rtner",
    **{("exportd-zookeeper", key): value for key, value in secret_data(ZK).items()},
    ("iceberg-lake", "uri"): "postgresql+psycopg://exportd:p'a$$w@rd@pg.db.svc:5432/iceberg",
    ("iceberg-lake", "access-key-id"): "AKIAICEBERGEXAMPLE01",
    ("iceberg-lake", "secret-access-key"): "ic3/S3cr3t'+k3y/EXAMPLE",
    ("iceberg-events", "token"): "r3st:t0k'en$(NOT_A_VAR)",
}
KAFKA_CONFIG = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "exportd", "sasl.password": "k4fka'pa$$word"}
PARTNER = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
           "sasl.username": "exportd-eu", "sasl.password": "p4rtner"}
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _pod_env(deployment: dict[str, Any], pod_name: str) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            value = _REF.sub(lambda m: env.get(m.group(1), m.group(0)), var["value"])
        elif "fieldRef" in var["valueFrom"]:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            value = {"metadata.name": pod_name, "status.podIP": POD_IP}[path]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = SECRETS[(ref["name"], ref["key"])]
        env[var["name"]] = value
    return env


def _load(docs: list[dict[str, Any]], deployment: dict[str, Any], model: Any,
          tmp_path: Path) -> tuple[Any, dict[str, str]]:
    spec = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"] == volume["configMap"]["name"]]
    path = tmp_path / f"{deployment['metadata']['name']}.yaml"
    path.write_text(config["data"]["config.yaml"])
    pod_name = f"{deployment['metadata']['name']}-5d9c7-x2x4q"
    env = _pod_env(deployment, pod_name)
    return load_settings(model, config_file=path, environ=env), env


def _deployments(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Deployment"
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]


@pytest.mark.parametrize("which", ["default", "three-groups"])
def test_master_settings_load(helm: Path, chart_dir: Path, which: str, tmp_path: Path) -> None:
    master_settings = pytest.importorskip("master.settings")
    values = [REQUIRED] if which == "default" else [chart_dir / "values-three-groups.yaml"]
    docs = helm_template(chart_dir, values)
    (deployment,) = _deployments(docs, "master")
    settings, env = _load(docs, deployment, master_settings.MasterSettings, tmp_path)
    assert settings.id == env["POD_NAME"]
    assert settings.http.port == 8080 and settings.http.host == "0.0.0.0"
    assert settings.grpc.port == 9400 and settings.grpc.advertise_host == POD_IP
    assert [(t.name, t.token) for t in settings.api.read_tokens] == [("read", "r3ad-t0ken")]
    assert [(t.name, t.token) for t in settings.api.admin_tokens] == [
        ("admin", "4dm'in-t0ken")]
    assert settings.tls.cert_file == "/etc/exportd-tls/tls.crt" and not settings.tls.insecure
    # The masters' own ZooKeeper login and the servers' digest: what the process needs to start.
    assert settings.zookeeper.acls(Role.MASTER) == ZK.acls
    assert "server-password" not in str(deployment)   # a master never sees the servers' password
    if which == "default":
        assert settings.zookeeper.cluster == "exportd"
        assert settings.zookeeper.ca_file == ""
    else:
        assert settings.zookeeper.cluster == "prod"
        assert settings.zookeeper.hosts.startswith("zk-0.zk-headless:2281,")
        assert settings.zookeeper.ca_file == "/etc/exportd-zk-tls/ca.crt"
        assert settings.egress.http_allow_networks == ["10.40.0.0/16"]
        assert settings.kafka.bootstrap_servers.startswith("kafka-0")
        assert settings.kafka.config == KAFKA_CONFIG
        access = settings.kafka.access()
        assert access.properties("partner-1:9094,partner-0:9094") == PARTNER
        assert access.properties("old-0:9092") == {}


@pytest.mark.parametrize("which", ["default", "three-groups"])
def test_server_settings_load(helm: Path, chart_dir: Path, which: str, tmp_path: Path) -> None:
    server_settings = pytest.importorskip("server.settings")
    values = [REQUIRED] if which == "default" else [chart_dir / "values-three-groups.yaml"]
    docs = helm_template(chart_dir, values)
    deployments = _deployments(docs, "server")
    assert deployments
    for deployment in deployments:
        group = deployment["metadata"]["labels"]["exportd.io/group"]
        settings, env = _load(docs, deployment, server_settings.ServerSettings, tmp_path)
        assert settings.id == env["POD_NAME"]
        assert settings.group == group
        assert settings.http.port == 8090 and settings.http.advertise_host == POD_IP
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert settings.session.shutdown_timeout == grace - 15
        assert settings.work_dir == "/var/lib/exportd"
        assert settings.zookeeper.acls(Role.SERVER) == ZK.acls
        assert "master-password" not in str(deployment)
        if which == "three-groups":
            assert settings.egress.s3_endpoints == ["https://minio.storage.svc:9000"]
            assert settings.s3.secret_access_key == SECRETS[("exportd-s3", "secret-access-key")]
            assert settings.s3.region == "eu-west-1"
            assert settings.kafka.config == KAFKA_CONFIG
            assert settings.kafka.access().properties("partner-0:9094,partner-1:9094") == PARTNER
    if which == "three-groups":
        bulk = _load(docs, deployments[0], server_settings.ServerSettings, tmp_path)[0]
        assert bulk.labels == {"tier": "bulk"}
        assert bulk.capacity.cpu_cores == 4
        assert bulk.capacity.net_bytes_per_s == 1_250_000_000


def test_a_numeric_looking_cluster_name_stays_a_string(
    helm: Path, chart_dir: Path, tmp_path: Path
) -> None:
    server_settings = pytest.importorskip("server.settings")
    docs = helm_template(chart_dir, [REQUIRED],
                         set_values=["zookeeper.cluster=2024", "servers[0].name=x1",
                                     "servers[0].group=007"])
    (deployment,) = _deployments(docs, "server")
    settings, _ = _load(docs, deployment, server_settings.ServerSettings, tmp_path)
    assert settings.zookeeper.cluster == "2024" and settings.group == "007"


# Two catalogs: SQL with its URI (database password) and S3 keys from a Secret, REST with its
# token from another; a name with '_' (variable names are lowercased when read).
ICEBERG = {"iceberg": {"catalogs": {
    "lake": {"type": "sql", "warehouse": "s3://lake/warehouse",
             "s3": {"endpointUrl": "https://minio.storage.svc:9000", "region": "eu-west-1"},
             "properties": {"pool_pre_ping": True},
             "credentials": {"existingSecret": "iceberg-lake", "uriKey": "uri",
                             "accessKeyIdKey": "access-key-id",
                             "secretAccessKeyKey": "secret-access-key"}},
    "events_v2": {"type": "rest", "uri": "https://iceberg-rest.data.svc:8181",
                  "warehouse": "s3://events/warehouse",
                  "credentials": {"existingSecret": "iceberg-events", "tokenKey": "token"}},
}}}


def test_iceberg_catalogs_reach_masters_and_servers_with_secrets_only_in_variables(
    helm: Path, chart_dir: Path, tmp_path: Path
) -> None:
    master_settings = pytest.importorskip("master.settings")
    server_settings = pytest.importorskip("server.settings")
    values = tmp_path / "iceberg.yaml"
    values.write_text(yaml.safe_dump(ICEBERG))
    docs = helm_template(chart_dir, [REQUIRED, values])
    secrets = [value for (name, _), value in SECRETS.items() if name.startswith("iceberg-")]
    secrets.append("p'a$$w@rd")   # the database password alone
    for doc in [d for d in docs if d["kind"] == "ConfigMap"]:
        assert not [s for s in secrets if s in yaml.safe_dump(doc["data"])]
    for doc in docs:   # nowhere in the rendered chart: only secretKeyRefs name them
        assert not [s for s in secrets if s in str(doc)]
    pods = [(d, master_settings.MasterSettings) for d in _deployments(docs, "master")]
    pods += [(d, server_settings.ServerSettings) for d in _deployments(docs, "server")]
    assert len(pods) == 2
    for deployment, model in pods:
        settings, _ = _load(docs, deployment, model, tmp_path)
        assert sorted(settings.iceberg.catalogs) == ["events_v2", "lake"]
        lake = settings.iceberg.catalog("lake")
        assert (lake.type, lake.warehouse) == ("sql", "s3://lake/warehouse")
        assert lake.uri == SECRETS[("iceberg-lake", "uri")]
        assert lake.s3.endpoint_url == "https://minio.storage.svc:9000"
        assert lake.s3.region == "eu-west-1"
        assert lake.s3.access_key_id == SECRETS[("iceberg-lake", "access-key-id")]
        assert lake.s3.secret_access_key is not None
        assert (lake.s3.secret_access_key.get_secret_value()
                == SECRETS[("iceberg-lake", "secret-access-key")])
        assert catalog_properties(lake)["pool_pre_ping"] == "true"
        events = settings.iceberg.catalog("events_v2")
        assert (events.type, events.uri) == ("rest", "https://iceberg-rest.data.svc:8181")
        assert events.s3 == S3Access()
        assert catalog_properties(events)["token"] == SECRETS[("iceberg-events", "token")]
        assert sorted(events.properties) == ["token"]


def test_no_catalogs_by_default(helm: Path, chart_dir: Path, tmp_path: Path) -> None:
    server_settings = pytest.importorskip("server.settings")
    docs = helm_template(chart_dir, [REQUIRED])
    assert not [d for d in docs if d["kind"] == "ConfigMap" and "iceberg" in str(d["data"])]
    (deployment,) = _deployments(docs, "server")
    settings, env = _load(docs, deployment, server_settings.ServerSettings, tmp_path)
    assert settings.iceberg.catalogs == {} and not [v for v in env if "ICEBERG" in v]
