"""A real `exportd-server` enforces its own egress rules on the tasks it is given, whatever the job
says (a job stored before the rules, or one a forged leader sends): a task naming an unlisted
Kafka cluster, an S3 endpoint outside the allow-list or a directory outside the file root FAILS
with the reason as its last_error, and the fake listeners it names receive nothing — no SASL
password, no signed S3 request. With unlisted clusters allowed, the task connects without
credentials."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.runner import task_id
from tests.integration.fakebroker import RecordingRelay
from tests.integration.pipeline.kit import create_topic, job, json_records, produce, unique
from tests.integration.server.harness import (
    Coordinator,
    assignment,
    last_status,
    process_settings,
    server_process,
    wait_until,
)
from tools.infra import SASL_PASSWORD, SASL_USER

SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": SASL_USER}
FAILED = 5   # pb.TASK_STATE_FAILED


async def test_tasks_outside_the_egress_rules_fail_with_the_reason(
        kafka: str, kafka_sasl: str, s3: str, zookeeper: str, cluster: str,
        coordinator: Coordinator, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("egress"))
    async with RecordingRelay(kafka_sasl) as broker, RecordingRelay(None) as endpoint:
        specs = {
            "not a configured Kafka cluster": job(topic, {"type": "file", "directory": "out"},
                                                  source={"topic": topic,
                                                          "bootstrap_servers": broker.bootstrap}),
            "S3 endpoint": job(topic, {"type": "s3", "bucket": "b-egress",
                                       "endpoint_url": f"http://{endpoint.bootstrap}"}),
            "not below the file root": job(topic, {"type": "file", "directory": "/etc/exportd"}),
            "contains '..'": job(topic, {"type": "file", "directory": "a/../../x"}),
            "not a public address": job(topic, {"type": "http",
                                                "url": "http://169.254.169.254/latest/"}),
        }
        tids = {reason: task_id(spec.id, topic, 0) for reason, spec in specs.items()}
        coordinator.desired = [assignment(tids[r], 1, spec) for r, spec in specs.items()]
        settings = process_settings("egress-server", zookeeper, cluster, tmp_path) | {
            "kafka.bootstrap_servers": kafka_sasl, "kafka.config": json.dumps(SASL),
            "s3.endpoint_url": s3, "s3.access_key_id": "test-key-id",
            "s3.secret_access_key": "test-secret-key"}
        log_path = tmp_path / "server.log"
        secret = {"EXPORTD_KAFKA__CONFIG__SASL.PASSWORD": SASL_PASSWORD}
        async with server_process(settings, log_path, secret) as proc:
            def failed() -> dict[str, str]:
                out = {}
                for reason, tid in tids.items():
                    status = last_status(coordinator, tid, proc, log_path)
                    if status is not None and status.state == FAILED:
                        out[reason] = status.last_error
                return out

            await wait_until(lambda: len(failed()) == len(tids), "every task failed", 60)
            for reason, error in failed().items():
                assert reason in error, (reason, error)
        assert broker.connections == 0 and endpoint.connections == 0
        assert endpoint.received() == b"" and SASL_PASSWORD.encode() not in broker.received()
        log = log_path.read_text()
        assert SASL_PASSWORD not in log and "test-secret-key" not in log


async def test_an_allowed_unlisted_cluster_gets_no_credentials(
        kafka: str, kafka_sasl: str, zookeeper: str, cluster: str,
        coordinator: Coordinator, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("unlisted"))
    produce(kafka, topic, json_records(0, 10))
    async with RecordingRelay(kafka_sasl) as broker:
        spec = job(topic, {"type": "file", "directory": "out"},
                   source={"topic": topic, "bootstrap_servers": broker.bootstrap})
        coordinator.desired = [assignment(task_id(spec.id, topic, 0), 1, spec)]
        settings = process_settings("unlisted-server", zookeeper, cluster, tmp_path) | {
            "kafka.bootstrap_servers": kafka_sasl, "kafka.config": json.dumps(SASL),
            "kafka.allow_unlisted_clusters": "true"}
        secret = {"EXPORTD_KAFKA__CONFIG__SASL.PASSWORD": SASL_PASSWORD}
        async with server_process(settings, tmp_path / "server.log", secret):
            await wait_until(lambda: len(broker.received()) > 0, "the task reached the relay", 60)
            await wait_until(lambda: broker.connections >= 2, "the task reconnected", 60)
        assert SASL_PASSWORD.encode() not in broker.received()
        assert b"PLAIN" not in broker.received()   # no SASL handshake at all
