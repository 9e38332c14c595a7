"""One maintenance round (master/iceberg/maintenance.py) against a real catalog (SQL on SQLite)
with its warehouse on moto's S3 or on files: compaction, snapshot expiry, orphan clean-up, and
the fence. Tables are filled with pyiceberg's own appends (one small file per partition per
append); rows are read back with pyiceberg scans."""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import StringType

from master.iceberg import maintenance
from master.iceberg.maintenance import MaintenanceReport, run_round
from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tasks.iceberg.layout import claim_key, report_key, summary_properties
from tasks.iceberg.spec import IcebergSink
from tasks.iceberg.warehouse import Warehouse, open_warehouse

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("kp", pa.int32())])
PROPS = summary_properties({("events", 0): 4242, ("events", 1): 17}, epoch=7, job="j1")
HOUR = 3600.0


def sink(**extra: Any) -> IcebergSink:
    return IcebergSink.model_validate({"catalog": "test", "namespace": "ns", "table": "t",
                                       "partition_by": [{"field": "kp"}], **extra})


def compacting(**compaction: Any) -> IcebergSink:
    return sink(compaction={"enabled": True, "min_files": 20, **compaction},
                snapshot_retention={"max_age": "1h", "keep_last": 1000})


def make_table(settings: CatalogSettings) -> Table:
    catalog = open_catalog("test", settings)
    catalog.create_namespace_if_not_exists("ns")
    table = catalog.create_table(("ns", "t"), schema=SCHEMA)
    with table.update_spec() as spec:
        spec.add_field("kp", IdentityTransform(), "kp")
    return catalog.load_table(("ns", "t"))


def reload(settings: CatalogSettings) -> Table:
    return open_catalog("test", settings).load_table(("ns", "t"))


def rows(start: int, count: int, kp: int, extra: bool = False) -> pa.Table:
    ids = list(range(start, start + count))
    cols: dict[str, Any] = {"id": pa.array(ids, pa.int64()),
                            "name": pa.array([f"n{i}" for i in ids]),
                            "kp": pa.array([kp] * count, pa.int32())}
    if extra:
        cols["extra"] = pa.array([f"x{i}" for i in ids])
    return pa.table(cols)


def fill(table: Table, appends: int, *, kps: tuple[int, ...] = (1, 2), per: int = 20,
         evolve_at: int | None = None, props: dict[str, str] | None = None) -> Table:
    """`appends` commits, each one small file per partition in `kps`; from `evolve_at` on the
    rows have a new column `extra` (the files before it lack it)."""
    for n in range(appends):
        if evolve_at is not None and n == evolve_at:
            with table.update_schema() as update:
                update.add_column("extra", StringType())
        chunk = pa.concat_tables([rows(n * 1000 + kp * 100, per, kp,
                                       extra=evolve_at is not None and n >= evolve_at)
                                  for kp in kps])
        table.append(chunk, snapshot_properties=props or {})
    return table


def live_files(table: Table) -> dict[str, list[str]]:
    """partition value -> the current snapshot's data file paths."""
    out: dict[str, list[str]] = {}
    for task in table.scan().plan_files():
        out.setdefault(str(task.file.partition[0]), []).append(task.file.file_path)
    return out


def content(table: Table) -> list[dict[str, Any]]:
    data = table.scan().to_arrow().sort_by("id")
    return data.to_pylist()   # type: ignore[no-any-return]


def no_fence() -> None:
    return None


class Deposed(Exception):
    pass


def deposed() -> None:
    raise Deposed("a newer term leads")


def _round(table: Table, store: Warehouse, spec: IcebergSink, *, pending: set[str] | None = None,
           fence: Any = no_fence, now: float | None = None) -> MaintenanceReport:
    return run_round(table, store, spec, dict(PROPS), pending or set(), fence, now=now)


# -- compaction ------------------------------------------------------------------------------

def test_compaction_rewrites_small_files_and_readers_see_the_same_rows(
        s3_catalog: CatalogSettings) -> None:
    table = fill(make_table(s3_catalog), 110, evolve_at=60)
    before = live_files(table)
    assert {k: len(v) for k, v in before.items()} == {"1": 110, "2": 110}
    expected = content(table)
    assert len(expected) == 110 * 2 * 20
    store = open_warehouse(table.location(), s3_catalog)

    report = _round(table, store, compacting())

    assert report.errors == ()
    assert (report.compacted_partitions, report.files_compacted_in,
            report.files_compacted_out) == (2, 220, 2)
    assert report.bytes_rewritten > 0
    after_table = reload(s3_catalog)
    after = live_files(after_table)
    assert {k: len(v) for k, v in after.items()} == {"1": 1, "2": 1}
    for kp, paths in after.items():
        key = store.key_of(paths[0])
        assert key is not None and key.startswith(f"data/kp={kp}/compacted-"), key
    got = content(after_table)
    assert len(got) == len(expected)
    assert len({r["id"] for r in got}) == len(expected)
    assert got == expected                 # old rows read null in `extra`, as before
    assert sum(r["extra"] is None for r in got) == 60 * 2 * 20
    snap = after_table.current_snapshot()
    assert snap is not None and snap.snapshot_id == report.compaction_snapshot_id
    assert snap.summary is not None
    summary = snap.summary.additional_properties
    assert {k: summary[k] for k in PROPS} == PROPS
    assert snap.summary.operation.value == "overwrite"
    # the new files are like the tasks' files: zstd, no Iceberg field ids
    with after_table.io.new_input(after["1"][0]).open() as stream:
        meta = pq.read_metadata(stream)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert all(field.metadata is None or b"PARQUET:field_id" not in field.metadata
               for field in meta.schema.to_arrow_schema())
    # and a second round finds nothing to do
    again = _round(after_table, store, compacting())
    assert (again.compacted_partitions, again.errors) == (0, ())


def test_a_round_is_bounded_by_its_byte_budget(s3_catalog: CatalogSettings) -> None:
    table = fill(make_table(s3_catalog), 30)
    expected = content(table)
    store = open_warehouse(table.location(), s3_catalog)
    report = _round(table, store, compacting(max_bytes_per_round=1))
    assert (report.compacted_partitions, report.files_compacted_in,
            report.files_compacted_out) == (1, 2, 1)
    after = reload(s3_catalog)
    assert sorted(len(v) for v in live_files(after).values()) == [29, 30]
    assert content(after) == expected


def test_fenced_compaction_commits_nothing(s3_catalog: CatalogSettings) -> None:
    table = fill(make_table(s3_catalog), 25)
    store = open_warehouse(table.location(), s3_catalog)
    head = table.metadata.current_snapshot_id
    with pytest.raises(Deposed):
        _round(table, store, compacting(), fence=deposed)
    after = reload(s3_catalog)
    assert after.metadata.current_snapshot_id == head
    assert {k: len(v) for k, v in live_files(after).items()} == {"1": 25, "2": 25}
    assert not [i for i in store.list("data") if "compacted-" in i.key]


def test_a_conflicting_commit_gives_up_the_round(s3_catalog: CatalogSettings) -> None:
    stale = fill(make_table(s3_catalog), 25)
    store = open_warehouse(stale.location(), s3_catalog)
    other = reload(s3_catalog)
    other.append(rows(900_000, 5, 1), snapshot_properties={"exportd.epoch": "8"})
    head = reload(s3_catalog).metadata.current_snapshot_id

    report = _round(stale, store, sink(compaction={"enabled": True, "min_files": 20},
                                       snapshot_retention={"max_age": "1s", "keep_last": 1}),
                    now=time.time() + HOUR)

    assert report.compacted_partitions == 0 and report.snapshots_expired == 0
    assert any(e.startswith("compaction: the commit conflicted") for e in report.errors)
    assert any(e.startswith("expiry: the commit conflicted") for e in report.errors)
    after = reload(s3_catalog)
    assert after.metadata.current_snapshot_id == head      # pyiceberg did not retry on top
    assert len(after.metadata.snapshots) == 26
    assert not [i for i in store.list("data") if "compacted-" in i.key]


# -- expiry ----------------------------------------------------------------------------------

def test_expiry_is_bounded_and_keeps_the_last_and_the_offsets(
        s3_catalog: CatalogSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    table = make_table(s3_catalog)
    table = fill(table, 1, props=dict(PROPS))       # the only snapshot with exportd's offsets
    table = fill(table, 14)
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    store = open_warehouse(table.location(), s3_catalog)
    spec = sink(snapshot_retention={"max_age": "1h", "keep_last": 3})
    monkeypatch.setattr(maintenance, "MAX_EXPIRE_PER_ROUND", 5)

    # nothing is old enough yet
    assert _round(table, store, spec).snapshots_expired == 0
    later = time.time() + 2 * HOUR
    first = _round(table, store, spec, now=later)
    assert (first.snapshots_expired, first.errors) == (5, ())
    table = reload(s3_catalog)
    assert [s.snapshot_id for s in table.metadata.snapshots] == [ids[0], *ids[6:]]
    second = _round(table, store, spec, now=later)
    third = _round(reload(s3_catalog), store, spec, now=later)
    assert (second.snapshots_expired, third.snapshots_expired) == (5, 1)
    table = reload(s3_catalog)
    # the newest exportd snapshot (its offsets) and the keep_last newest remain
    assert [s.snapshot_id for s in table.metadata.snapshots] == [ids[0], *ids[-3:]]
    assert table.metadata.current_snapshot_id == ids[-1]
    assert len(content(table)) == 15 * 2 * 20


# -- orphans ---------------------------------------------------------------------------------

def test_orphans_after_compaction_and_expiry_on_s3(s3_catalog: CatalogSettings) -> None:
    table = fill(make_table(s3_catalog), 25)
    store = open_warehouse(table.location(), s3_catalog)
    small = {p for paths in live_files(table).values() for p in paths}
    # a fenced owner's claim (no report) and a reported chunk's claim
    for key in (claim_key("events", 0, 0), claim_key("events", 0, 10),
                report_key("events", 0, 10)):
        assert store.put_once(key, b"{}")
    later = time.time() + 2 * HOUR
    keep_all = compacting(max_bytes_per_round=10**9)

    report = _round(table, store, keep_all, now=later)
    # the replaced files are old and not current, but a retained snapshot still reads them
    assert report.files_compacted_in == 50 and report.orphans_deleted == 0
    assert report.claims_deleted == 1
    keys = {i.key for i in store.list("_exportd")}
    assert claim_key("events", 0, 0) not in keys and claim_key("events", 0, 10) in keys
    assert all(store.read(store.key_of(p) or "") is not None for p in small)

    expiring = sink(snapshot_retention={"max_age": "1h", "keep_last": 1})
    report = _round(reload(s3_catalog), store, expiring, now=later)
    assert report.snapshots_expired == 25 and report.errors == ()
    # the expiry made them orphans in the same round
    assert report.orphans_deleted == 50
    assert all(store.read(store.key_of(p) or "") is None for p in small)
    table = reload(s3_catalog)
    assert len(content(table)) == 25 * 2 * 20
    assert all(store.read(store.key_of(p) or "") is not None
               for paths in live_files(table).values() for p in paths)


def test_orphan_decision_on_files(file_catalog: CatalogSettings,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    table = fill(make_table(file_catalog), 3)
    store = open_warehouse(table.location(), file_catalog)
    grace = 1800.0
    now = time.time()
    old = now - 2 * grace
    data = pq_bytes(rows(1, 3, 1))
    names = ["orphan", "pending", "young"] + [f"more{i}" for i in range(5)]
    for name in names:
        assert store.put_once(f"data/kp=1/{name}.parquet", data)
    root = store.root    # type: ignore[attr-defined]
    for path in (root / "data").rglob("*.parquet"):   # the table's own files are old too
        if path.name != "young.parquet":
            os.utime(path, (old, old))
    monkeypatch.setattr(maintenance, "MAX_DELETES_PER_ROUND", 3)
    pending = {store.uri("data/kp=1/pending.parquet")}
    spec = sink(orphan_grace="30m")

    report = _round(table, store, spec, pending=pending, now=now)
    assert report.orphans_deleted == 3          # bounded
    report = _round(table, store, spec, pending=pending, now=now)
    assert report.orphans_deleted == 3
    left = {i.key.rsplit("/", 1)[-1] for i in store.list("data/kp=1")}
    assert {"pending.parquet", "young.parquet"} <= left
    assert not {f"{n}.parquet" for n in names if n not in ("pending", "young")} & left
    assert len(content(reload(file_catalog))) == 3 * 2 * 20    # every live file kept


def pq_bytes(data: pa.Table) -> bytes:
    sink_ = pa.BufferOutputStream()
    pq.write_table(data, sink_, compression="zstd")
    return bytes(sink_.getvalue().to_pybytes())
