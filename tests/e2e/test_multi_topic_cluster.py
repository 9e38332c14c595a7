"""A `topic_pattern` job on a whole cluster of real processes (a master, a server, Kafka, S3):
a topic created after the job was submitted gets a task within the partition check, the server
exports its records, and every record of both topics lands in S3 exactly once. The job's
rate_limit is split over its tasks: the API shows each task's share once the topic is there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tools.devcluster.__main__ import s3_client
from tools.devcluster.cluster import LocalCluster, ServerSpec, http_json, wait_for

N = 200
LIMIT = 10_000.0   # records/s for the whole job: far above what the test produces


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCluster]:
    with LocalCluster(masters=1, servers=[ServerSpec("server-1", "default")],
                      cluster=f"multi-{uuid.uuid4().hex[:6]}",
                      master_overrides={"kafka": {"partition_check_interval": "1s"}}) as c:
        yield c


def _topic(bootstrap: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})   # alive until the result is in
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    return name


def _produce(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(N):
        producer.produce(topic, value=json.dumps({"topic": topic, "id": i}).encode())
    assert producer.flush(30) == 0


def _exported(s3: str, bucket: str) -> list[tuple[str, int]]:
    client = s3_client(s3)
    out: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out.extend((r["topic"], r["id"]) for r in map(json.loads, body.splitlines()))
    return out


def test_a_pattern_job_exports_a_topic_created_after_submission(local: LocalCluster) -> None:
    kafka, s3 = local.endpoints["kafka"], local.endpoints["s3"]
    prefix = f"multi{uuid.uuid4().hex[:6]}"
    first = _topic(kafka, f"{prefix}.eu")
    _produce(kafka, first)
    bucket = f"multi-{uuid.uuid4().hex[:8]}"
    s3_client(s3).create_bucket(Bucket=bucket)
    leader = local.leader_url()
    assert leader is not None
    spec = {"id": "pattern", "source": {"topic_pattern": rf"{prefix}\..+"},
            "rate_limit": {"records_per_s": LIMIT},
            "sink": {"type": "s3", "bucket": bucket}, "rotation": {"max_seconds": 1}}
    created: dict[str, Any] = http_json(leader + "/api/v1/jobs", "POST", spec, timeout=30)
    assert [t["id"] for t in created["tasks"]] == [f"pattern:{first}:0"]

    later = _topic(kafka, f"{prefix}.us")
    _produce(kafka, later)
    wanted = sorted((t, i) for t in (first, later) for i in range(N))
    wait_for(lambda: sorted(_exported(s3, bucket)) == wanted, 120,
             "every record of both topics in S3", interval=1.0)
    assert sorted(_exported(s3, bucket)) == wanted    # exactly once: no record twice

    task: dict[str, Any] = http_json(f"{leader}/api/v1/tasks/pattern:{later}:0")
    assert task["server"] == "server-1" and task["job_tasks"] == 2, task
    assert task["rate_share_records_per_s"] == LIMIT / 2, task
