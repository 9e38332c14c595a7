"""Per sink: produce N records, export them, read back exactly N (real Kafka, moto S3, files)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tasks.errors import ValidationError
from tasks.formats import decompress
from tests.integration.pipeline.kit import (
    consume_all,
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

N = 1000


async def test_file_sink_writes_each_record_once_in_deterministic_files(
        kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("files"))
    produce(kafka, topic, json_records(0, N))
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out), "path": "{topic}/p={partition}"},
               rotation={"max_records": 300})
    await run_until_committed(runner(environment(kafka, tmp_path), spec), N)

    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = [p.name for p in files]
    # data-only rotation: files start at 0, 300, 600, 900 (the last one closed by the drain)
    assert names == [f"{topic}+0+{o:020d}.ndjson" for o in (0, 300, 600, 900)]
    records = lines(p.read_bytes() for p in files)
    assert [r["id"] for r in records] == list(range(N))
    assert not list(out.rglob(".*.tmp"))


async def test_s3_sink_filters_projects_and_gzips(kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("s3"))
    produce(kafka, topic, json_records(0, N), timestamp_ms=1_795_330_800_000)  # 11-22 07:00Z
    bucket = new_bucket(s3)
    spec = job(topic, {"type": "s3", "bucket": bucket, "prefix": "exports",
                       "path": "dt={dt}/hour={hour}"},
               transform={"parse": {"format": "json"}, "where": "status >= `500`",
                          "select": "{id: id, s: status}"},
               format={"type": "ndjson", "compression": "gzip"},
               rotation={"max_records": 250})
    await run_until_committed(runner(environment(kafka, tmp_path, s3), spec), N)

    objects = s3_objects(s3, bucket, "gzip")
    assert all(k.startswith("exports/dt=2026-11-22/hour=07/") for k in objects)
    records = lines(objects[k] for k in sorted(objects))
    expected = [{"id": i, "s": 200 + (i % 5) * 100} for i in range(N) if (i % 5) * 100 >= 300]
    assert records == expected


async def test_s3_objects_carry_the_encryption_and_storage_class_asked_for(
        kafka: str, s3: str, tmp_path: Path) -> None:
    n = 6000   # ~6 MB in the first file (5,000 records): a multipart upload; the rest one PUT
    topic = create_topic(kafka, unique("sse"))
    produce(kafka, topic, json_records(0, n, pad="x" * 1200))
    bucket = new_bucket(s3)
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/exportd-test"
    spec = job(topic, {"type": "s3", "bucket": bucket, "multipart_threshold_bytes": 5 * 2**20,
                       "server_side_encryption": "aws:kms", "kms_key_id": key_arn,
                       "storage_class": "STANDARD_IA"},
               rotation={"max_records": 5000})
    await run_until_committed(runner(environment(kafka, tmp_path, s3), spec), n)

    client = s3_client(s3)
    keys = sorted(s3_objects(s3, bucket))
    assert len(keys) == 2
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], head["StorageClass"]) == (
            "aws:kms", key_arn, "STANDARD_IA"), key
    assert [r["id"] for r in lines(s3_objects(s3, bucket)[k] for k in keys)] == list(range(n))


def test_a_kms_key_without_kms_encryption_is_refused() -> None:
    with pytest.raises(ValidationError, match="kms_key_id needs server_side_encryption: aws:kms"):
        job("t", {"type": "s3", "bucket": "b-1", "kms_key_id": "k"})


async def test_s3_sink_csv_zstd_reads_back_all_rows(kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("csv"))
    produce(kafka, topic, json_records(0, N))
    bucket = new_bucket(s3)
    spec = job(topic, {"type": "s3", "bucket": bucket},
               transform={"parse": {"format": "json"}},
               format={"type": "csv", "compression": "zstd", "columns": ["id", "path"]},
               rotation={"max_records": 400})
    await run_until_committed(runner(environment(kafka, tmp_path, s3), spec), N)

    rows: list[dict[str, str]] = []
    for _key, data in sorted(s3_objects(s3, bucket, "zstd").items()):
        rows.extend(csv.DictReader(io.StringIO(data.decode())))
    assert [int(r["id"]) for r in rows] == list(range(N))
    assert rows[7]["path"] == "/p/7"


async def test_kafka_sink_refeeds_every_record(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("in"))
    target = create_topic(kafka, unique("out"))
    produce(kafka, topic, json_records(0, N))
    spec = job(topic, {"type": "kafka", "topic": target},
               transform={"parse": {"format": "json"}, "select": "{id: id}"})
    await run_until_committed(runner(environment(kafka, tmp_path), spec), N)

    messages = consume_all(kafka, target, N)
    assert sorted(json.loads(m.value() or b"")["id"] for m in messages) == list(range(N))


def test_decompress_round_trip_helper() -> None:
    assert decompress(b"abc", "none") == b"abc"


NGINX_LINE = ('10.0.0.{i} - - [22/Nov/2026:07:01:02 +0000] "GET /item/{i} HTTP/1.1" {status} 42 '
              '"-" "bench/1.0"')


async def test_process_pool_parses_nginx_into_parquet(kafka: str, s3: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    topic = create_topic(kafka, unique("pool"))
    produce(kafka, topic, (NGINX_LINE.format(i=i, status=404 if i % 4 == 0 else 200).encode()
                           for i in range(N)))
    bucket = new_bucket(s3)
    spec = job(topic, {"type": "s3", "bucket": bucket},
               transform={"parse": {"format": "nginx"}, "where": "status == `404`",
                          "select": "{ip: remote_addr, path: path}"},
               format={"type": "parquet", "compression": "zstd"}, rotation={"max_records": 100})
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        env = dataclasses.replace(environment(kafka, tmp_path, s3), process_pool=pool)
        await run_until_committed(runner(env, spec), N)

    rows = [row for _key, data in sorted(s3_objects(s3, bucket).items())
            for row in pq.read_table(io.BytesIO(data)).to_pylist()]
    assert rows == [{"ip": f"10.0.0.{i}", "path": f"/item/{i}"} for i in range(0, N, 4)]


async def test_max_seconds_flushes_a_quiet_partition(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("quiet"))
    produce(kafka, topic, json_records(0, 10))
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out)},
               rotation={"max_records": 1000, "max_seconds": "1s"})
    r = runner(environment(kafka, tmp_path), spec)
    await r.start()
    try:  # no more records come and nobody drains: the time limit alone closes the file
        await wait_for(lambda: r.stats().committed_offset == 10, "the time-rotated file")
    finally:
        await r.stop(drain=False)
    (only,) = [p for p in out.rglob("*") if p.is_file()]
    assert [rec["id"] for rec in lines([only.read_bytes()])] == list(range(10))


async def test_start_at_a_timestamp_or_latest_without_a_committed_offset(
        kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("start"))
    produce(kafka, topic, json_records(0, 10), timestamp_ms=1_795_330_800_000)
    produce(kafka, topic, json_records(10, 20), timestamp_ms=1_795_334_400_000)  # an hour later
    out = tmp_path / "ts"
    spec = job(topic, {"type": "file", "directory": str(out)},
               source={"topic": topic, "start": "timestamp",
                       "start_timestamp_ms": 1_795_334_400_000})
    await run_until_committed(runner(environment(kafka, tmp_path), spec), 10, end=20)
    assert [r["id"] for r in lines(p.read_bytes() for p in out.rglob("*.ndjson"))] == list(
        range(10, 20))

    latest = job(topic, {"type": "file", "directory": str(tmp_path / "latest")},
                 source={"topic": topic, "start": "latest"})
    r = runner(environment(kafka, tmp_path), latest)
    await r.start()
    await r.stop(drain=True)
    assert r.stats().committed_offset == 20 and r.stats().records_total == 0
