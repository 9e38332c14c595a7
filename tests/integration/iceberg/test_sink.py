"""The Iceberg sink's task side on real Kafka, a real SQL catalog and moto S3 (or files): claims,
data files and chunk reports in the table's location, each record in exactly one reported file;
dead letters for records that do not fit the table; two owners of one task leaving one chain;
and a task resuming from the table and its reports, not from Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tasks.factory import TaskEnvironment
from tasks.iceberg.catalogs import CatalogSettings, IcebergSettings, open_catalog
from tasks.iceberg.layout import (
    CLAIMS_DIR,
    DATA_DIR,
    REPORTS_DIR,
    ChunkReport,
    summary_properties,
)
from tasks.iceberg.warehouse import Warehouse, open_warehouse
from tasks.spec import JobSpec, Rotation
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    produce,
    run_until_committed,
    runner,
    unique,
    wait_for,
)

BASE = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)
COUNTRIES = ("de", "fr", "us")


def _record(i: int, **extra: Any) -> bytes:
    return json.dumps({"id": i, "ts": (BASE + dt.timedelta(minutes=7 * i)).isoformat(),
                       "country": COUNTRIES[i % 3], "amount": i * 0.25, **extra}).encode()


def _env(kafka: str, tmp: Path, catalog: CatalogSettings) -> TaskEnvironment:
    return dataclasses.replace(environment(kafka, tmp),
                               iceberg=IcebergSettings(catalogs={"test": catalog}))


def _job(topic: str, tmp: Path, *, records: int = 50, **source: Any) -> JobSpec:
    sink = {"type": "iceberg", "catalog": "test", "namespace": "exports",
            "table": unique("t").replace("-", "_"), "timestamp_fields": {"ts": "iso8601"},
            "partition_by": [{"field": "ts", "transform": "day"},
                             {"field": "country", "transform": "bucket", "buckets": 4}]}
    spec = job(topic, sink, transform={"parse": {"format": "json"}},
               rotation={"max_records": records},
               dead_letter={"type": "file", "directory": str(tmp / "dlq")})
    if source:
        spec = spec.model_copy(update={"source": spec.source.model_copy(update=source)})
    return spec


def _store(spec: JobSpec, catalog: CatalogSettings) -> Warehouse:
    table = open_catalog("test", catalog).load_table(
        (spec.sink.namespace, spec.sink.table))  # type: ignore[union-attr]
    return open_warehouse(table.location(), catalog)


def _reports(store: Warehouse) -> list[ChunkReport]:
    out = []
    for item in store.list(REPORTS_DIR):
        raw = store.read(item.key)
        assert raw is not None
        out.append(ChunkReport.from_json(raw))
    return sorted(out, key=lambda r: r.start)


def _chained(reports: list[ChunkReport], start: int, end: int) -> None:
    at = start
    for report in reports:
        assert report.start == at, [(r.start, r.end) for r in reports]
        at = report.end
    assert at == end, [(r.start, r.end) for r in reports]


def _ids(store: Warehouse, reports: list[ChunkReport]) -> list[int]:
    """Every record id in the reports' files, read back from the Parquet files."""
    ids: list[int] = []
    for report in reports:
        for f in report.files:
            key = store.key_of(f.path)
            assert key is not None and key.startswith(f"{DATA_DIR}/"), f.path
            data = store.read(key)
            assert data is not None and len(data) == f.size
            table = pq.read_table(io.BytesIO(data))
            assert table.num_rows == f.records
            ids.extend(table.column("id").to_pylist())
    return ids


@pytest.mark.parametrize("where", ["s3_catalog", "file_catalog"])
async def test_a_task_writes_claims_files_and_reports_that_chain(
        kafka: str, tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    catalog: CatalogSettings = request.getfixturevalue(where)
    topic = create_topic(kafka, unique("ice"))
    n = 230
    produce(kafka, topic, [_record(i) for i in range(n)])
    spec = _job(topic, tmp_path)
    await run_until_committed(runner(_env(kafka, tmp_path, catalog), spec), n)

    store = _store(spec, catalog)
    reports = _reports(store)
    _chained(reports, 0, n)
    claims = [item.key for item in store.list(CLAIMS_DIR)]
    assert len(claims) == len(reports)
    for report in reports:
        assert report.writer.endswith("@1")
        for f in report.files:
            # The file lies in its table partition's directory, with its values.
            day = dt.date(1970, 1, 1) + dt.timedelta(days=f.partition["ts_day"])
            assert f"/data/ts_day={day.isoformat()}/" in f.path, f.path
            assert f"country_bucket={f.partition['country_bucket']}/" in f.path
    ids = _ids(store, reports)
    assert sorted(ids) == list(range(n))   # every record once
    # The table exists with the job's spec and a name mapping.
    table = open_catalog("test", catalog).load_table(("exports", spec.sink.table))  # type: ignore[union-attr]
    assert [p.name for p in table.spec().fields] == ["ts_day", "country_bucket"]
    assert "schema.name-mapping.default" in table.properties
    assert str(table.schema().find_field("ts").field_type) == "timestamptz"


async def test_a_record_that_does_not_fit_is_a_dead_letter_and_its_chunk_is_written(
        kafka: str, tmp_path: Path, s3_catalog: CatalogSettings) -> None:
    topic = create_topic(kafka, unique("ice-dead"))
    # The first chunk (0-49) creates the table with id as a long; record 70 has a text id,
    # record 80 a new field.
    values = [_record(i) for i in range(100)]
    values[70] = json.dumps({"id": "abc", "ts": BASE.isoformat(), "country": "de"}).encode()
    values[80] = _record(80, coupon="X1")
    produce(kafka, topic, values)
    spec = _job(topic, tmp_path)
    await run_until_committed(runner(_env(kafka, tmp_path, s3_catalog), spec), 100)

    store = _store(spec, s3_catalog)
    reports = _reports(store)
    _chained(reports, 0, 100)
    assert sorted(_ids(store, reports)) == [i for i in range(100) if i != 70]
    dead = [json.loads(line) for f in (tmp_path / "dlq").rglob("*") if f.is_file()
            for line in f.read_text().splitlines() if line]
    assert [d["offset"] for d in dead] == [70], dead
    assert "field id: 'abc' is not a long (column id is long)" in dead[0]["reason"], dead
    # The new field is a column of its chunk's file (the leader adds it to the table).
    coupons: list[str] = []
    for report in reports:
        for f in report.files:
            data = store.read(store.key_of(f.path) or "")
            assert data is not None
            table = pq.read_table(io.BytesIO(data))
            if "coupon" in table.column_names:
                coupons.extend(v for v in table.column("coupon").to_pylist() if v)
    assert coupons == ["X1"]


async def test_two_owners_of_a_task_leave_one_report_per_chunk(
        kafka: str, tmp_path: Path, s3_catalog: CatalogSettings) -> None:
    """A zombie (chunks of 30) and its successor (chunks of 100) run the same task at once:
    whoever claims a chunk decides its bounds, the other re-cuts and completes it; one chain
    of reports, every record once in their files."""
    topic = create_topic(kafka, unique("ice-two"))
    n = 1000
    produce(kafka, topic, [_record(i) for i in range(n)])
    env = _env(kafka, tmp_path, s3_catalog)
    zombie_job = _job(topic, tmp_path, records=30)
    successor_job = zombie_job.model_copy(update={"rotation": Rotation(max_records=100)})
    zombie, successor = runner(env, zombie_job), runner(env, successor_job, generation=2)
    await asyncio.gather(zombie.start(), successor.start())
    try:
        await wait_for(lambda: min(zombie.stats().committed_offset,
                                   successor.stats().committed_offset) >= n - 100,
                       "both owners past the last full chunk", timeout=120)
    finally:
        await asyncio.gather(zombie.stop(drain=True), successor.stop(drain=True))
    top = max(zombie.stats().committed_offset, successor.stats().committed_offset)

    store = _store(zombie_job, s3_catalog)
    reports = _reports(store)
    _chained(reports, 0, top)
    assert len(store.list(CLAIMS_DIR)) == len(reports)
    ids = _ids(store, reports)
    assert sorted(ids) == list(range(top))   # once each: no chunk reported twice
    assert {r.writer.rsplit("@", 1)[1] for r in reports} <= {"1", "2"}


async def test_a_task_resumes_from_the_table_and_its_reports_not_from_kafka(
        kafka: str, tmp_path: Path, s3_catalog: CatalogSettings) -> None:
    """The table's last exportd commit says 150 (under a later snapshot that is not
    exportd's), the report [150, 200) waits for the next commit, and the consumer group's
    offsets are lost with the job starting at `latest` (250): the task must resume at 200,
    the end of the chain, or records 200-249 would never be exported."""
    topic = create_topic(kafka, unique("ice-resume"))
    produce(kafka, topic, [_record(i) for i in range(200)])
    env = _env(kafka, tmp_path, s3_catalog)
    spec = _job(topic, tmp_path)
    await run_until_committed(runner(env, spec), 200)
    store = _store(spec, s3_catalog)
    _chained(_reports(store), 0, 200)

    # The leader's commit of the first three chunks (reports deleted), then another writer's.
    table = open_catalog("test", s3_catalog).load_table(("exports", spec.sink.table))  # type: ignore[union-attr]
    with table.transaction() as tx, tx.update_snapshot(snapshot_properties=summary_properties(
            {(topic, 0): 150}, epoch=3, job=spec.id)).fast_append():
        pass
    table = table.refresh()
    with table.transaction() as tx, tx.update_snapshot(
            snapshot_properties={"writer": "someone else"}).fast_append():
        pass
    store.delete([r.key for r in _reports(store) if r.start < 150])

    produce(kafka, topic, [_record(i) for i in range(200, 250)])
    lost = spec.model_copy(update={"source": spec.source.model_copy(
        update={"consumer_group": unique("lost"), "start": "latest"})})
    successor = runner(env, lost, generation=2)
    await successor.start()
    try:
        await wait_for(lambda: successor.stats().records_total >= 50,
                       "records 200-249 exported", timeout=30)
    finally:
        await successor.stop(drain=True)
    assert successor.stats().committed_offset == 250

    reports = _reports(store)
    _chained(reports, 150, 250)
    assert sorted(_ids(store, reports)) == list(range(150, 250))


async def test_a_column_the_leader_adds_is_cast_once_the_task_rereads_the_schema(
        kafka: str, tmp_path: Path, file_catalog: CatalogSettings) -> None:
    """The leader evolves the table while the task runs: within a commit interval the task
    casts to the new column like the others (a value that does not fit is a dead letter)."""
    topic = create_topic(kafka, unique("ice-evolve"))
    produce(kafka, topic, [_record(i) for i in range(10)])
    spec = _job(topic, tmp_path, records=10)
    spec = spec.model_copy(update={"sink": spec.sink.model_copy(
        update={"commit_interval": 0.2})})
    r = runner(_env(kafka, tmp_path, file_catalog), spec)
    await r.start()
    try:
        await wait_for(lambda: r.stats().committed_offset >= 10, "the first chunk")
        table = open_catalog("test", file_catalog).load_table(("exports", spec.sink.table))  # type: ignore[union-attr]
        from pyiceberg.types import LongType
        with table.update_schema() as update:
            update.add_column("coupon", LongType())
        await asyncio.sleep(0.3)   # more than the commit interval: the next chunk re-reads
        produce(kafka, topic, [_record(10, coupon="X1")] + [_record(i, coupon=i)
                                                           for i in range(11, 20)])
        await wait_for(lambda: r.stats().committed_offset >= 20, "the second chunk")
    finally:
        await r.stop(drain=True)
    dead = [json.loads(line) for f in (tmp_path / "dlq").rglob("*") if f.is_file()
            for line in f.read_text().splitlines() if line]
    assert [d["offset"] for d in dead] == [10], dead
    assert "field coupon: 'X1' is not a long (column coupon is long)" in dead[0]["reason"]


async def test_a_table_with_another_partition_spec_fails_the_task(
        kafka: str, tmp_path: Path, file_catalog: CatalogSettings) -> None:
    import pyarrow as pa

    from tasks.errors import SinkError
    topic = create_topic(kafka, unique("ice-spec"))
    spec = _job(topic, tmp_path)
    catalog = open_catalog("test", file_catalog)
    catalog.create_namespace_if_not_exists("exports")
    catalog.create_table(("exports", spec.sink.table),  # type: ignore[union-attr]
                         schema=pa.schema([pa.field("id", pa.int64())]))
    r = runner(_env(kafka, tmp_path, file_catalog), spec)
    with pytest.raises(SinkError, match=r"has the partition spec \[unpartitioned\], the job "
                                        r"\[day\(ts\), bucket\[4\]\(country\)\]"):
        await r.start()
    assert r.stats().state == "failed"
