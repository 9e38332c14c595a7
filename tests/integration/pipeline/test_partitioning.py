"""Records of one file in their own directories, on real Kafka and S3 (moto): `{field:...}` and
event-time {dt}/{hour} with a lateness window; and exactly-once when two owners of the task cut
the same chunks differently at once (a stalled zombie and its successor), through the chunk claims
of tasks/sinks/partitioned.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Producer

from tasks.spec import Rotation
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    new_bucket,
    produce,
    run_until_committed,
    runner,
    s3_client,
    s3_objects,
    unique,
    wait_for,
)

BASE_MS = 1_796_464_800_000   # 2026-12-05T10:00:00Z
REGIONS = ("eu", "us", "apac")


def _event(i: int) -> dict[str, Any]:
    """Regions interleaved record by record; event times over three hours; every 10th record
    2 h older than its arrival (late: the lateness window is 1 h); record 55 without a time."""
    minutes = i if i % 10 else i - 120
    at = dt.datetime.fromtimestamp(BASE_MS / 1000 + minutes * 60, tz=dt.UTC)
    event: dict[str, Any] = {"id": i, "customer": {"region": REGIONS[i % 3]},
                             "at": at.isoformat().replace("+00:00", "Z")}
    if i == 55:
        del event["at"]
    return event


def _expected_dir(event: dict[str, Any]) -> str:
    at = dt.datetime.fromisoformat(event["at"])
    path = f"region={event['customer']['region']}/dt={at:%Y-%m-%d}/hour={at:%H}"
    return f"late/{path}" if event["id"] % 10 == 0 else path


async def test_records_of_one_chunk_go_to_their_own_directories(
        kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("parts"))
    events = [_event(i) for i in range(180)]
    # Kafka timestamps: when each record arrived, a minute after its own event time (the late
    # ones 2 h after theirs: older than the 1 h window).
    producer = Producer({"bootstrap.servers": kafka})
    for i, event in enumerate(events):
        producer.produce(topic, json.dumps(event).encode(),
                         timestamp=BASE_MS + (i + 1) * 60_000)
    assert producer.flush(30) == 0
    bucket = new_bucket(s3)
    dlq = tmp_path / "dlq"
    spec = job(topic, {"type": "s3", "bucket": bucket, "prefix": "p",
                       "path": "region={field:customer.region}/dt={dt}/hour={hour}",
                       "partitioning": {"time_field": "at", "lateness": "1h"}},
               transform={"parse": {"format": "json"}},
               format={"type": "parquet"}, rotation={"max_records": 100},
               dead_letter={"type": "file", "directory": str(dlq)})
    r = runner(environment(kafka, tmp_path, s3), spec)
    await run_until_committed(r, 180)

    found: dict[int, str] = {}
    for key, body in s3_objects(s3, bucket).items():
        if "/_exportd/claims/" in key:
            assert body == b""
            continue
        directory = key.removeprefix("p/").rsplit("/", 1)[0]
        for row in pq.read_table(io.BytesIO(body)).to_pylist():
            assert row["id"] not in found, f"record {row['id']} twice"
            found[row["id"]] = directory
    assert found == {e["id"]: _expected_dir(e) for e in events if e["id"] != 55}
    (dead,) = [json.loads(line) for p in dlq.rglob("*.ndjson")
               for line in p.read_bytes().splitlines()]
    assert dead["offset"] == 55 and "event time field is missing" in dead["reason"]


async def test_two_owners_cutting_differently_export_each_record_once(
        kafka: str, s3: str, tmp_path: Path) -> None:
    """A zombie (files of 30 records) and its successor (files of 100) run the same task at
    the same time on the same topic: whoever claims a chunk first decides its bounds, the other
    re-reads it, cuts it there and completes the same files."""
    topic = create_topic(kafka, unique("claims"))
    n = 600
    produce(kafka, topic, [json.dumps({"id": i, "k": REGIONS[i % 3]}).encode()
                           for i in range(n)])
    bucket = new_bucket(s3)
    sink = {"type": "s3", "bucket": bucket, "prefix": "c", "path": "k={field:k}"}
    env = environment(kafka, tmp_path, s3)
    zombie_job = job(topic, sink, transform={"parse": {"format": "json"}},
                     rotation={"max_records": 30})
    # The same task (job id, consumer group), with other rotation: other cut points.
    successor_job = zombie_job.model_copy(update={"rotation": Rotation(max_records=100)})
    zombie = runner(env, zombie_job)
    successor = runner(env, successor_job, generation=2)
    await asyncio.gather(zombie.start(), successor.start())
    try:
        await wait_for(lambda: min(zombie.stats().committed_offset,
                                   successor.stats().committed_offset) >= n - 100,
                       "both owners past the last full chunk", timeout=120)
    finally:
        await asyncio.gather(zombie.stop(drain=True), successor.stop(drain=True))

    seen: dict[int, int] = {}
    claims = 0
    for key, body in s3_objects(s3, bucket).items():
        if "/_exportd/claims/" in key:
            claims += 1
            continue
        for line in body.splitlines():
            record = json.loads(line)
            seen[record["id"]] = seen.get(record["id"], 0) + 1
            assert key.startswith(f"c/k={record['k']}/")
    assert [i for i, count in seen.items() if count > 1] == []
    top = max(zombie.stats().committed_offset, successor.stats().committed_offset)
    assert set(range(top)) <= set(seen)
    assert claims > 0
    heads = s3_client(s3).list_objects_v2(Bucket=bucket, Prefix="c/_exportd/claims/")
    assert heads["KeyCount"] == claims

