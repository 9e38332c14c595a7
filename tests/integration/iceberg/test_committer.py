"""The leader's commit rounds (master/iceberg/committer.py) against a real catalog (SQL on
SQLite) with its warehouse on moto's S3 or on files. The data files and chunk reports are
written here with pyarrow and the create-only store, at the layout's keys: storage objects as a
task leaves them, read back with pyiceberg scans."""

from __future__ import annotations

import io
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from master.iceberg.committer import RoundResult, TableCommitter
from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tasks.iceberg.layout import (
    REPORTS_DIR,
    ChunkReport,
    DataFileReport,
    claim_key,
    data_key,
    epoch_from_summary,
    offsets_from_summary,
    report_key,
)
from tasks.iceberg.spec import IcebergSink
from tasks.iceberg.warehouse import Warehouse, open_warehouse

TOPIC = "events"
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("kp", pa.int32())])


def _sink(**extra: Any) -> IcebergSink:
    return IcebergSink.model_validate({"catalog": "test", "namespace": "ns", "table": "t",
                                       "partition_by": [{"field": "kp"}],
                                       "commit_interval": "1s", **extra})


def make_table(settings: CatalogSettings) -> Table:
    """The table as a task creates it: schema from its first chunk, spec from the job."""
    catalog = open_catalog("test", settings)
    catalog.create_namespace_if_not_exists("ns")
    table = catalog.create_table(("ns", "t"), schema=SCHEMA)
    with table.update_spec() as spec:
        spec.add_field("kp", IdentityTransform(), "kp")
    return catalog.load_table(("ns", "t"))


def chunk(store: Warehouse, partition: int, start: int, end: int,
           rows: pa.Table | None = None, topic: str = TOPIC) -> ChunkReport:
    """Write one chunk's data file, claim and report, create-only, as a task does."""
    if rows is None:
        ids = list(range(partition * 1_000_000 + start, partition * 1_000_000 + end))
        rows = pa.table({"id": pa.array(ids, pa.int64()),
                         "name": pa.array([f"n{i}" for i in ids]),
                         "kp": pa.array([partition] * len(ids), pa.int32())})
    buf = io.BytesIO()
    pq.write_table(rows, buf, compression="zstd")
    key = data_key(f"kp={partition}", topic, partition, start)
    assert store.put_once(key, buf.getvalue())
    assert store.put_once(claim_key(topic, partition, start), str(end).encode())
    report = ChunkReport(topic, partition, start, end,
                         (DataFileReport(store.uri(key), {"kp": partition}, rows.num_rows,
                                         len(buf.getvalue())),),
                         records=rows.num_rows, written_at=time.time(), writer=f"p{partition}")
    assert store.put_once(report.key, report.to_json())
    return report


def _allow() -> str | None:
    return None


def _exportd_snapshots(table: Table) -> list[Any]:
    return [s for s in table.snapshots()
            if s.summary is not None and "exportd.epoch" in s.summary.additional_properties]


def _summary(table: Table) -> dict[str, str]:
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    return dict(snapshot.summary.additional_properties)


def _ids(table: Table) -> list[int]:
    return [int(v) for v in table.scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()]


def _ok(result: RoundResult) -> RoundResult:
    assert not result.error, result.error
    assert not result.refused, result.refused
    return result


def test_commit_refused_when_the_table_has_a_newer_epoch(s3_catalog: CatalogSettings) -> None:
    """A deposed leader (the table records a newer epoch) and one whose term is not confirmed
    commit nothing: no snapshot, the reports stay for the rightful leader."""
    table = make_table(s3_catalog)
    store = open_warehouse(table.location(), s3_catalog)
    chunk(store, 0, 0, 10)
    newer = TableCommitter("job", _sink(), s3_catalog, epoch=7)
    _ok(newer.round(_allow))
    chunk(store, 0, 10, 20)

    deposed = TableCommitter("job", _sink(), s3_catalog, epoch=5).round(_allow)
    assert "epoch 7" in deposed.refused and deposed.committed_reports == 0
    unconfirmed = TableCommitter("job", _sink(), s3_catalog, epoch=9).round(
        lambda: "the ZooKeeper session is suspended")
    assert unconfirmed.refused == "the ZooKeeper session is suspended"
    table = open_catalog("test", s3_catalog).load_table(("ns", "t"))
    assert len(_exportd_snapshots(table)) == 1
    assert sorted(_ids(table)) == list(range(10))
    assert [i.key for i in store.list(REPORTS_DIR)] == [report_key(TOPIC, 0, 10)]
    assert deposed.pending.reports == 1 and deposed.pending.records == 10

    # The rightful leader (epoch 7 or a later one) commits it.
    _ok(TableCommitter("job", _sink(), s3_catalog, epoch=8).round(_allow))
    table = open_catalog("test", s3_catalog).load_table(("ns", "t"))
    assert sorted(_ids(table)) == list(range(20))
    assert epoch_from_summary(_summary(table)) == 8


@pytest.mark.parametrize("which", ["s3_catalog", "file_catalog"])
def test_commit_rounds_twelve_partitions(which: str, request: pytest.FixtureRequest) -> None:
    """12 partitions x 3 chunks per round, 2 rounds: one snapshot per round, every record
    once, the summary's offsets, covered reports and claims deleted."""
    settings: CatalogSettings = request.getfixturevalue(which)
    table = make_table(settings)
    store = open_warehouse(table.location(), settings)
    committer = TableCommitter("job", _sink(), settings, epoch=3)
    expected: list[int] = []
    for rnd in range(2):
        for p in range(12):
            for c in range(3):
                start = (rnd * 3 + c) * 100
                chunk(store, p, start, start + 100)
                expected += range(p * 1_000_000 + start, p * 1_000_000 + start + 100)
        result = _ok(committer.round(_allow))
        assert result.committed_reports == 36 and result.committed_files == 36
        assert result.committed_records == 3600 and result.pending.reports == 0
        table = open_catalog("test", settings).load_table(("ns", "t"))
        assert len(_exportd_snapshots(table)) == rnd + 1
        offsets = offsets_from_summary(_summary(table))
        assert offsets == {(TOPIC, p): (rnd + 1) * 300 for p in range(12)}
        assert store.list(REPORTS_DIR) == []
        assert store.list("_exportd/claims") == []
    ids = _ids(table)
    assert len(ids) == len(set(ids)) == 7200
    assert sorted(ids) == sorted(expected)
    files = table.inspect.files()
    assert files.num_rows == 72
    assert sorted({row["kp"] for row in files["partition"].to_pylist()}) == list(range(12))
    # A round with nothing new commits nothing.
    assert _ok(committer.round(_allow)).committed_reports == 0
    assert len(_exportd_snapshots(open_catalog("test", settings).load_table(("ns", "t")))) == 2


def test_commit_a_new_field_becomes_an_optional_column(s3_catalog: CatalogSettings) -> None:
    table = make_table(s3_catalog)
    store = open_warehouse(table.location(), s3_catalog)
    committer = TableCommitter("job", _sink(), s3_catalog, epoch=1)
    chunk(store, 0, 0, 5)
    _ok(committer.round(_allow))
    wider = pa.table({"id": pa.array([100, 101], pa.int64()), "name": ["a", "b"],
                      "kp": pa.array([1, 1], pa.int32()), "country": ["fr", "de"]})
    chunk(store, 1, 0, 2, rows=wider)
    result = _ok(committer.round(_allow))
    assert result.committed_reports == 1
    table = open_catalog("test", s3_catalog).load_table(("ns", "t"))
    column = table.schema().find_field("country")
    assert not column.required
    mapping = table.metadata.name_mapping()
    assert mapping is not None and "country" in {f.names[0] for f in mapping}
    rows = table.scan().to_arrow().sort_by("id").to_pylist()
    assert [r["country"] for r in rows] == [None] * 5 + ["fr", "de"]


def test_commit_an_incompatible_file_stops_only_its_partition(s3_catalog: CatalogSettings,
                                                              ) -> None:
    table = make_table(s3_catalog)
    store = open_warehouse(table.location(), s3_catalog)
    committer = TableCommitter("job", _sink(), s3_catalog, epoch=1)
    for p in range(3):
        chunk(store, p, 0, 10)
    bad = pa.table({"id": pa.array(["x", "y"]), "name": ["a", "b"],
                    "kp": pa.array([0, 0], pa.int32())})
    chunk(store, 0, 10, 12, rows=bad)
    chunk(store, 0, 12, 20)     # after the bad one: waits behind it
    chunk(store, 1, 10, 20)
    result = _ok(committer.round(_allow))
    assert list(result.blocked) == [f"{TOPIC}/0"]
    assert "chunk 10-12" in result.blocked[f"{TOPIC}/0"]
    assert result.committed_reports == 4
    assert result.pending.reports == 2 and result.pending.records == 10
    table = open_catalog("test", s3_catalog).load_table(("ns", "t"))
    offsets = offsets_from_summary(_summary(table))
    assert offsets == {(TOPIC, 0): 10, (TOPIC, 1): 20, (TOPIC, 2): 10}
    assert len(_ids(table)) == 40
    assert table.schema().find_field("id").field_type.__class__.__name__ == "LongType"
    keys = {i.key for i in store.list(REPORTS_DIR)}
    assert keys == {report_key(TOPIC, 0, 10), report_key(TOPIC, 0, 12)}


def test_commit_leaves_an_unreadable_report_and_counts_it(file_catalog: CatalogSettings) -> None:
    table = make_table(file_catalog)
    store = open_warehouse(table.location(), file_catalog)
    committer = TableCommitter("job", _sink(), file_catalog, epoch=1)
    assert store.put_once(report_key(TOPIC, 5, 0), b"{not json")
    chunk(store, 0, 0, 10)
    result = _ok(committer.round(_allow))
    assert result.bad_reports == 1 and result.committed_reports == 1
    assert [i.key for i in store.list(REPORTS_DIR)] == [report_key(TOPIC, 5, 0)]
    assert _ok(committer.round(_allow)).bad_reports == 0     # counted once


def test_commit_nothing_before_a_task_creates_the_table(file_catalog: CatalogSettings) -> None:
    result = _ok(TableCommitter("job", _sink(), file_catalog, epoch=1).round(_allow))
    assert not result.exists and result.committed_reports == 0


def test_commit_an_older_epoch_never_commits_after_a_newer_one(
        s3_catalog: CatalogSettings) -> None:
    """Two committers of different epochs take turns on one table: the older is refused from
    the newer's first commit on, and every record is in the table once."""
    table = make_table(s3_catalog)
    store = open_warehouse(table.location(), s3_catalog)
    old = TableCommitter("job", _sink(), s3_catalog, epoch=1)
    new = TableCommitter("job", _sink(), s3_catalog, epoch=2)
    for start in range(0, 50, 10):
        chunk(store, 0, start, start + 10)
        if start % 20:
            assert "epoch 2" in old.round(_allow).refused
        else:
            _ok(new.round(_allow))
    assert sorted(_ids(open_catalog("test", s3_catalog).load_table(("ns", "t")))) == \
        list(range(50))


def test_commit_takes_narrower_types_and_required_new_fields(file_catalog: CatalogSettings,
                                                             ) -> None:
    """A file whose id is int32 (the table's is long) and whose new field is declared
    non-nullable: committed, the column added as optional, every row readable."""
    table = make_table(file_catalog)
    store = open_warehouse(table.location(), file_catalog)
    committer = TableCommitter("job", _sink(), file_catalog, epoch=1)
    chunk(store, 0, 0, 3)
    rows = pa.Table.from_arrays(
        [pa.array([7, 8], pa.int32()), pa.array(["a", "b"]), pa.array([0, 0], pa.int32()),
         pa.array([1.5, 2.5], pa.float64())],
        schema=pa.schema([("id", pa.int32()), ("name", pa.string()), ("kp", pa.int32()),
                          pa.field("score", pa.float64(), nullable=False)]))
    chunk(store, 0, 3, 5, rows=rows)
    result = _ok(committer.round(_allow))
    assert result.committed_reports == 2 and not result.blocked
    table = open_catalog("test", file_catalog).load_table(("ns", "t"))
    assert not table.schema().find_field("score").required
    assert str(table.schema().find_field("id").field_type) == "long"
    got = table.scan().to_arrow().sort_by("id").to_pylist()
    assert [(r["id"], r["score"]) for r in got] == [(0, None), (1, None), (2, None),
                                                     (7, 1.5), (8, 2.5)]


def test_commit_a_deposed_leaders_in_flight_commit_conflicts_and_is_not_retried(
        s3_catalog: CatalogSettings) -> None:
    """A new leader commits between the old leader's fence and its catalog commit: the old
    commit fails on the catalog's compare-and-swap and is NOT re-parented onto the new
    snapshot (pyiceberg's automatic retry would append the same chunks twice, under stale
    offsets); every record is in the table once."""
    table = make_table(s3_catalog)
    store = open_warehouse(table.location(), s3_catalog)
    for start in (0, 10):
        chunk(store, 0, start, start + 10)
    new = TableCommitter("job", _sink(), s3_catalog, epoch=2)
    calls = []

    def race() -> str | None:
        calls.append(1)
        if len(calls) == 2:          # after the old leader planned, before its commit
            _ok(new.round(_allow))
        return None

    old = TableCommitter("job", _sink(), s3_catalog, epoch=1).round(race)
    assert old.committed_reports == 0
    assert "epoch 2" in old.refused or "conflict" in old.error, old
    table = open_catalog("test", s3_catalog).load_table(("ns", "t"))
    assert sorted(_ids(table)) == list(range(20))
    assert len(_exportd_snapshots(table)) == 1
    assert epoch_from_summary(_summary(table)) == 2


def test_commit_round_runs_maintenance_after_its_append(file_catalog: CatalogSettings) -> None:
    """With compaction on, the round's maintenance compacts a partition's small files in a
    snapshot that carries the offsets; a reader sees the same rows."""
    table = make_table(file_catalog)
    store = open_warehouse(table.location(), file_catalog)
    sink = _sink(compaction={"enabled": True, "min_files": 2})
    committer = TableCommitter("job", sink, file_catalog, epoch=1)
    for start in range(0, 40, 10):
        chunk(store, 0, start, start + 10)
    result = _ok(committer.round(_allow))
    assert result.committed_reports == 4 and result.maintenance_errors == ()
    table = open_catalog("test", file_catalog).load_table(("ns", "t"))
    assert table.inspect.files().num_rows < 4
    assert sorted(_ids(table)) == list(range(40))
    assert offsets_from_summary(_summary(table)) == {(TOPIC, 0): 40}


def test_commit_manifests_stay_bounded_over_many_rounds(file_catalog: CatalogSettings) -> None:
    """A table committed every interval does not grow a manifest per commit for ever: with
    the property exportd sets on its tables, manifests merge once 100 pile up."""
    from tasks.iceberg.tables import TABLE_PROPERTIES

    table = make_table(file_catalog)
    with table.transaction() as tx:
        tx.set_properties(TABLE_PROPERTIES)
    store = open_warehouse(table.location(), file_catalog)
    committer = TableCommitter("job", _sink(), file_catalog, epoch=1)
    rounds = 110
    for rnd in range(rounds):
        chunk(store, 0, rnd * 10, rnd * 10 + 10)
        assert _ok(committer.round(_allow)).committed_reports == 1
    table = open_catalog("test", file_catalog).load_table(("ns", "t"))
    snapshot = table.current_snapshot()
    assert snapshot is not None
    assert len(snapshot.manifests(table.io)) < 100
    assert sorted(_ids(table)) == list(range(rounds * 10))
