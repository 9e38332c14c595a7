"""Helpers for the pipeline's integration tests: topics, producing, jobs, runners, reading back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tasks.egress import EgressSettings
from tasks.factory import TaskEnvironment, build_runner
from tasks.formats import decompress
from tasks.pipeline import PipelineRunner
from tasks.runner import Assignment, task_id
from tasks.spec import JobSpec, parse_job_spec

DEADLINE = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name].result(30)
    return name


def produce(bootstrap: str, topic: str, values: Iterable[bytes], *, partition: int = 0,
            timestamp_ms: int | None = None) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    for value in values:
        producer.produce(topic, value=value, partition=partition, on_delivery=delivered,
                         timestamp=timestamp_ms or 0)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors[:3]
    return count


def json_records(start: int, end: int, **extra: Any) -> list[bytes]:
    return [json.dumps({"id": i, "status": 200 + (i % 5) * 100, "path": f"/p/{i}", **extra})
            .encode() for i in range(start, end)]


def consume_all(bootstrap: str, topic: str, expected: int, *, partitions: int = 1,
                timeout: float = DEADLINE) -> list[Message]:
    """Read a topic from the beginning until `expected` messages (or the deadline)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return out


def job(topic: str, sink: dict[str, Any], **spec: Any) -> JobSpec:
    return parse_job_spec({"id": unique("job"), "source": {"topic": topic, "batch_size": 200},
                           "sink": sink, **spec})


def environment(kafka: str, tmp: Path, s3: str | None = None) -> TaskEnvironment:
    return TaskEnvironment(kafka_bootstrap=kafka, state_dir=tmp, s3_endpoint=s3,
                           s3_access_key="test", s3_secret_key="test", backoff_base=0.05,
                           backoff_cap=1.0, drain_timeout=30.0, egress=loopback_egress(tmp))


def loopback_egress(tmp: Path) -> EgressSettings:
    """The egress allowances of tests: receivers on loopback, files below the test's tmp."""
    return EgressSettings(http_allow_networks=["127.0.0.0/8", "::1/128"], file_root=str(tmp))


def runner(env: TaskEnvironment, spec: JobSpec, partition: int = 0,
           generation: int = 1) -> PipelineRunner:
    tid = task_id(spec.id, spec.source.topic, partition)
    return build_runner(env, Assignment(tid, generation, spec, partition))


async def wait_for(condition: Callable[[], bool], what: str,
                   timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def run_until_committed(r: PipelineRunner, records: int, *, end: int | None = None,
                              timeout: float = DEADLINE) -> None:
    """Start, wait until `records` records went through, drain (which flushes the partial last
    chunk), and check that offset `end` (default: `records`) was committed."""
    await r.start()
    try:
        await wait_for(lambda: r.stats().records_total >= records,
                       f"{records} records (stats: {r.stats()})", timeout)
    finally:
        await r.stop(drain=True)
    assert r.stats().committed_offset == (records if end is None else end), r.stats()


async def with_runner(r: PipelineRunner, body: Callable[[], Awaitable[None]]) -> None:
    await r.start()
    try:
        await body()
    finally:
        await r.stop(drain=False)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def new_bucket(endpoint: str) -> str:
    name = unique("bucket")
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def s3_objects(endpoint: str, bucket: str, compression: str = "none") -> dict[str, bytes]:
    client = s3_client(endpoint)
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = decompress(body, compression)
    return out


def lines(files: Iterable[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for data in files for line in data.splitlines() if line]
