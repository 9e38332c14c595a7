"""The transform of one batch: sample → parse → where → select → add fields → encode.

Records go through `fastjson` first where it applies (a `select` of top-level fields), the
general path otherwise.

`transform_batch(plan, rows)` is pure and picklable: a `Plan` is a few strings, rows are three
plain lists (offsets, timestamps, values: columns, so a passthrough touches no record one by
one), and the result holds encoded lines in the same layout. The compiled form of a
plan (parser, JMESPath expressions, encoder) is cached per process, so a worker pool compiles
each job once. A record that fails any step becomes a `DeadRecord` with its reason.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tasks.errors import RecordError
from tasks.formats import ROW_FORMATS, Encoded, make_encoder, wants_objects
from tasks.spec import Format, JobSpec, Transform
from tasks.transforms.fastjson import DROPPED, FALLBACK, compile_fast_line
from tasks.transforms.jmes import compile_expression, truthy
from tasks.transforms.parsers import make_parser
from tasks.transforms.schemas import SCHEMA_FORMATS, schema_parser

V = TypeVar("V")


@dataclass(slots=True)
class Columns(Generic[V]):
    """Records as parallel lists: offsets, timestamps (ms since the epoch, -1 if none), values."""

    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    values: list[V] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, timestamp: int, value: V) -> None:
        self.offsets.append(offset)
        self.timestamps.append(timestamp)
        self.values.append(value)


Rows = Columns[bytes | None]
"""Consumed records (a tombstone's value is None)."""

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a task's records; hashable and picklable (it crosses process pools)."""

    transform_json: str
    format_json: str
    topic: str
    partition: int
    # The server's egress.http_allow_networks: a schema registry's addresses are checked
    # against them (tasks/transforms/schemas.py), as an HTTP sink's are.
    allow_networks: tuple[str, ...] = ()

    @classmethod
    def of(cls, job: JobSpec, partition: int, *, allow_networks: tuple[str, ...] = (),
           topic: str | None = None) -> Plan:
        """`topic`: the task's; default the job's one `source.topic` (multi-topic jobs pass it)."""
        return cls(job.transform.model_dump_json(), job.format.model_dump_json(),
                   topic or job.source.topic, partition, allow_networks)


@dataclass(frozen=True, slots=True)
class DeadRecord:
    offset: int
    timestamp_ms: int
    value: bytes
    reason: str


@dataclass(slots=True)
class TransformOutput:
    records: Columns[Encoded] = field(default_factory=Columns)
    dead: list[DeadRecord] = field(default_factory=list)
    dropped: int = 0        # filtered out by `where` or not sampled
    in_bytes: int = 0       # bytes of the consumed values
    cpu_seconds: float = 0.0  # thread CPU time spent transforming (wherever it ran)
    raw: bool = False       # the lines are the consumed values themselves (a passthrough)


def sample_key(partition: int, offset: int) -> float:
    """A uniform number in [0, 1) fixed by (partition, offset): splitmix64, so sampling is the
    same every time the records are read (a rewrite after a crash samples identically)."""
    z = (offset ^ (partition << 48)) + 0x9E3779B97F4A7C15 & _MASK64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def iso_utc(timestamp_ms: int) -> str:
    when = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Compiled:
    """A plan compiled once: the per-record steps as callables."""

    def __init__(self, plan: Plan) -> None:
        spec = Transform.model_validate_json(plan.transform_json)
        fmt = Format.model_validate_json(plan.format_json)
        self.topic, self.partition = plan.topic, plan.partition
        adds = spec.add_fields
        self.static = dict(adds.static)
        self.add_source, self.add_ingest = adds.source, adds.ingest_time
        needs_fields = bool(spec.where or spec.select or self.static or self.add_source
                            or self.add_ingest)
        if spec.parse.format in SCHEMA_FORMATS:
            networks = [ipaddress.ip_network(net, strict=False) for net in plan.allow_networks]
            self.parse = schema_parser(spec.parse, networks,
                                       bytes_as_text=fmt.type not in ROW_FORMATS)
        else:
            self.parse = make_parser(spec.parse, objects=needs_fields or wants_objects(fmt))
        self.where = compile_expression(spec.where) if spec.where else None
        self.select = compile_expression(spec.select) if spec.select else None
        self.sample = spec.sample
        self.encode = make_encoder(fmt)
        # Records the fast path answers never reach the general one (see fastjson).
        self.fast = compile_fast_line(spec, fmt)
        # Raw values to NDJSON with nothing in between: lines pass through untouched.
        self.passthrough = (spec.parse.format == "raw" and not needs_fields
                            and spec.sample >= 1.0 and fmt.type == "ndjson")

    def _added(self, record: Any, offset: int, timestamp_ms: int, ingest: str) -> Any:
        if not isinstance(record, dict):
            record = {"value": record}
        record.update(self.static)
        if self.add_source:
            record.update(_topic=self.topic, _partition=self.partition, _offset=offset,
                          _timestamp=timestamp_ms)
        if self.add_ingest:
            record["_ingest_time"] = ingest
        return record

    def run(self, rows: Rows) -> TransformOutput:
        out = TransformOutput()
        values = rows.values
        if None not in values:
            out.in_bytes = sum(map(len, values))  # type: ignore[arg-type]
            if self.passthrough:  # the consumed lists are the output (newlines: render_file)
                out.records = rows  # type: ignore[assignment]  # no None: checked above
                out.raw = True
                return out
        else:
            out.in_bytes = sum(len(v) for v in values if v is not None)
        ingest = iso_utc(int(dt.datetime.now(dt.UTC).timestamp() * 1000))
        adds = bool(self.static) or self.add_source or self.add_ingest
        # Everything the loop touches is a local: it runs once per record, and attribute and
        # method lookups were a tenth of its cost.
        fast, parse, where, select, encode = (self.fast, self.parse, self.where, self.select,
                                              self.encode)
        sample, partition = self.sample, self.partition
        recs = out.records
        keep_offset, keep_ts, keep = (recs.offsets.append, recs.timestamps.append,
                                      recs.values.append)
        dead = out.dead.append
        dropped = 0
        for offset, ts, value in zip(rows.offsets, rows.timestamps, values, strict=True):
            if sample < 1.0 and sample_key(partition, offset) >= sample:
                dropped += 1
                continue
            if value is None:
                dead(DeadRecord(offset, ts, b"", "null value (tombstone)"))
                continue
            if fast is not None:  # records it hands back take the general path below
                line = fast(value)
                if line is DROPPED:
                    dropped += 1
                    continue
                if line is not FALLBACK:
                    keep_offset(offset)
                    keep_ts(ts)
                    keep(line)
                    continue
            try:
                record = parse(value)
                if where is not None and not truthy(where(record)):
                    dropped += 1
                    continue
                if select is not None:
                    record = select(record)
                if adds:
                    record = self._added(record, offset, ts, ingest)
                line = encode(record)
            except RecordError as exc:
                dead(DeadRecord(offset, ts, value, exc.message))
                continue
            except Exception as exc:  # a transform bug must not stop the task: dead-letter it
                dead(DeadRecord(offset, ts, value, f"{type(exc).__name__}: {exc}"))
                continue
            keep_offset(offset)
            keep_ts(ts)
            keep(line)
        out.dropped = dropped
        return out


@functools.lru_cache(maxsize=64)
def compiled(plan: Plan) -> Compiled:
    return Compiled(plan)


def transform_batch(plan: Plan, rows: Rows) -> TransformOutput:
    """Transform one batch; safe to run in a worker process (pure, picklable in and out)."""
    cpu0 = time.thread_time()
    out = compiled(plan).run(rows)
    out.cpu_seconds = time.thread_time() - cpu0
    return out
