"""Failures: a task's process killed with -9 mid-stream and restarted writes every record to S3
exactly once; S3 down for a while: the task retries, commits nothing meanwhile, then catches up."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from tasks.runner import TaskState
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    json_records,
    lines,
    new_bucket,
    produce,
    run_until_committed,
    runner,
    s3_client,
    s3_objects,
    unique,
    wait_for,
)
from tools.infra.ports import free_port
from tools.infra.process import ManagedProcess
from tools.infra.servers import start_s3


def committed(kafka: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


def task_process(spec_file: Path, kafka: str, s3: str, tmp: Path, n: int) -> ManagedProcess:
    argv = [sys.executable, "-m", "tests.integration.pipeline.task_main", str(spec_file), kafka,
            s3, str(tmp)]
    return ManagedProcess(f"task-{n}", argv, tmp / f"task-{n}.log", cwd=Path.cwd())


async def test_kill_9_mid_stream_then_restart_exports_every_record_once(
        kafka: str, s3: str, tmp_path: Path) -> None:
    n = 20_000
    topic = create_topic(kafka, unique("crash"))
    produce(kafka, topic, json_records(0, n))
    bucket = new_bucket(s3)
    spec = job(topic, {"type": "s3", "bucket": bucket},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               format={"type": "ndjson", "compression": "gzip"},
               rotation={"max_records": 100})
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(spec.to_json())
    client = s3_client(s3)

    def object_count() -> int:
        return int(client.list_objects_v2(Bucket=bucket).get("KeyCount", 0))

    first = task_process(spec_file, kafka, s3, tmp_path, 1)
    try:
        await wait_for(lambda: object_count() >= 5, "the first objects")
        first.proc.kill()  # kill -9: no drain, no commit of what is in flight
        first.proc.wait(10)
    finally:
        first.stop()
    at_crash = committed(kafka, spec.consumer_group, topic)
    assert at_crash < n, "the first run finished before the kill: nothing was tested"

    second = task_process(spec_file, kafka, s3, tmp_path, 2)
    try:
        await wait_for(lambda: committed(kafka, spec.consumer_group, topic) >= n,
                       f"commit of {n} after the restart", 90)
    finally:
        second.stop()  # SIGTERM: drains

    objects = s3_objects(s3, bucket, "gzip")
    counts = collections.Counter(r["id"] for r in lines(objects.values()))
    assert sorted(counts) == list(range(n))
    assert set(counts.values()) == {1}
    assert len(objects) == n // 100


async def test_s3_down_for_a_while_retries_then_catches_up(kafka: str, tmp_path: Path) -> None:
    port = free_port()
    proc, endpoint = start_s3(tmp_path / "s3", port=port)
    try:
        topic = create_topic(kafka, unique("s3down"))
        bucket = new_bucket(endpoint)
        spec = job(topic, {"type": "s3", "bucket": bucket},
                   transform={"parse": {"format": "json"}, "select": "{id: id}"},
                   rotation={"max_records": 100})
        r = runner(environment(kafka, tmp_path, endpoint), spec)
        produce(kafka, topic, json_records(0, 500))
        await r.start()
        try:
            await wait_for(lambda: r.stats().committed_offset == 500, "the first 500")
            before_outage = s3_objects(endpoint, bucket)
            proc.stop()  # S3 is down: moto's memory goes with it
            produce(kafka, topic, json_records(500, 1000))
            await wait_for(lambda: "sink" in r.stats().last_error, "a sink error during the outage")
            assert r.stats().committed_offset == 500
            assert r.stats().state == TaskState.RUNNING
            proc, _ = start_s3(tmp_path / "s3", port=port)
            s3_client(endpoint).create_bucket(Bucket=bucket)
            await wait_for(lambda: r.stats().committed_offset == 1000, "catching up after S3")
        finally:
            await r.stop(drain=True)
        after = s3_objects(endpoint, bucket)
        ids = sorted(rec["id"] for rec in lines([*before_outage.values(), *after.values()]))
        assert ids == list(range(1000))
    finally:
        proc.stop()


async def test_a_rewrite_from_the_same_offset_is_byte_identical(
        kafka: str, s3: str, tmp_path: Path) -> None:
    """Two independent runs over the same records (two jobs, two buckets) write the same keys
    with the same bytes: what a restarted task relies on to replace, not add, an object."""
    topic = create_topic(kafka, unique("same"))
    produce(kafka, topic, json_records(0, 1000), timestamp_ms=1_795_330_800_000)
    runs = []
    for _ in range(2):
        bucket = new_bucket(s3)
        spec = job(topic, {"type": "s3", "bucket": bucket, "path": "{topic}/dt={dt}/{hour}"},
                   transform={"parse": {"format": "json"}, "sample": 0.5,
                              "select": "{id: id, p: path}"},
                   format={"type": "ndjson", "compression": "gzip"},
                   rotation={"max_records": 97, "max_bytes": 2000})
        await run_until_committed(runner(environment(kafka, tmp_path, s3), spec), 1000)
        runs.append(s3_objects(s3, bucket))  # raw bytes: gzip included
    assert len(runs[0]) > 5
    assert runs[0] == runs[1]
