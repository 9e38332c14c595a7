"""Iceberg table sink, the task side: each chunk becomes Parquet data files in the table's
location and a chunk report; the leader commits them (tasks/iceberg/layout.py, master/iceberg/).

For a chunk [start, end), in a thread (blocking I/O):

1. The table is loaded (its schema at most once per commit interval) or, when missing, created
   from the chunk's records (tasks/iceberg/tables.py).
2. The records are conformed to the table's schema (tasks/iceberg/records.py): cast to their
   columns, timestamp fields parsed, new fields kept as new columns of the file; a record that
   does not fit is a dead letter with the reason (returned; the rest is written).
3. The chunk is claimed create-only at `claim_key` with its end offset (JSON) as the body, as
   the partitioned file sinks do (tasks/sinks/partitioned.py): a claim taken with another end
   raises ChunkClaimed (the pipeline re-reads the chunk and cuts it at that end); with ours, the
   same chunk's files are completed.
4. One Parquet file (zstd, no Iceberg field ids) per table partition, create-only at
   `data_key`; a key taken is the same chunk's file from an earlier try or owner: its own size and
   rows go into the report.
5. The chunk report, create-only at `report_key`; taken: done.

Every write checks the worker's lease first (the warehouse's `put_once(fence=)`). The pipeline
then commits the chunk's end to Kafka: only a resume hint. A task resumes from the table
(`resume_offset`, the pipeline's `Resumes` hook): the offset in the last exportd snapshot's
summary, then the chain of reports after it (tasks/iceberg/chain.py), else Kafka's offset.

Like S3 and file sinks the sink is `chained` (a chunk never closes without a record, so a
start offset always names the same chunk) and does not commit offsets itself.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import TYPE_CHECKING, Any

from tasks.batching import Chunk
from tasks.errors import RecordError, SinkError
from tasks.fence import WorkerFence
from tasks.formats import encode_ndjson, level_of
from tasks.iceberg.catalogs import CatalogSettings
from tasks.iceberg.chain import resume_offset
from tasks.iceberg.layout import (
    REPORTS_DIR,
    ChunkReport,
    DataFileReport,
    claim_key,
    data_key,
    parse_report_name,
    report_key,
)
from tasks.iceberg.records import arrow_table, conform, partitions, writable_table
from tasks.iceberg.spec import IcebergSink
from tasks.iceberg.tables import TableHandle, table_offsets
from tasks.iceberg.warehouse import Warehouse, open_warehouse
from tasks.logs import get_logger
from tasks.partitioning import record_of
from tasks.sinks.base import CpuClock
from tasks.sinks.partitioned import claim_conflict
from tasks.spec import Format
from tasks.transforms.batch import DeadRecord

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

log = get_logger(__name__)


def claim_body(end: int) -> bytes:
    """A claim's body: the chunk's end offset as JSON (a number)."""
    return json.dumps(end).encode()


def claim_end(body: bytes | None) -> int | None:
    """The end offset a claim holds (a number, or {"end": n}); None when unreadable."""
    if body is None:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = value.get("end")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raw(item: Any) -> bytes:
    """A dead record's bytes: its line as the file sinks write it (formats.encode_ndjson),
    repr for what JSON cannot hold."""
    try:
        return encode_ndjson(item)
    except RecordError:
        return repr(item).encode()


def parquet_bytes(table: pa.Table, compression: str, level: int | None) -> bytes:
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(table, out, compression=compression,
                   compression_level=level_of(compression, level) if compression != "none"
                   else None)
    return out.getvalue()


def parquet_rows(data: bytes) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(io.BytesIO(data)).metadata.num_rows)


class IcebergSinkWriter:
    chained = True
    commits_offsets = False

    def __init__(self, spec: IcebergSink, fmt: Format, settings: CatalogSettings, *,
                 topic: str, partition: int, writer: str = "",
                 fence: WorkerFence | None = None) -> None:
        self.spec, self.fmt, self.settings = spec, fmt, settings
        self.topic, self.partition, self.writer = topic, partition, writer
        self.fence = fence or WorkerFence.unbounded()
        self.table = TableHandle(spec, settings)
        self.cpu = CpuClock()
        self._warehouse: Warehouse | None = None

    def _store(self, table: Table) -> Warehouse:
        if self._warehouse is None or self._warehouse.location != table.location().rstrip("/"):
            self._warehouse = open_warehouse(table.location(), self.settings)
        return self._warehouse

    # -- resume -------------------------------------------------------------------------

    def resume_offset(self, kafka_start: int) -> int:
        """Where this partition's export goes on: the table's offset, then the reports that
        chain from it; `kafka_start` when the table does not exist or holds nothing of it."""
        table = self.table.load()
        if table is None:
            return kafka_start
        offsets = table_offsets(table) or {}
        at = offsets.get((self.topic, self.partition))
        store = self._store(table)
        reports = []
        for item in store.list(REPORTS_DIR):
            named = parse_report_name(item.key)
            if named is None or named[:2] != (self.topic, self.partition):
                continue
            if at is not None and named[2] < at:
                continue   # covered by the table already
            raw = store.read(item.key)
            if raw is None:
                continue   # deleted by the leader meanwhile (covered)
            try:
                reports.append(ChunkReport.from_json(raw))
            except ValueError as exc:
                log.warning("iceberg_report_unreadable", key=item.key, error=str(exc))
        resumed = resume_offset(at, reports, kafka_start)
        log.info("iceberg_resume", table=self.table.name, topic=self.topic,
                 partition=self.partition, table_offset=at, reports=len(reports),
                 kafka=kafka_start, resumed=resumed)
        return resumed

    # -- write --------------------------------------------------------------------------

    def _table_for(self, records: list[Any]) -> Table:
        table = self.table.load()
        if table is not None:
            return table
        from pyiceberg.schema import Schema

        first = conform(records, Schema(), self.spec.timestamp_fields)
        return self.table.create(arrow_table(first, Schema(), self.spec.timestamp_fields).schema,
                                 self.fence)

    def _claim(self, store: Warehouse, chunk: Chunk) -> None:
        key = claim_key(self.topic, self.partition, chunk.start_offset)
        if store.put_once(key, claim_body(chunk.end_offset), fence=self.fence):
            return
        winner = claim_end(store.read(key))
        if winner is None:
            raise SinkError(f"claim {store.uri(key)} holds no end offset", key=key,
                            retryable=True)
        conflict = claim_conflict(store.uri(key), chunk, winner)
        if conflict is not None:
            raise conflict

    def _write(self, chunk: Chunk) -> list[DeadRecord]:
        rows = chunk.rows
        records = [record_of(item) if isinstance(item, bytes) else item for item in rows.values]
        table = self._table_for(records)
        store = self._store(table)
        schema = table.schema()
        conformed = conform(records, schema, self.spec.timestamp_fields)
        whole = writable_table(conformed, schema, self.spec.timestamp_fields)
        dead = [DeadRecord(rows.offsets[i], rows.timestamps[i], _raw(rows.values[i]),
                           f"iceberg: {reason}") for i, reason in conformed.dead]
        self._claim(store, chunk)
        files: list[DataFileReport] = []
        if conformed.rows:
            for part in partitions(conformed.rows, schema, table.spec()):
                key = data_key(part.path, self.topic, self.partition, chunk.start_offset)
                data = parquet_bytes(whole.take(part.rows), self.fmt.compression,
                                     self.fmt.compression_level)
                count = len(part.rows)
                if not store.put_once(key, data, fence=self.fence):
                    # The same chunk's file from an earlier try or owner: report what it holds.
                    found = store.read(key)
                    if found is None:
                        raise SinkError(f"{store.uri(key)} vanished after it was found taken",
                                        key=key, retryable=True)
                    data, count = found, parquet_rows(found)
                files.append(DataFileReport(path=store.uri(key), partition=part.values,
                                            records=count, size=len(data)))
        report = ChunkReport(topic=self.topic, partition=self.partition,
                             start=chunk.start_offset, end=chunk.end_offset, files=tuple(files),
                             records=sum(f.records for f in files), written_at=time.time(),
                             writer=self.writer)
        if not store.put_once(report_key(self.topic, self.partition, chunk.start_offset),
                              report.to_json(), fence=self.fence):
            log.info("iceberg_report_exists", table=self.table.name, key=report.key)
        return dead

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        return await asyncio.to_thread(self.cpu.run, self._write, chunk)

    async def close(self) -> None:
        client = getattr(self._warehouse, "client", None)   # an S3 warehouse's boto3 client
        if client is not None:
            await asyncio.to_thread(client.close)
