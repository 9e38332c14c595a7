"""One Iceberg job's commit round, blocking: the leader runs it in a thread
(master/iceberg/service.py), once per `commit_interval`, and only while it leads.

A round, in this order:

1. load the table (no table yet: no task has written, nothing to do);
2. the table's offsets and epoch from its snapshots (`rounds.table_facts`);
3. list the chunk reports below `_exportd/reports/` and parse them (reports are create-only,
   so a parsed one is cached; one that does not parse is logged, counted and left alone);
4. `chain.plan` them against the offsets, bounded to MAX_FILES_PER_ROUND data files;
5. FENCE (`rounds.fence`): our term must still be the master's confirmed leadership and no
   snapshot may record a newer epoch; otherwise nothing is committed;
6. read each appended file's Parquet footer: its schema is unioned into the table's (new
   fields become optional columns); a file that cannot be taken (an incompatible type, a bad
   partition value, a missing file) stops ITS partition's chain at that report, with the reason
   (`blocked`), and the other partitions go on (`rounds.cut`);
7. ONE transaction: the schema update (the name mapping follows it), a DataFile per file
   (statistics from the footer, partition record from the report's values in the spec's order),
   a fast append whose summary records every partition's offset, our epoch and the job; the
   fence is asked again right before the catalog commit; a conflict (CommitFailedException)
   reloads the table and plans again, at most COMMIT_ATTEMPTS times (pyiceberg's own retries
   are off: they would re-parent our append, offsets and all, onto the snapshot that
   conflicted — the chunks another leader just committed, twice);
8. delete the reports the table covers (the ones just appended included) and their claims,
   at most MAX_DELETES_PER_ROUND keys;
9. the maintenance round (master/iceberg/maintenance.py: compaction, expiry, orphans), once,
   under the same fence, its snapshots carrying the table's offsets.

What matters lives in the table (offsets, epoch); this object's memory (parsed reports, footers,
the catalog) is a cache a new leader rebuilds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from master.iceberg import rounds
from tasks.errors import ExportdError
from tasks.iceberg import chain
from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tasks.iceberg.layout import (
    REPORTS_DIR,
    ChunkReport,
    Offsets,
    claim_key,
    parse_report_name,
    summary_properties,
)
from tasks.iceberg.spec import IcebergSink
from tasks.iceberg.tables import without_retries
from tasks.iceberg.warehouse import Warehouse, open_warehouse
from tasks.logs import get_logger

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table

log = get_logger(__name__)

MAX_FILES_PER_ROUND = 5_000        # data files appended in one commit
MAX_REPORTS_LISTED = 100_000       # reports looked at in one round
MAX_DELETES_PER_ROUND = 4_000      # report and claim keys deleted after one commit
COMMIT_ATTEMPTS = 3                # a conflicting commit is planned again this often
_FOOTER_CACHE = 20_000

TermCheck = Callable[[], "str | None"]
"""The master's answer to 'may this term commit now?': None, or why not (thread-safe)."""


class Refused(Exception):
    """The fence said no right before the catalog commit."""


@dataclass
class RoundResult:
    exists: bool = False
    snapshot_id: int | None = None
    last_commit_unix: float | None = None
    committed_reports: int = 0
    committed_files: int = 0
    committed_records: int = 0
    pending: rounds.Pending = field(default_factory=rounds.Pending)
    pending_data_uris: frozenset[str] = frozenset()
    blocked: dict[str, str] = field(default_factory=dict)   # "topic/partition" -> why
    refused: str = ""        # the fence's reason: nothing was committed
    error: str = ""          # the round failed (catalog, storage, conflicts)
    bad_reports: int = 0     # reports found this round that do not parse
    deleted: int = 0
    maintenance_errors: tuple[str, ...] = ()   # parts of maintenance that failed (logged)


@dataclass
class _Prepared:
    plan: chain.ChainPlan
    schema: Schema | None                 # the unioned schema, None when unchanged
    footers: dict[str, Any]               # path -> pq.FileMetaData
    partitions: dict[str, tuple[Any, ...]]   # path -> partition record values
    blocked: dict[str, str]


def _tp(report: ChunkReport) -> str:
    return f"{report.topic}/{report.partition}"


def _new_fields_optional(arrow: Any, schema: Schema) -> Any:
    """A file's Arrow schema with its top-level fields the table lacks made nullable: a new
    field becomes an optional column (a required one could not be added to a table with
    rows)."""
    known = {f.name for f in schema.fields}
    if all(f.nullable or f.name in known for f in arrow):
        return arrow
    import pyarrow as pa
    return pa.schema([f if f.nullable or f.name in known else f.with_nullable(True)
                      for f in arrow], metadata=arrow.metadata)


class TableCommitter:
    """The commit rounds of one job's table, for one leadership epoch."""

    def __init__(self, job_id: str, sink: IcebergSink, catalog: CatalogSettings, epoch: int,
                 *, max_files: int = MAX_FILES_PER_ROUND,
                 max_deletes: int = MAX_DELETES_PER_ROUND) -> None:
        self.job_id = job_id
        self.sink = sink
        self.catalog_settings = catalog
        self.epoch = epoch
        self.max_files = max_files
        self.max_deletes = max_deletes
        self._catalog: Catalog | None = None
        self._warehouse: Warehouse | None = None
        self._reports: dict[str, ChunkReport] = {}
        self._bad: set[str] = set()
        self._footers: dict[str, Any] = {}

    # -- reading --------------------------------------------------------------------------------

    def _open(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.sink.catalog, self.catalog_settings)
        return self._catalog

    def _load(self) -> Table | None:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
        try:
            return self._open().load_table(self.sink.identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def _store(self, table: Table) -> Warehouse:
        location = table.location().rstrip("/")
        if self._warehouse is None or self._warehouse.location != location:
            self._warehouse = open_warehouse(location, self.catalog_settings)
        return self._warehouse

    def _read_reports(self, store: Warehouse) -> tuple[list[ChunkReport], int]:
        """Every report below `_exportd/reports/` (parsed ones from the cache), and how many
        unparsable ones were seen for the first time."""
        listed = {item.key for item in store.list(REPORTS_DIR, limit=MAX_REPORTS_LISTED)
                  if parse_report_name(item.key) is not None}
        for gone in [k for k in self._reports if k not in listed]:
            del self._reports[gone]
        self._bad &= listed
        new_bad = 0
        for key in sorted(listed - set(self._reports) - self._bad):
            raw = store.read(key)
            if raw is None:
                continue            # deleted since the listing
            try:
                report = ChunkReport.from_json(raw)
                if report.key != key:
                    raise ValueError(f"its content names {report.key}")
            except ValueError as exc:
                self._bad.add(key)
                new_bad += 1
                log.warning("iceberg_report_unreadable", job=self.job_id, key=key,
                            error=str(exc))
                continue
            self._reports[key] = report
        return list(self._reports.values()), new_bad

    def _footer(self, table: Table, path: str) -> Any:
        meta = self._footers.get(path)
        if meta is None:
            import pyarrow.parquet as pq
            with table.io.new_input(path).open() as stream:
                meta = pq.read_metadata(stream)
            if len(self._footers) >= _FOOTER_CACHE:
                self._footers.clear()
            self._footers[path] = meta
        return meta

    # -- one round ------------------------------------------------------------------------------

    def round(self, term_check: TermCheck, now: float | None = None) -> RoundResult:
        """Blocking. Never raises for the table's or storage's failures: they are the result's
        `error` (the caller counts them); a fence refusal is `refused`."""
        from pyiceberg.exceptions import CommitFailedException
        now = time.time() if now is None else now
        result = RoundResult()
        try:
            table = self._load()
            if table is None:
                return result
            result.exists = True
            store = self._store(table)
            reports, result.bad_reports = self._read_reports(store)
            committed: tuple[ChunkReport, ...] = ()
            plan = chain.ChainPlan()
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                facts = self._facts(table)
                plan = chain.plan(facts.offsets, reports)
                self._describe(result, facts, plan.append + plan.waiting)
                refusal = rounds.fence(self.epoch, facts.epoch, term_check())
                if refusal:
                    result.refused = refusal
                    return result
                if not plan.append:
                    break
                prepared = self._prepare(table, store, plan, facts.offsets)
                result.blocked = prepared.blocked
                plan = prepared.plan
                self._describe(result, facts, plan.waiting)
                if not plan.append:
                    break
                try:
                    table = self._commit(table, prepared, term_check)
                except CommitFailedException as exc:
                    log.info("iceberg_commit_conflict", job=self.job_id, attempt=attempt,
                             error=str(exc))
                    if attempt == COMMIT_ATTEMPTS:
                        self._describe(result, facts, plan.append + plan.waiting)
                        result.error = (f"the commit conflicted {attempt} times in a row "
                                        f"(last: {exc}); trying again next interval")
                        return result
                    table = self._load() or table
                    continue
                except Refused as exc:
                    result.refused = str(exc)
                    return result
                committed = plan.append
                self._describe(result, self._facts(table), plan.waiting)
                break
            result.committed_reports = len(committed)
            result.committed_files = sum(len(r.files) for r in committed)
            result.committed_records = sum(r.records for r in committed)
            if committed:
                log.info("iceberg_committed", job=self.job_id, reports=len(committed),
                         files=result.committed_files, records=result.committed_records,
                         snapshot=result.snapshot_id, epoch=self.epoch)
            result.deleted = self._clean(store, (*plan.covered, *committed))
            after = self._facts(table)
            self._maintain(table, store, after.offsets if after.exportd_snapshot_id else None,
                           result, term_check)
        except (ExportdError, OSError, ValueError, RuntimeError) as exc:
            result.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("iceberg_round_failed", job=self.job_id, error=result.error)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            log.warning("iceberg_round_failed", job=self.job_id, error=result.error)
        return result

    def _facts(self, table: Table) -> rounds.TableFacts:
        meta = table.metadata
        snaps = [rounds.SnapshotFacts(s.snapshot_id, s.parent_snapshot_id,
                                      s.sequence_number or 0, s.timestamp_ms,
                                      dict(s.summary.additional_properties)
                                      if s.summary is not None else {})
                 for s in meta.snapshots]
        return rounds.table_facts(snaps, meta.current_snapshot_id)

    @staticmethod
    def _describe(result: RoundResult, facts: rounds.TableFacts,
                  pending: tuple[ChunkReport, ...]) -> None:
        result.snapshot_id = facts.snapshot_id
        result.last_commit_unix = (facts.last_commit_ms / 1000.0
                                   if facts.last_commit_ms is not None else None)
        result.pending = rounds.pending(pending)
        result.pending_data_uris = frozenset(f.path for r in pending for f in r.files)

    def _prepare(self, table: Table, store: Warehouse, plan: chain.ChainPlan,
                 offsets: Offsets) -> _Prepared:
        """Footers, schema union and partition records of the files the plan appends; a
        partition's chain stops at the first report with a file that cannot be taken."""
        from pyiceberg.table.update.schema import UpdateSchema
        stops = rounds.bound(plan, self.max_files)
        meta = table.metadata
        schema = meta.schema()
        spec = meta.spec()
        fields = [(pf.name, pf.transform.result_type(schema.find_type(pf.source_id)))
                  for pf in spec.fields]
        merged: Schema = schema
        changed = False
        footers: dict[str, Any] = {}
        partitions: dict[str, tuple[Any, ...]] = {}
        blocked: dict[str, str] = {}
        for report in plan.append:
            tp = (report.topic, report.partition)
            if tp in stops and report.start >= stops[tp]:
                continue
            trial = merged
            try:
                found: dict[str, Any] = {}
                values: dict[str, tuple[Any, ...]] = {}
                for f in report.files:
                    if store.key_of(f.path) is None:
                        raise ValueError(f"data file {f.path} is not below the table location")
                    footer = self._footer(table, f.path)
                    arrow = _new_fields_optional(footer.schema.to_arrow_schema(), trial)
                    trial = UpdateSchema(table.transaction(), schema=trial) \
                        .union_by_name(arrow)._apply()
                    found[f.path] = footer
                    values[f.path] = rounds.partition_values(fields, f.partition)
            except Exception as exc:
                reason = (f"chunk {report.start}-{report.end} of {_tp(report)} "
                          f"({report.writer or 'writer unknown'}) cannot be committed: "
                          f"{type(exc).__name__}: {exc}")
                stops[tp] = report.start
                blocked[_tp(report)] = reason
                log.warning("iceberg_chain_blocked", job=self.job_id, partition=_tp(report),
                            start=report.start, reason=reason)
                continue
            if trial != merged:
                merged, changed = trial, True
            footers.update(found)
            partitions.update(values)
        return _Prepared(rounds.cut(plan, offsets, stops), merged if changed else None,
                         footers, partitions, blocked)

    def _commit(self, table: Table, prepared: _Prepared, term_check: TermCheck) -> Table:
        """ONE transaction: schema, name mapping, the fast append with the offsets; fenced."""
        from pyiceberg.io.pyarrow import (
            compute_statistics_plan,
            data_file_statistics_from_parquet_metadata,
            parquet_path_to_id_mapping,
        )
        from pyiceberg.table import TableProperties
        tx = without_retries(table).transaction()
        if prepared.schema is not None:
            with tx.update_schema() as update:
                update.union_by_name(prepared.schema)
        if tx.table_metadata.name_mapping() is None:
            mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
            tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})
        meta = tx.table_metadata
        schema = meta.schema()
        stats_plan = compute_statistics_plan(schema, meta.properties)
        columns = parquet_path_to_id_mapping(schema)
        files: list[DataFile] = []
        for report in prepared.plan.append:
            for f in report.files:
                files.append(self._data_file(f.path, f.size, prepared.footers[f.path],
                                             prepared.partitions[f.path], meta.default_spec_id,
                                             stats_plan, columns,
                                             data_file_statistics_from_parquet_metadata))
        props = summary_properties(prepared.plan.offsets, epoch=self.epoch, job=self.job_id)
        # merge_append: with the table's `commit.manifest-merge.enabled` (set on the tables
        # exportd creates) manifests are merged once 100 pile up, so a table committed every
        # 10 s does not grow a manifest per commit for ever; without it, a fast append.
        with tx.update_snapshot(snapshot_properties=props).merge_append() as append:
            for data_file in files:
                append.append_data_file(data_file)
        refusal = term_check()
        if refusal:
            raise Refused(refusal)
        return tx.commit_transaction()

    @staticmethod
    def _data_file(path: str, size: int, footer: Any, values: tuple[Any, ...], spec_id: int,
                   stats_plan: Any, columns: dict[str, int], statistics: Any) -> DataFile:
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
        from pyiceberg.typedef import Record
        stats = statistics(parquet_metadata=footer, stats_columns=stats_plan,
                           parquet_column_mapping=columns)
        return DataFile.from_args(
            content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET,
            partition=Record(*values), file_size_in_bytes=size, sort_order_id=None,
            spec_id=spec_id, equality_ids=None, key_metadata=None,
            **stats.to_serialized_dict())

    def _clean(self, store: Warehouse, done: tuple[ChunkReport, ...]) -> int:
        """Delete the reports the table covers and their claims, bounded; the rest next
        round (they are covered then too)."""
        keys: list[str] = []
        for report in done[: self.max_deletes // 2]:
            keys += [report.key, claim_key(report.topic, report.partition, report.start)]
        if not keys:
            return 0
        try:
            store.delete(keys)
        except ExportdError as exc:
            log.warning("iceberg_report_delete_failed", job=self.job_id, error=exc.message)
            return 0
        for report in done[: self.max_deletes // 2]:
            self._reports.pop(report.key, None)
            for f in report.files:
                self._footers.pop(f.path, None)
        return len(keys)

    def _maintain(self, table: Table, store: Warehouse, offsets: Offsets | None,
                  result: RoundResult, term_check: TermCheck) -> None:
        """Compaction, snapshot expiry and orphan clean-up (master/iceberg/maintenance.py),
        once per round, after the append, under the same fence; its snapshots carry the
        table's offsets. Not before exportd's first commit (`offsets` None)."""
        from master.iceberg import maintenance
        if offsets is None:
            return

        def check() -> None:
            refusal = term_check()
            if refusal:
                raise Refused(refusal)

        props = summary_properties(offsets, epoch=self.epoch, job=self.job_id)
        try:
            report = maintenance.run_round(table, store, self.sink, props,
                                           result.pending_data_uris, check)
        except Refused as exc:
            result.refused = str(exc)
            return
        result.maintenance_errors = report.errors
