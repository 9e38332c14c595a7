"""The master's partition counts over a SASL/PLAIN listener: `kafka.config` reaches its
metadata client (master/partitions.py), and for a job's own cluster a `kafka.clusters` entry's
properties do."""

from __future__ import annotations

import json

from master.partitions import PartitionSource
from master.settings import MasterSettings
from tasks.settings import load_settings
from tests.integration.pipeline.kit import create_topic, unique
from tools.infra import SASL_PASSWORD, SASL_USER


def test_partition_counts_through_the_configured_sasl_properties(
        kafka: str, kafka_sasl: str) -> None:
    topic = create_topic(kafka, unique("msasl"), partitions=3)
    settings = load_settings(MasterSettings, environ={
        "EXPORTD_API__AUTH": "none",   # no API here: loopback, no tokens
        "EXPORTD_KAFKA__BOOTSTRAP_SERVERS": kafka_sasl,
        "EXPORTD_KAFKA__CONFIG": '{"security.protocol": "SASL_PLAINTEXT", '
                                 f'"sasl.mechanism": "PLAIN", "sasl.username": "{SASL_USER}"}}',
        "EXPORTD_KAFKA__CONFIG__SASL.PASSWORD": f"'{SASL_PASSWORD}'"})
    source = PartitionSource(settings.kafka.bootstrap_servers, 10.0,
                             access=settings.kafka.access())
    try:
        assert source.count(topic) == 3
    finally:
        source.close()


def test_partition_counts_of_a_job_cluster_with_its_own_properties(
        kafka: str, kafka_sasl: str) -> None:
    topic = create_topic(kafka, unique("msasl"), partitions=2)
    clusters = {"secure": {"bootstrap_servers": kafka_sasl, "config": {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": SASL_USER}}}
    settings = load_settings(MasterSettings, environ={
        "EXPORTD_API__AUTH": "none",   # no API here: loopback, no tokens
        "EXPORTD_KAFKA__BOOTSTRAP_SERVERS": kafka,          # plaintext, no properties
        "EXPORTD_KAFKA__CLUSTERS": json.dumps(clusters),
        "EXPORTD_KAFKA__CLUSTERS__SECURE__CONFIG__SASL.PASSWORD": f"'{SASL_PASSWORD}'"})
    source = PartitionSource(settings.kafka.bootstrap_servers, 10.0,
                             access=settings.kafka.access())
    try:
        assert source.count(topic) == 2                     # the configured cluster
        assert source.count(topic, kafka_sasl) == 2         # the job's, over SASL
    finally:
        source.close()
