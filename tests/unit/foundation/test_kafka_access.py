"""tasks.kafka_access: which librdkafka properties a client of a given cluster gets."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from master.settings import MasterSettings
from server.settings import ServerSettings
from tasks.errors import ConfigError
from tasks.kafka_access import KafkaAccess, UnlistedCluster, bootstrap_key
from tasks.settings import load_settings

SASL = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}


def test_bootstrap_lists_name_the_same_cluster_in_any_order_and_spacing() -> None:
    assert bootstrap_key("b:9092, a:9092") == bootstrap_key("a:9092,b:9092,")
    assert bootstrap_key("a:9092") != bootstrap_key("a:9093")


def test_the_configured_cluster_gets_kafka_config_and_listed_ones_their_own(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: main:9093\n"
                   "  config: {security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512}\n"
                   "  clusters:\n"
                   "    legacy: {bootstrap_servers: 'old-1:9092,old-2:9092', config: {}}\n"
                   "    partner:\n      bootstrap_servers: p:9094\n"
                   "      config: {security.protocol: SSL}\n")
    env = {"EXPORTD_KAFKA__CLUSTERS__PARTNER__CONFIG__SSL.KEY.PASSWORD": "'k'"}
    server = load_settings(ServerSettings, config_file=cfg, environ=env).kafka.access()
    master = load_settings(MasterSettings, config_file=cfg,
                           environ={**env, "EXPORTD_API__AUTH": "none"}).kafka.access()
    assert master == server   # masters count partitions the way servers' tasks read
    for access in (server, master):
        assert access.properties("main:9093") == SASL
        assert access.properties("old-2:9092, old-1:9092") == {}          # plaintext
        assert access.properties("p:9094") == {"security.protocol": "SSL",
                                               "ssl.key.password": "k"}
        with pytest.raises(UnlistedCluster):   # no entry: refused, never kafka.config
            access.properties("elsewhere:9092")
        assert pickle.loads(pickle.dumps(access)) == access  # it travels to worker processes


@pytest.mark.parametrize(("clusters", "error"), [
    ({"Legacy": {"bootstrap_servers": "x:1"}}, "Legacy: a cluster's name is lowercase"),
    ({"a": {"bootstrap_servers": "x:1"}, "b": {"bootstrap_servers": " x:1"}},
     "clusters.b has the bootstrap list of clusters.a"),
    ({"a": {"bootstrap_servers": "main:9092"}}, "clusters.a has the bootstrap list of "
                                                "bootstrap_servers"),
    ({"a": {"bootstrap_servers": "x:1", "config": {"group.id": "g"}}}, "exportd sets group.id"),
    ({"a": {"config": {}}}, "bootstrap_servers"),
])
def test_bad_cluster_entries_are_clear_errors(clusters: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_settings(ServerSettings, environ={}, overrides={
            "kafka.bootstrap_servers": "main:9092", "kafka.clusters": clusters})


def test_an_empty_access_gives_no_properties() -> None:
    assert KafkaAccess(allow_unlisted=True).properties("any:9092") == {}
    with pytest.raises(UnlistedCluster):
        KafkaAccess().properties("any:9092")
