"""The master's partition counts over a SASL/PLAIN listener: `kafka.config` reaches its
metadata client (master/partitions.py)."""

from __future__ import annotations

from master.partitions import PartitionSource
from master.settings import MasterSettings
from tasks.settings import load_settings
from tests.integration.pipeline.kit import create_topic, unique
from tools.infra import SASL_PASSWORD, SASL_USER


def test_partition_counts_through_the_configured_sasl_properties(
        kafka: str, kafka_sasl: str) -> None:
    topic = create_topic(kafka, unique("msasl"), partitions=3)
    settings = load_settings(MasterSettings, environ={
        "EXPORTD_KAFKA__BOOTSTRAP_SERVERS": kafka_sasl,
        "EXPORTD_KAFKA__CONFIG": '{"security.protocol": "SASL_PLAINTEXT", '
                                 f'"sasl.mechanism": "PLAIN", "sasl.username": "{SASL_USER}"}}',
        "EXPORTD_KAFKA__CONFIG__SASL.PASSWORD": f"'{SASL_PASSWORD}'"})
    source = PartitionSource(settings.kafka.bootstrap_servers, 10.0, config=settings.kafka.config)
    try:
        assert source.count(topic) == 3
    finally:
        source.close()
