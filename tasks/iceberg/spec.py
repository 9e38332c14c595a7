"""The job spec of an Iceberg sink (`sink.type: iceberg`): which table, how it is partitioned,
how often the leader commits, and how the table is kept small. Pure pydantic, no pyiceberg.

A job names a catalog the operator configured on the servers and masters (`iceberg.catalogs`,
tasks/iceberg/catalogs.py), never a catalog URI or credentials of its own: a job author cannot
point the cluster's credentials at another database or bucket.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.settings import Duration

# Iceberg names of exportd's own: a namespace or table is a plain identifier.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A record field a partition is computed from: a top-level field name.
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartitionField(_Model):
    """One field of the table's partition spec, computed from a top-level record field."""

    field: str
    # identity: the value; day/hour: of a timestamp field (see `timestamp_fields`);
    # bucket: Iceberg's murmur3 bucket of the value into `buckets` buckets.
    transform: Literal["identity", "day", "hour", "bucket"] = "identity"
    buckets: int | None = Field(default=None, gt=0, le=65_536)

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        if not FIELD.match(value):
            raise ValueError("a partition field is a top-level record field name "
                             "([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @model_validator(mode="after")
    def _buckets(self) -> PartitionField:
        if (self.transform == "bucket") != (self.buckets is not None):
            raise ValueError("buckets is needed by transform bucket, and only by it")
        return self

    @property
    def name(self) -> str:
        """The partition field's name in the table (Iceberg's own convention)."""
        if self.transform == "identity":
            return self.field
        if self.transform == "bucket":
            return f"{self.field}_bucket"
        return f"{self.field}_{self.transform}"


class Compaction(_Model):
    """Rewriting a partition's small files into target-size files, by the leader, bounded per
    round, committed with the same fencing as appends."""

    enabled: bool = False
    # A partition with at least this many files smaller than target_file_bytes is compacted.
    min_files: int = Field(default=20, ge=2, le=100_000)
    target_file_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    # The most bytes read and rewritten in one commit round (one partition at least).
    max_bytes_per_round: int = Field(default=512 * 1024 * 1024, gt=0)


class SnapshotRetention(_Model):
    """Snapshot expiry by the leader, bounded per round."""

    # Snapshots older than this are expired (the current one and `keep_last` never are).
    max_age: Duration = 3600.0
    keep_last: int = Field(default=10, ge=1)


class IcebergSink(_Model):
    type: Literal["iceberg"] = "iceberg"
    # The name of a catalog in the servers' and masters' `iceberg.catalogs` settings.
    catalog: str = Field(min_length=1, max_length=63)
    namespace: str
    table: str
    # The table's partition spec when exportd creates it; a table that exists must have it.
    partition_by: list[PartitionField] = Field(default_factory=list, max_length=8)
    # Top-level fields written as Iceberg timestamptz columns, with how records hold them
    # (iso8601 strings, epoch_ms or epoch_s numbers). day/hour partitions need one.
    timestamp_fields: dict[str, Literal["iso8601", "epoch_ms", "epoch_s"]] = Field(
        default_factory=dict)
    # How often the leader commits all pending files of the table, in one transaction.
    commit_interval: Duration = Field(default=10.0, gt=0)
    compaction: Compaction = Compaction()
    snapshot_retention: SnapshotRetention = SnapshotRetention()
    # Files in the table's data directory that no snapshot or pending chunk references are
    # removed once older than this (written by an owner that was fenced before its chunk was
    # reported, or by a zombie); bounded per round.
    orphan_grace: Duration = Field(default=1800.0, gt=0)

    @field_validator("namespace", "table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("a namespace or table is 1-128 characters of [A-Za-z0-9_], "
                             "not starting with a digit")
        return value

    @field_validator("timestamp_fields")
    @classmethod
    def _timestamp_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not FIELD.match(name):
                raise ValueError(f"{name!r}: a timestamp field is a top-level record field name")
        return value

    @model_validator(mode="after")
    def _partitions(self) -> IcebergSink:
        names = [p.name for p in self.partition_by]
        if len(set(names)) != len(names):
            raise ValueError("partition_by names a field and transform twice")
        for part in self.partition_by:
            if part.transform in ("day", "hour") and part.field not in self.timestamp_fields:
                raise ValueError(f"partition {part.transform}({part.field}) needs "
                                 f"{part.field} in timestamp_fields")
        return self

    @property
    def identifier(self) -> tuple[str, str]:
        return (self.namespace, self.table)
