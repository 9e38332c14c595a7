"""A real `exportd-server` reading from and dead-lettering to Kafka over SASL/PLAIN: the
properties in `kafka.config` (and a password from EXPORTD_KAFKA__CONFIG__SASL.PASSWORD) reach
every consumer and producer of its tasks; offsets are committed through the same listener. The
same for a job that names its own cluster, whose properties are a `kafka.clusters` entry's
while the server's configured cluster is plaintext."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tasks.runner import task_id
from tests.integration.pipeline.kit import (
    consume_all,
    create_topic,
    job,
    json_records,
    produce,
    unique,
)
from tests.integration.server.harness import (
    Coordinator,
    assignment,
    exported_ids,
    last_status,
    process_settings,
    server_process,
    wait_until,
)
from tools.infra import SASL_PASSWORD, SASL_USER

N, BAD = 500, 7


@pytest.mark.parametrize("where", ["configured cluster", "job's own cluster"])
async def test_tasks_use_the_configured_sasl_properties(
        where: str, kafka: str, kafka_sasl: str, zookeeper: str, cluster: str,
        coordinator: Coordinator, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("sasl"))
    produce(kafka, topic, json_records(0, N) + [b"not json"] * BAD)
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out)},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               rotation={"max_records": 200})   # dead letters: the default Kafka topic
    properties = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                  "sasl.username": SASL_USER}
    settings = process_settings("sasl-server", zookeeper, cluster, tmp_path)
    if where == "configured cluster":
        settings |= {"kafka.bootstrap_servers": kafka_sasl,
                     "kafka.config": json.dumps(properties)}
        secret = {"EXPORTD_KAFKA__CONFIG__SASL.PASSWORD": SASL_PASSWORD}
    else:
        spec = spec.model_copy(update={"source": spec.source.model_copy(
            update={"bootstrap_servers": kafka_sasl})})
        settings |= {"kafka.bootstrap_servers": kafka, "kafka.clusters": json.dumps(
            {"secure": {"bootstrap_servers": kafka_sasl, "config": properties}})}
        secret = {"EXPORTD_KAFKA__CLUSTERS__SECURE__CONFIG__SASL.PASSWORD": SASL_PASSWORD}
    tid = task_id(spec.id, topic, 0)
    coordinator.desired = [assignment(tid, 1, spec)]
    log_path = tmp_path / "server.log"
    async with server_process(settings, log_path, secret) as proc:
        def committed() -> int:
            status = last_status(coordinator, tid, proc, log_path)
            return status.committed_offset if status is not None else -1

        # 400 records in full files; the drain on SIGTERM commits the rest and the bad ones.
        await wait_until(lambda: committed() >= 400, "files committed over SASL", timeout=90)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 90) == 0, log_path.read_text()[-3000:]
    final = {t.task_id: t.committed_offset for t in coordinator.reports[-1].tasks}
    assert final == {tid: N + BAD}
    assert exported_ids(out) == list(range(N))
    dead = consume_all(kafka, spec.dead_letter_topic, BAD)
    assert [m.value() for m in dead] == [b"not json"] * BAD
