"""Directories from record content: which directory each record of a chunk goes to, for S3 and
file sinks whose `path` uses `{field:<expr>}` or that set `partitioning` (event time, lateness).

Pure functions. A record's directory depends only on the record and its Kafka timestamp, never on
the clock, so a chunk rewritten by another owner groups the same records the same way, into the
same keys (exactly-once: tasks/sinks/partitioned.py):

- `{field:customer.region}`: the value of that JMESPath (dotted names, indexes) in the exported
  record, as a path segment: strings as they are, other values as JSON; `/`, `\\`, control
  characters and a leading `.` are percent-encoded, so a value can neither add a level nor climb
  out (`..`); a missing value is `null`, an empty string `_empty_`.
- `{dt}` / `{hour}`: of the record's event time (`partitioning.time_field` in `time_format`, in
  `time_zone`), else of its Kafka timestamp.
- Late records: event time older than the Kafka timestamp minus `lateness` go below
  `late_prefix/`, then their own path.

A record whose event time is missing or does not parse is a RecordError (a dead letter).
"""

from __future__ import annotations

import datetime as dt
import string
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jmespath
import orjson

from tasks.errors import RecordError
from tasks.spec import Partitioning

FIELDS = frozenset({"topic", "partition", "dt", "hour", "field"})
_SAFE = "-_.~=+@,:;!$&'()*"   # kept as they are in a segment; everything else percent-encoded


def check_template(template: str) -> None:
    """ValueError naming what is wrong with a path template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"path {template!r} is not a valid template: {exc}") from exc
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS or conversion:
            raise ValueError(f"path {template!r}: {{{name}}} is not one of "
                             f"{{topic}}, {{partition}}, {{dt}}, {{hour}}, {{field:<expr>}}")
        if name == "field":
            if not spec:
                raise ValueError("path: {field:<expr>} needs an expression, e.g. "
                                 "{field:customer.region}")
            try:
                jmespath.compile(spec)
            except jmespath.exceptions.JMESPathError as exc:
                raise ValueError(f"path: {{field:{spec}}}: not a JMESPath expression: "
                                 f"{exc}") from exc
        elif spec:
            raise ValueError(f"path: {{{name}:{spec}}}: only {{field:...}} takes an expression")


def partitioned(template: str, partitioning: Partitioning | None) -> bool:
    """Whether records of one chunk may go to different directories."""
    return partitioning is not None or "{field:" in template


def segment(value: Any) -> str:
    """A record's value as one safe path segment."""
    if value is None:
        return "null"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    encoded = quote(text, safe=_SAFE)
    if not encoded:
        return "_empty_"
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def _epoch_ms(value: Any, time_format: str) -> int:
    if value is None:
        raise RecordError("the event time field is missing")
    if time_format == "epoch_ms":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"event time {value!r} is not epoch milliseconds")
        return int(value)
    if time_format == "epoch_s":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"event time {value!r} is not epoch seconds")
        return int(value * 1000)
    if not isinstance(value, str):
        raise RecordError(f"event time {value!r} is not a string in {time_format}")
    try:
        when = (dt.datetime.fromisoformat(value) if time_format == "iso8601"
                else dt.datetime.strptime(value, time_format))
    except ValueError as exc:
        raise RecordError(f"event time {value!r} does not parse as {time_format}: {exc}") \
            from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


class _Fields:
    """`{field:<expr>}` in str.format: the expression is the format spec."""

    def __init__(self, record: Any, compiled: dict[str, Any]) -> None:
        self.record, self.compiled = record, compiled

    def __format__(self, expr: str) -> str:
        found = self.compiled.get(expr)
        if found is None:
            found = self.compiled[expr] = jmespath.compile(expr)
        return segment(found.search(self.record))


@dataclass
class PathRenderer:
    """Each record's directory below the sink's prefix (no file name)."""

    template: str
    topic: str
    partition: int
    partitioning: Partitioning | None = None
    _compiled: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = self.partitioning
        self._zone = zoneinfo.ZoneInfo(spec.time_zone if spec else "UTC")
        self._time = jmespath.compile(spec.time_field) if spec and spec.time_field else None
        self._late_ms = (int(spec.lateness * 1000) if spec and spec.lateness is not None
                         else None)

    def path(self, record: Any, kafka_timestamp_ms: int) -> str:
        spec = self.partitioning
        event_ms = kafka_timestamp_ms
        if self._time is not None and spec is not None:
            event_ms = _epoch_ms(self._time.search(record), spec.time_format)
        when = dt.datetime.fromtimestamp(max(event_ms, 0) / 1000, tz=self._zone)
        rendered = self.template.format_map({
            "topic": self.topic, "partition": str(self.partition),
            "dt": when.strftime("%Y-%m-%d"), "hour": when.strftime("%H"),
            "field": _Fields(record, self._compiled)}).strip("/")
        if self._late_ms is not None and spec is not None \
                and event_ms < kafka_timestamp_ms - self._late_ms:
            return f"{spec.late_prefix}/{rendered}".rstrip("/")
        return rendered


def record_of(item: Any) -> Any:
    """The exported record behind an encoded item: a row as it is, an NDJSON line parsed."""
    if isinstance(item, bytes):
        try:
            return orjson.loads(item)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"cannot read the record back for its path: {exc}") from exc
    return item


def group(items: Sequence[Any], timestamps: Sequence[int],
          path_of: Callable[[Any, int], str]) -> tuple[dict[str, list[int]], dict[int, str]]:
    """Item indexes by directory (each list in offset order), and the indexes whose path could
    not be made, with the reason (dead letters)."""
    groups: dict[str, list[int]] = {}
    failed: dict[int, str] = {}
    for index, (item, ts) in enumerate(zip(items, timestamps, strict=True)):
        try:
            directory = path_of(record_of(item), ts)
        except RecordError as exc:
            failed[index] = f"partitioning: {exc}"
            continue
        groups.setdefault(directory, []).append(index)
    return groups, failed
