"""One bounded maintenance round on an Iceberg table: compaction, snapshot expiry, orphan
clean-up. Blocking; the leader's committer (master/iceberg/committer.py) calls `run_round` once
per commit round, AFTER its append commit, in the same thread and under the same fence.

The decisions are pure (master/iceberg/selection.py); this module reads the table's manifests
and the warehouse listing, and carries them out, in this order:

1. **Compaction** (`sink.compaction.enabled`): `pick_compactions` over the current snapshot's
   live data files (of the current spec; a snapshot with delete files is not compacted). The
   picked files are read one at a time through pyiceberg's own reader (the name mapping fills a
   column a file predates with nulls and promotes types, exactly as a reader sees the rows) and
   rewritten as target-size Parquet files (zstd, no field ids, like the tasks' files),
   create-only at `data/<partition path>/compacted-<uuid>.parquet`. ONE overwrite snapshot
   deletes the old DataFiles and adds the new ones, with the committer's `snapshot_properties`
   (the offsets summary every exportd snapshot carries). Memory: one output file's bytes plus
   one input file's rows.
2. **Snapshot expiry**: `expirable` (older than `snapshot_retention.max_age`, never the current
   snapshot, the `keep_last` newest, branch/tag heads or the newest exportd snapshots whose
   offsets and epoch the committer reads), at most MAX_EXPIRE_PER_ROUND, through pyiceberg's
   ExpireSnapshots.
3. **Orphan clean-up**: `orphan_files` — files below `data/` no live snapshot reads (a live
   entry of any of its manifests, after the expiry), not in `pending_data_uris` nor named by a
   report that exists, older than `sink.orphan_grace` — and `stale_claims`; at most
   MAX_DELETES_PER_ROUND keys of each. Metadata is never deleted.

Every commit is fenced twice: `fence_check()` right before it (it raises when this leader must
not commit: that exception propagates out of `run_round`), and the catalog's compare-and-swap
on the branch head the round planned on (`AssertRefSnapshotId`), with pyiceberg's automatic
commit retries switched off for this round's commits: a conflict means someone else committed,
so the round gives up (a retry would re-parent our snapshot, and its offsets summary, onto a
newer one); the next round plans again. Any other failure of a part is logged and recorded in
the report, and the next part still runs.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from master.iceberg import selection
from master.iceberg.selection import CompactionPick, FileFacts, SnapshotAge
from tasks.iceberg.layout import CLAIMS_DIR, DATA_DIR, EPOCH_PROPERTY, REPORTS_DIR
from tasks.iceberg.spec import IcebergSink
from tasks.iceberg.tables import without_retries
from tasks.iceberg.warehouse import Warehouse
from tasks.logs import get_logger

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile, ManifestFile
    from pyiceberg.table import Table

log = get_logger(__name__)

MAX_EXPIRE_PER_ROUND = 100          # snapshots expired in one round
MAX_DELETES_PER_ROUND = 1_000       # orphan data files (and, separately, claims) per round
MAX_MANIFESTS_READ = 20_000         # manifests a part may read in one round
MAX_LISTED = 100_000                # objects listed below data/ (and claims) in one round
BATCH_BYTES = 32 * 1024 * 1024      # rows gathered before a row group is written
_CACHE_ROWS = 500_000               # manifest entries cached across rounds (manifests never change)


@dataclass(frozen=True)
class MaintenanceReport:
    """What one round did, for the committer's visibility (log, status, metrics)."""

    compacted_partitions: int = 0
    files_compacted_in: int = 0       # data files replaced
    files_compacted_out: int = 0      # target-size files that replaced them
    bytes_rewritten: int = 0          # input bytes read and rewritten
    compaction_snapshot_id: int | None = None
    snapshots_expired: int = 0
    orphans_deleted: int = 0
    claims_deleted: int = 0
    errors: tuple[str, ...] = ()      # "part: why", one per failed part


class _Fenced(Exception):
    """Carries the exception fence_check raised, so no part's error handling swallows it."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


@dataclass
class _Tally:
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def run_round(table: Table, warehouse: Warehouse, sink: IcebergSink,
              snapshot_properties: dict[str, str], pending_data_uris: Collection[str],
              fence_check: Callable[[], None], now: float | None = None) -> MaintenanceReport:
    """Compaction, expiry, orphan clean-up, each bounded; never raises for a part's failure
    (it is in the report's `errors`), only what `fence_check` raised."""
    now = time.time() if now is None else now
    tally = _Tally()

    def fence() -> None:
        try:
            fence_check()
        except Exception as exc:
            raise _Fenced(exc) from exc

    parts: list[tuple[str, Callable[[Table], Table]]] = []
    if sink.compaction.enabled:
        parts.append(("compaction", lambda t: _compact(t, warehouse, sink, snapshot_properties,
                                                       fence, tally)))
    parts.append(("expiry", lambda t: _expire(t, sink, fence, now, tally)))
    parts.append(("orphans", lambda t: _clean_orphans(t, warehouse, sink, pending_data_uris,
                                                      now, tally)))
    try:
        for name, part in parts:
            try:
                table = part(table)
            except _Fenced:
                raise
            except Exception as exc:
                why = f"{name}: {type(exc).__name__}: {exc}"
                tally.errors.append(why)
                log.warning("iceberg_maintenance_failed", table=".".join(sink.identifier),
                            part=name, error=why)
    except _Fenced as fenced:
        log.info("iceberg_maintenance_fenced", table=".".join(sink.identifier),
                 reason=str(fenced.original))
        raise fenced.original from None
    report = MaintenanceReport(**tally.values, errors=tuple(tally.errors))
    if any(tally.values.values()):
        log.info("iceberg_maintenance", table=".".join(sink.identifier), **tally.values)
    return report


# -- commits ---------------------------------------------------------------------------------


def _conflicts() -> tuple[type[Exception], ...]:
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    return (CommitFailedException, ValidationException)


# -- manifests -------------------------------------------------------------------------------

# manifest path -> its entries (path, deleted, size, records, spec id, partition, content)
_Entry = tuple[str, bool, int, int, int, tuple[Any, ...], int]
_entries_cache: dict[str, tuple[_Entry, ...]] = {}


def _partition_tuple(record: Any) -> tuple[Any, ...]:
    return tuple(record[i] for i in range(len(record)))


def _entries(table: Table, manifest: ManifestFile) -> tuple[_Entry, ...]:
    from pyiceberg.manifest import ManifestEntryStatus
    cached = _entries_cache.get(manifest.manifest_path)
    if cached is None:
        cached = tuple(
            (e.data_file.file_path, e.status == ManifestEntryStatus.DELETED,
             e.data_file.file_size_in_bytes, e.data_file.record_count, e.data_file.spec_id,
             _partition_tuple(e.data_file.partition), int(e.data_file.content))
            for e in manifest.fetch_manifest_entry(table.io, discard_deleted=False))
        if sum(len(v) for v in _entries_cache.values()) + len(cached) > _CACHE_ROWS:
            _entries_cache.clear()
        _entries_cache[manifest.manifest_path] = cached
    return cached


def _manifests(table: Table, snapshot_ids: list[int]) -> list[ManifestFile]:
    """The distinct manifests of these snapshots; RuntimeError beyond MAX_MANIFESTS_READ."""
    seen: dict[str, ManifestFile] = {}
    for sid in snapshot_ids:
        snap = table.metadata.snapshot_by_id(sid)
        if snap is None:
            continue
        for manifest in snap.manifests(table.io):
            seen.setdefault(manifest.manifest_path, manifest)
            if len(seen) > MAX_MANIFESTS_READ:
                raise RuntimeError(f"more than {MAX_MANIFESTS_READ} manifests to read; "
                                   "skipped this round")
    return list(seen.values())


# -- 1. compaction ---------------------------------------------------------------------------


def _compact(table: Table, warehouse: Warehouse, sink: IcebergSink, props: dict[str, str],
             fence: Callable[[], None], tally: _Tally) -> Table:
    from pyiceberg.manifest import DataFileContent, ManifestContent
    snap = table.current_snapshot()
    if snap is None:
        return table
    manifests = _manifests(table, [snap.snapshot_id])
    if any(m.content != ManifestContent.DATA for m in manifests):
        return table          # delete files: rewriting data files alone would resurrect rows
    facts: list[FileFacts] = []
    where: dict[str, str] = {}
    for manifest in manifests:
        for path, deleted, size, records, spec_id, part, content in _entries(table, manifest):
            if deleted:
                continue
            if content != DataFileContent.DATA:
                return table
            facts.append(FileFacts(path, size, records, spec_id, part))
            where[path] = manifest.manifest_path
    c = sink.compaction
    picks = selection.pick_compactions(facts, spec_id=table.metadata.default_spec_id,
                                       min_files=c.min_files,
                                       target_file_bytes=c.target_file_bytes,
                                       max_bytes=c.max_bytes_per_round)
    if not picks:
        return table
    old = _data_files(table, {m.manifest_path: m for m in manifests}, picks, where)
    written: list[str] = []
    new: list[DataFile] = []
    try:
        for pick in picks:
            for key, data in _rewrite(table, pick, old, c.target_file_bytes):
                if not warehouse.put_once(key, data):
                    raise RuntimeError(f"{key} exists (a uuid collision?)")
                written.append(key)
                new.append(_data_file(table, warehouse.uri(key), data, pick.partition))
        tx = without_retries(table).transaction()
        if tx.table_metadata.name_mapping() is None:
            # our files carry no field ids: readers find their columns by name
            from pyiceberg.table import TableProperties
            mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
            tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})
        with tx.update_snapshot(snapshot_properties=dict(props)).overwrite() as overwrite:
            for pick in picks:
                for f in pick.files:
                    overwrite.delete_data_file(old[f.path])
            for data_file in new:
                overwrite.append_data_file(data_file)
        fence()
        table = tx.commit_transaction()
    except _conflicts() as exc:
        _forget(warehouse, written)
        tally.errors.append(f"compaction: the commit conflicted ({type(exc).__name__}: {exc});"
                            " planned again next round")
        log.info("iceberg_compaction_conflict", table=".".join(sink.identifier), error=str(exc))
        return table
    except BaseException:
        _forget(warehouse, written)   # nothing was committed (fenced, or a failure before it)
        raise
    current = table.current_snapshot()
    tally.values.update(
        compacted_partitions=len(picks), files_compacted_in=sum(len(p.files) for p in picks),
        files_compacted_out=len(new), bytes_rewritten=sum(p.bytes for p in picks),
        compaction_snapshot_id=current.snapshot_id if current is not None else None)
    return table


def _forget(warehouse: Warehouse, keys: list[str]) -> None:
    """Delete files written for a commit that did not happen (else the orphan clean-up will)."""
    if not keys:
        return
    try:
        warehouse.delete(keys)
    except Exception as exc:
        log.warning("iceberg_compaction_cleanup_failed", files=len(keys), error=str(exc))


def _data_files(table: Table, manifests: dict[str, ManifestFile], picks: list[CompactionPick],
                where: dict[str, str]) -> dict[str, DataFile]:
    """The DataFile objects (as the manifests hold them) of the picked files."""
    wanted = {f.path for p in picks for f in p.files}
    out: dict[str, DataFile] = {}
    for path in sorted({where[p] for p in wanted}):
        for entry in manifests[path].fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.data_file.file_path in wanted:
                out[entry.data_file.file_path] = entry.data_file
    missing = wanted - set(out)
    if missing:
        raise RuntimeError(f"{len(missing)} picked files not found in their manifests")
    return out


def _rewrite(table: Table, pick: CompactionPick, old: dict[str, DataFile],
             target: int) -> list[tuple[str, bytes]]:
    """The picked files' rows (as a reader sees them) as target-size Parquet files:
    (key, bytes) pairs, keys below the partition's data directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
    from pyiceberg.table import FileScanTask
    from pyiceberg.typedef import Record

    meta = table.metadata
    schema = meta.schema()
    arrow_schema = schema_to_pyarrow(schema, include_field_ids=False)
    path = meta.specs()[pick.spec_id].partition_to_path(Record(*pick.partition), schema)
    directory = f"{DATA_DIR}/{path}" if path else DATA_DIR
    scan = ArrowScan(meta, table.io, schema, AlwaysTrue())
    out: list[tuple[str, bytes]] = []
    buf = io.BytesIO()
    writer: pq.ParquetWriter | None = None
    held: list[pa.Table] = []
    held_bytes = 0

    def flush() -> None:
        nonlocal writer, held, held_bytes
        if not held:
            return
        if writer is None:
            writer = pq.ParquetWriter(buf, arrow_schema, compression="zstd")
        writer.write_table(pa.concat_tables(held))
        held, held_bytes = [], 0

    def close() -> None:
        nonlocal writer, buf
        flush()
        if writer is not None:
            writer.close()
            out.append((f"{directory}/compacted-{uuid.uuid4().hex}.parquet", buf.getvalue()))
        writer, buf = None, io.BytesIO()

    for f in pick.files:
        for batch in scan.to_record_batches([FileScanTask(old[f.path])]):
            rows = pa.Table.from_batches([batch]).cast(arrow_schema)
            held.append(rows)
            held_bytes += rows.nbytes
            if held_bytes >= BATCH_BYTES:
                flush()
                if buf.tell() >= target:
                    close()
    close()
    return out


def _data_file(table: Table, uri: str, data: bytes, partition: tuple[Any, ...]) -> DataFile:
    """A DataFile of a file this round wrote: statistics from its footer, the partition record
    of the files it replaces, the current spec (only its files are compacted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record
    meta = table.metadata
    schema = meta.schema()
    stats = data_file_statistics_from_parquet_metadata(
        parquet_metadata=pq.read_metadata(pa.BufferReader(data)),
        stats_columns=compute_statistics_plan(schema, meta.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema))
    return DataFile.from_args(
        content=DataFileContent.DATA, file_path=uri, file_format=FileFormat.PARQUET,
        partition=Record(*partition), file_size_in_bytes=len(data), sort_order_id=None,
        spec_id=meta.default_spec_id, equality_ids=None, key_metadata=None,
        **stats.to_serialized_dict())


# -- 2. snapshot expiry ----------------------------------------------------------------------


def _exportd_snapshots(table: Table) -> set[int]:
    """The snapshots a resuming task or the committer takes exportd's offsets from: the newest
    one recording them on the current line, and the newest of all by sequence number (what
    `rounds.table_facts` falls back to when the line is cut by expired parents)."""
    meta = table.metadata

    def exportd(snap: Any) -> bool:
        return snap.summary is not None and EPOCH_PROPERTY in snap.summary.additional_properties

    out: set[int] = set()
    ours = [s for s in meta.snapshots if exportd(s)]
    if ours:
        out.add(max(ours, key=lambda s: (s.sequence_number or 0, s.timestamp_ms)).snapshot_id)
    at = meta.current_snapshot_id
    for _ in range(len(meta.snapshots) + 1):
        snap = meta.snapshot_by_id(at) if at is not None else None
        if snap is None:
            break
        if exportd(snap):
            out.add(snap.snapshot_id)
            break
        at = snap.parent_snapshot_id
    return out


def _expire(table: Table, sink: IcebergSink, fence: Callable[[], None], now: float,
            tally: _Tally) -> Table:
    from pyiceberg.table.refs import MAIN_BRANCH
    from pyiceberg.table.update import AssertRefSnapshotId
    from pyiceberg.table.update.snapshot import ExpireSnapshots
    meta = table.metadata
    protected = {ref.snapshot_id for ref in meta.refs.values()}
    protected |= _exportd_snapshots(table)
    r = sink.snapshot_retention
    ages = [SnapshotAge(s.snapshot_id, s.timestamp_ms, s.sequence_number or 0)
            for s in meta.snapshots]
    ids = selection.expirable(ages,
                              current=meta.current_snapshot_id, protected=protected, now=now,
                              max_age_s=r.max_age, keep_last=r.keep_last,
                              limit=MAX_EXPIRE_PER_ROUND)
    if not ids:
        return table
    tx = without_retries(table).transaction()
    ExpireSnapshots(tx).by_ids(ids).commit()
    # Planned on this head: a commit by anyone since then makes the catalog refuse ours.
    head = AssertRefSnapshotId.model_validate({"snapshot-id": meta.current_snapshot_id,
                                               "ref": MAIN_BRANCH})
    tx._apply((), (head,))
    fence()
    try:
        table = tx.commit_transaction()
    except _conflicts() as exc:
        tally.errors.append(f"expiry: the commit conflicted ({exc}); planned again next round")
        return table
    tally.values["snapshots_expired"] = len(ids)
    return table


# -- 3. orphans ------------------------------------------------------------------------------


def _clean_orphans(table: Table, warehouse: Warehouse, sink: IcebergSink,
                   pending: Collection[str], now: float, tally: _Tally) -> Table:
    """Data files first (listed BEFORE the reports, so a chunk reported in between is seen),
    then claims; a truncated report listing deletes nothing (a report beyond it may exist)."""
    grace = sink.orphan_grace
    listed = [(item.key, item.modified) for item in warehouse.list(DATA_DIR, limit=MAX_LISTED)]
    claims = [(item.key, item.modified) for item in warehouse.list(CLAIMS_DIR, limit=MAX_LISTED)]
    if not any(now - modified > grace for _, modified in (*listed, *claims)):
        return table
    reports = {item.key for item in warehouse.list(REPORTS_DIR, limit=MAX_LISTED)}
    if len(reports) >= MAX_LISTED:
        raise RuntimeError(f"more than {MAX_LISTED} reports listed; nothing deleted this round")
    if any(now - modified > grace for _, modified in listed):
        manifests = _manifests(table, [s.snapshot_id for s in table.metadata.snapshots])
        referenced: set[str] = set()
        for manifest in manifests:
            for entry in _entries(table, manifest):
                if entry[1]:
                    continue    # a DELETED entry: this snapshot no longer reads the file
                key = warehouse.key_of(entry[0])
                if key is not None:
                    referenced.add(key)
        pending_keys = {k for k in (warehouse.key_of(u) for u in pending) if k is not None}
        doomed = selection.orphan_files(listed, referenced=referenced, pending=pending_keys,
                                        reports=reports, now=now, grace_s=grace,
                                        limit=MAX_DELETES_PER_ROUND)
        if doomed:
            warehouse.delete(doomed)
            tally.values["orphans_deleted"] = len(doomed)
            log.info("iceberg_orphans_deleted", table=".".join(sink.identifier),
                     files=len(doomed), first=doomed[0])
    if any(now - modified > grace for _, modified in claims):
        stale = selection.stale_claims(claims, reports=reports, now=now, grace_s=grace,
                                       limit=MAX_DELETES_PER_ROUND)
        if stale:
            warehouse.delete(stale)
            tally.values["claims_deleted"] = len(stale)
    return table
