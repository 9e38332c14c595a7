"""Fencing where data lands: create-only objects chained by offsets (real Kafka, moto S3, files).

Two owners of one task that cut their chunks differently — a zombie and its successor, or a
successor that resumes from an older committed offset — must leave one chain in which every
record appears once; a write that lands late must be refused by the storage, not replace the
winner; and a worker whose lease ran out must start no side effect at all.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tasks.batching import Chunk
from tasks.fence import WorkerFence
from tasks.sinks.base import END_OFFSET_META, END_OFFSET_XATTR, KeyTaken
from tasks.sinks.files import FileSinkWriter
from tasks.sinks.s3 import S3SinkWriter, conditional_writes
from tasks.spec import FileSink, Format, JobSpec, S3Sink, parse_job_spec
from tasks.transforms.batch import Columns
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    json_records,
    lines,
    new_bucket,
    produce,
    run_until_committed,
    runner,
    s3_client,
    unique,
    wait_for,
)

Link = tuple[int, int, bytes]
"""(start offset, end offset, body) of one exported object or file."""


def spec_with(job_id: str, topic: str, sink: dict[str, Any], max_records: int) -> JobSpec:
    return parse_job_spec({"id": job_id, "source": {"topic": topic, "batch_size": 50},
                           "sink": sink, "rotation": {"max_records": max_records}})


def commit(kafka: str, group: str, topic: str, offset: int) -> None:
    """Move the job's committed offset, as a late commit of an older owner would."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def s3_chain(endpoint: str, bucket: str) -> list[Link]:
    client = s3_client(endpoint)
    out: list[Link] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            got = client.get_object(Bucket=bucket, Key=obj["Key"])
            start = int(obj["Key"].rsplit("+", 1)[1].split(".")[0])
            out.append((start, int(got["Metadata"][END_OFFSET_META]), got["Body"].read()))
    return sorted(out)


def file_chain(root: Path) -> list[Link]:
    out: list[Link] = []
    for path in root.rglob("*.ndjson"):
        start = int(path.name.rsplit("+", 1)[1].split(".")[0])
        out.append((start, int(os.getxattr(path, END_OFFSET_XATTR)), path.read_bytes()))
    return sorted(out)


def assert_one_chain(chain: list[Link], end: int) -> None:
    """The links cover [0, end) with no gap and no overlap, and every id appears once."""
    bounds = [(start, stop) for start, stop, _ in chain]
    assert bounds[0][0] == 0 and bounds[-1][1] == end, bounds
    for (_, stop), (start, _) in itertools.pairwise(bounds):
        assert start == stop, f"gap or overlap at {stop} -> {start}: {bounds}"
    ids = [r["id"] for r in lines(body for _, _, body in chain)]
    assert ids == list(range(end))


@pytest.mark.parametrize("kind", ["s3", "file"])
async def test_an_owner_resuming_behind_the_chain_follows_it_whatever_its_rotation(
        kind: str, kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("chain"))
    produce(kafka, topic, json_records(0, 1000))
    sink: dict[str, Any]
    if kind == "s3":
        bucket = new_bucket(s3)
        sink = {"type": "s3", "bucket": bucket}
    else:
        out = tmp_path / "out"
        sink = {"type": "file", "directory": str(out)}
    job_id = unique("job")
    env = environment(kafka, tmp_path, s3)
    first = spec_with(job_id, topic, sink, max_records=100)
    await run_until_committed(runner(env, first), 1000)

    # The committed offset goes back to 0 (a zombie's late commit), and the next owner cuts its
    # chunks at 70 records: each of its first names is taken, and it follows the chain.
    commit(kafka, first.consumer_group, topic, 0)
    produce(kafka, topic, json_records(1000, 1500))
    second = runner(env, spec_with(job_id, topic, sink, max_records=70))
    await second.start()
    try:
        await wait_for(lambda: second.stats().committed_offset >= 1430,
                       f"the chain followed to its end (stats: {second.stats()})")
    finally:
        await second.stop(drain=True)   # flushes [1430, 1500)
    assert second.stats().committed_offset == 1500, second.stats()

    chain = s3_chain(s3, bucket) if kind == "s3" else file_chain(out)
    assert_one_chain(chain, 1500)
    assert [start for start, _, _ in chain][:11] == list(range(0, 1001, 100))
    assert [start for start, _, _ in chain][10:] == list(range(1000, 1500, 70))


def chunk_of(start: int, end: int) -> Chunk:
    rows: Columns[Any] = Columns()
    for i in range(start, end):
        rows.offsets.append(i)
        rows.timestamps.append(0)
        rows.values.append(b'{"id":%d}' % i)
    return Chunk(start, end, rows=rows, records=end - start)


def test_a_late_s3_write_is_refused_and_names_the_winners_end(s3: str) -> None:
    bucket = new_bucket(s3)
    client = s3_client(s3)
    assert conditional_writes(client, bucket, "")   # moto honours If-None-Match: *
    writer = S3SinkWriter(S3Sink(bucket=bucket), Format(), client, topic="t", partition=0)
    writer._write(chunk_of(0, 70))                  # the successor's chunk lands first
    with pytest.raises(KeyTaken) as taken:
        writer._write(chunk_of(0, 100))             # the zombie's, held in flight, lands late
    assert taken.value.end_offset == 70
    assert [r["id"] for r in lines(body for _, _, body in s3_chain(s3, bucket))] == list(
        range(70))


def test_a_late_file_write_is_refused_and_names_the_winners_end(tmp_path: Path) -> None:
    writer = FileSinkWriter(FileSink(directory=str(tmp_path)), Format(), topic="t",
                            partition=0)
    writer._write(chunk_of(0, 70))
    with pytest.raises(KeyTaken) as taken:
        writer._write(chunk_of(0, 100))
    assert taken.value.end_offset == 70
    assert [r["id"] for r in lines(body for _, _, body in file_chain(tmp_path))] == list(
        range(70))


async def test_a_worker_whose_lease_ran_out_writes_and_commits_nothing_until_renewed(
        kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("fenced"))
    produce(kafka, topic, json_records(0, 300))
    bucket = new_bucket(s3)
    fence = WorkerFence(deadline=float("-inf"))
    env = dataclasses.replace(environment(kafka, tmp_path, s3), fence=fence)
    spec = spec_with(unique("job"), topic, {"type": "s3", "bucket": bucket}, max_records=100)
    r = runner(env, spec)
    await r.start()
    try:
        await wait_for(lambda: "lease ran out" in (r.stats().last_error or ""),
                       f"a fenced write (stats: {r.stats()})")
        assert s3_client(s3).list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        assert r.stats().committed_offset == 0
        fence.renew(float("inf"))   # the main process renewed the lease
        await wait_for(lambda: r.stats().committed_offset == 300,
                       f"the export after renewal (stats: {r.stats()})")
    finally:
        await r.stop(drain=False)
    assert_one_chain(s3_chain(s3, bucket), 300)


def test_an_object_of_a_version_before_chains_is_replaced_as_before(s3: str,
                                                                     tmp_path: Path) -> None:
    """Upgrading: a chunk delivered but not committed by the previous version has no end
    offset; the new owner cut its chunk from the same start, and replaces it (the old rule)."""
    bucket = new_bucket(s3)
    client = s3_client(s3)
    writer = S3SinkWriter(S3Sink(bucket=bucket), Format(), client, topic="t", partition=0)
    key = writer.key_for(chunk_of(0, 50))
    client.put_object(Bucket=bucket, Key=key, Body=b'{"id":0}\n')
    writer._write(chunk_of(0, 50))
    assert [r["id"] for r in lines(body for _, _, body in s3_chain(s3, bucket))] == list(
        range(50))

    files = FileSinkWriter(FileSink(directory=str(tmp_path)), Format(), topic="t",
                           partition=0)
    path = files.path_for(chunk_of(0, 50))
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"id":0}\n')
    files._write(chunk_of(0, 50))
    assert [r["id"] for r in lines(body for _, _, body in file_chain(tmp_path))] == list(
        range(50))
