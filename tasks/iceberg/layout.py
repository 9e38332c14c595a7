"""What tasks leave in a table's location for the leader to commit, and what a commit records.
Pure: names, JSON documents and snapshot-summary properties; no I/O.

The contract between the tasks (tasks/sinks/iceberg.py) and the leader's committer
(master/iceberg/):

1. A task cuts its partition's records into chunks [start, end) exactly as for files
   (tasks/batching.py) and claims each chunk create-only at `claim_key(...)` (its end offset in
   the body), as the partitioned file sinks do (tasks/sinks/partitioned.py): whoever creates the
   claim decides where the chunk ends; a taken claim with another end makes the task re-read
   and cut at that end.
2. It writes the chunk's data files, one per table partition, create-only, at
   `data_key(partition_path, topic, partition, start)` below the table's location.
3. Then the chunk's **report** at `report_key(...)`, create-only: a `ChunkReport` (JSON) naming
   the offsets it covers and every data file with its partition values, records and size. A
   report exists only once all its files do. A taken report is the same chunk's: done.
4. The task commits its Kafka offset to `end` (a resume hint only).
5. The leader, every commit interval, lists the reports, and for each Kafka partition appends
   the reports that continue the table's chain exactly (`start` == the table's offset for it;
   tasks/iceberg/chain.py) in ONE table transaction, recording every partition's new offset in
   the snapshot summary (`summary_properties`). Reports the table already covers are deleted.

A task resumes from the chain, never from Kafka alone: the table's offset for its partition,
then report after report while one starts where the previous ended (`chain.resume_offset`).
So any number of owners — a zombie whose write lands late included — leave one chain, and a
report that does not continue it is never committed (it becomes an orphan, cleaned up).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.naming import file_name

EXPORTD_DIR = "_exportd"
CLAIMS_DIR = f"{EXPORTD_DIR}/claims"
REPORTS_DIR = f"{EXPORTD_DIR}/reports"
DATA_DIR = "data"

# Snapshot summary properties of a commit by exportd. Topic names may contain dots, so the
# partition comes first: `exportd.offset.<partition>.<topic>` = the next offset to export.
OFFSET_PREFIX = "exportd.offset."
EPOCH_PROPERTY = "exportd.epoch"
JOB_PROPERTY = "exportd.job"

REPORT_VERSION = 1


def claim_key(topic: str, partition: int, start: int) -> str:
    return f"{CLAIMS_DIR}/{file_name(topic, partition, start, 'claim')}"


def report_key(topic: str, partition: int, start: int) -> str:
    return f"{REPORTS_DIR}/{file_name(topic, partition, start, 'json')}"


def data_key(partition_path: str, topic: str, partition: int, start: int) -> str:
    """A data file's key below the table location; `partition_path` is Iceberg's
    `name=value/...` path of its table partition ('' for an unpartitioned table)."""
    name = file_name(topic, partition, start, "parquet")
    return f"{DATA_DIR}/{partition_path}/{name}" if partition_path else f"{DATA_DIR}/{name}"


@dataclass(frozen=True)
class DataFileReport:
    """One Parquet data file of a chunk."""

    path: str                 # absolute URI (s3://bucket/…/data/…parquet or file:///…)
    partition: dict[str, Any]  # partition field name -> Iceberg partition value (JSON)
    records: int
    size: int                 # bytes

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "partition": self.partition, "records": self.records,
                "size": self.size}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataFileReport:
        return cls(path=str(raw["path"]), partition=dict(raw.get("partition") or {}),
                   records=int(raw["records"]), size=int(raw["size"]))


@dataclass(frozen=True)
class ChunkReport:
    """A chunk of one Kafka partition [start, end), written and ready to commit."""

    topic: str
    partition: int
    start: int
    end: int
    files: tuple[DataFileReport, ...]
    records: int               # records in the files (dead letters and filtered ones excluded)
    written_at: float          # epoch seconds, for visibility (pending age)
    writer: str = ""           # the task and generation that wrote it, for explain
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return report_key(self.topic, self.partition, self.start)

    def to_json(self) -> bytes:
        return json.dumps({
            "version": REPORT_VERSION, "topic": self.topic, "partition": self.partition,
            "start": self.start, "end": self.end, "records": self.records,
            "written_at": self.written_at, "writer": self.writer,
            "files": [f.to_dict() for f in self.files], "extra": self.extra,
        }, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ChunkReport:
        """ValueError when the document is not a report of a version this code reads."""
        try:
            doc = json.loads(raw)
            if doc.get("version") != REPORT_VERSION:
                raise ValueError(f"report version {doc.get('version')!r}")
            report = cls(topic=str(doc["topic"]), partition=int(doc["partition"]),
                         start=int(doc["start"]), end=int(doc["end"]),
                         files=tuple(DataFileReport.from_dict(f) for f in doc["files"]),
                         records=int(doc["records"]), written_at=float(doc["written_at"]),
                         writer=str(doc.get("writer", "")), extra=dict(doc.get("extra") or {}))
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a chunk report: {exc}") from exc
        if report.end <= report.start:
            raise ValueError(f"chunk report with end {report.end} <= start {report.start}")
        return report


Offsets = dict[tuple[str, int], int]
"""(topic, partition) -> the next offset to export: everything before it is in the table."""


def offset_property(topic: str, partition: int) -> str:
    return f"{OFFSET_PREFIX}{partition}.{topic}"


def summary_properties(offsets: Mapping[tuple[str, int], int], *, epoch: int,
                       job: str) -> dict[str, str]:
    """The snapshot summary properties of a commit: every partition's offset (all of them, not
    only those that moved, so the current snapshot alone tells a resuming task), the leader's
    epoch and the job."""
    props = {offset_property(t, p): str(o) for (t, p), o in sorted(offsets.items())}
    props[EPOCH_PROPERTY] = str(epoch)
    props[JOB_PROPERTY] = job
    return props


def offsets_from_summary(summary: Mapping[str, str]) -> Offsets | None:
    """The offsets a snapshot of exportd's records, or None when the snapshot is not one of
    exportd's commits (no epoch property: look at its parent)."""
    if EPOCH_PROPERTY not in summary:
        return None
    out: Offsets = {}
    for key, value in summary.items():
        if not key.startswith(OFFSET_PREFIX):
            continue
        partition, _, topic = key[len(OFFSET_PREFIX):].partition(".")
        if partition.isdigit() and topic and value.isdigit():
            out[(topic, int(partition))] = int(value)
    return out


def epoch_from_summary(summary: Mapping[str, str]) -> int | None:
    value = summary.get(EPOCH_PROPERTY)
    return int(value) if value is not None and value.isdigit() else None


def parse_report_name(name: str) -> tuple[str, int, int] | None:
    """(topic, partition, start) of a report's file name, None for anything else."""
    base = name.rsplit("/", 1)[-1]
    if not base.endswith(".json"):
        return None
    topic, sep, rest = base[:-len(".json")].rpartition("+")
    topic2, sep2, partition = topic.rpartition("+")
    if not (sep and sep2 and rest.isdigit() and partition.isdigit() and topic2):
        return None
    return topic2, int(partition), int(rest)
