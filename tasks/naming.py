"""Deterministic names of exported files and objects.

A file is named by the first Kafka offset it covers, so a task restarted from its committed
offset writes the same name again (and replaces what a crashed run may have left there):
`<prefix>/<path template>/<topic>+<partition>+<start offset, 20 digits>.<ext>`. The template may
use {topic}, {partition}, and {dt} (YYYY-MM-DD) / {hour} (HH) of the first record's time, UTC.
"""

from __future__ import annotations

import datetime as dt

from tasks.errors import ValidationError
from tasks.spec import Format

OFFSET_DIGITS = 20
_FIELDS = frozenset({"topic", "partition", "dt", "hour"})


def extension(fmt: Format) -> str:
    """`ndjson`, `csv.gz`, `ndjson.zst`, ...; Parquet and Avro compress inside the file."""
    if fmt.type in ("parquet", "avro"):
        return fmt.type
    suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[fmt.compression]
    return f"{fmt.type}{suffix}"


def render_path(template: str, *, topic: str, partition: int, first_timestamp_ms: int) -> str:
    """Fill a path template; an unknown field is a ValidationError naming it."""
    when = dt.datetime.fromtimestamp(max(first_timestamp_ms, 0) / 1000, tz=dt.UTC)
    values = {"topic": topic, "partition": str(partition),
              "dt": when.strftime("%Y-%m-%d"), "hour": when.strftime("%H")}
    try:
        return template.format_map(values).strip("/")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(f"path template {template!r} may use only {sorted(_FIELDS)}: {exc}",
                              field="sink.path") from exc


def file_name(topic: str, partition: int, start_offset: int, ext: str) -> str:
    return f"{topic}+{partition}+{start_offset:0{OFFSET_DIGITS}d}.{ext}"


def object_key(*, prefix: str, template: str, topic: str, partition: int, start_offset: int,
               first_timestamp_ms: int, ext: str) -> str:
    """The full key (or relative file path) of the file starting at `start_offset`."""
    parts = [prefix.strip("/"),
             render_path(template, topic=topic, partition=partition,
                         first_timestamp_ms=first_timestamp_ms),
             file_name(topic, partition, start_offset, ext)]
    return "/".join(p for p in parts if p)
