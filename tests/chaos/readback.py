"""Reading back what each sink of the chaos test holds, as `audit.Record`s and `audit.Piece`s.

S3: every object under the job's prefix, straight from moto (not through the test's proxy), its
end offset from the `end-offset` user metadata. Files: every finished file below the job's
directory (names starting with '.' are temporary), its end offset from the xattr
`user.exportd.end-offset`. Kafka: the output topic read with isolation.level=read_committed to
its end. Object and file names end in `<topic>+<partition>+<start offset, 20 digits>.<ext>`.
Records are NDJSON lines carrying `id`, `_partition` and `_offset`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import boto3
from confluent_kafka import Consumer

from tests.chaos.audit import Piece, Record
from tests.chaos.producer import read_to_end, watermarks

NAME = re.compile(r"\+(\d+)\+(\d{20})\.[a-z.]+$")
END_XATTR = "user.exportd.end-offset"


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="dev", aws_secret_access_key="dev")


def name_start(name: str) -> tuple[int, int] | None:
    """(partition, start offset) from an object or file name; None for other names."""
    match = NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _records(body: bytes, where: str) -> list[Record]:
    out = []
    for line in body.splitlines():
        if line.strip():
            row = json.loads(line)
            out.append(Record(str(row["id"]), int(row["_partition"]), int(row["_offset"]),
                              where))
    return out


def s3_keys(endpoint: str, bucket: str, prefix: str) -> dict[str, str]:
    """Key -> ETag of every object under `prefix`."""
    client = s3_client(endpoint)
    keys: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            keys[obj["Key"]] = obj["ETag"]
    return keys


def read_s3(endpoint: str, bucket: str, prefix: str) -> tuple[list[Record], list[Piece]]:
    client = s3_client(endpoint)
    records: list[Record] = []
    pieces: list[Piece] = []
    for key in sorted(s3_keys(endpoint, bucket, prefix)):
        parsed = name_start(key)
        if parsed is None:
            continue
        got = client.get_object(Bucket=bucket, Key=key)
        end = got.get("Metadata", {}).get("end-offset")
        pieces.append(Piece(key, parsed[0], parsed[1], None if end is None else int(end)))
        records += _records(got["Body"].read(), key)
    return records, pieces


def read_files(directory: Path) -> tuple[list[Record], list[Piece]]:
    records: list[Record] = []
    pieces: list[Piece] = []
    if not directory.exists():
        return records, pieces
    for path in sorted(directory.rglob("*")):
        parsed = name_start(path.name)
        if path.name.startswith(".") or not path.is_file() or parsed is None:
            continue
        try:
            end: int | None = int(os.getxattr(path, END_XATTR))
        except OSError:
            end = None
        name = str(path.relative_to(directory))
        pieces.append(Piece(name, parsed[0], parsed[1], end))
        records += _records(path.read_bytes(), name)
    return records, pieces


def read_kafka(bootstrap: str, topic: str, partitions: int,
               timeout: float = 60.0) -> list[Record]:
    """The output topic as a read_committed consumer sees it, to its end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-audit-{topic}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        messages = read_to_end(consumer, watermarks(consumer, topic, partitions), timeout)
        records: list[Record] = []
        for msg in messages:
            records += _records(msg.value() or b"", f"{topic}/{msg.partition()}")
        return records
    finally:
        consumer.close()
