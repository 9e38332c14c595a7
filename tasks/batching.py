"""Cutting the transformed stream into chunks (files, HTTP batches, Kafka batches). Pure.

A chunk covers a range of source offsets [start, end) and holds the encoded records of that
range that survived the transforms. Its `end` is what gets committed once the sink acknowledged
it; the next chunk starts there. Records and bytes limits are checked after each record, so where
a chunk ends depends only on the data: a task restarted from the committed offset cuts exactly
the same chunks again. Only `max_seconds` (and a drain) cut by wall-clock, and a full spill
budget (tasks/budget.py): a body whose write took the host's spill past it ends its chunk after
that batch. Names stay valid either way: they depend on a chunk's start offset only, and chained
sinks resolve differing ends (docs/architecture/pipeline.md, "Fencing where data lands").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from tasks.formats import Encoded, encoded_size
from tasks.spec import HttpSink, JobSpec
from tasks.spool import FileBody
from tasks.transforms.batch import Columns, TransformOutput


@dataclass(frozen=True, slots=True)
class Limits:
    max_records: int | None
    max_bytes: int | None
    max_seconds: float | None


def limits_for(job: JobSpec) -> Limits:
    """HTTP batches are also bounded by the sink's batch_records."""
    rot = job.rotation
    records = rot.max_records
    if isinstance(job.sink, HttpSink):
        records = min(records or job.sink.batch_records, job.sink.batch_records)
    return Limits(records, rot.max_bytes, rot.max_seconds)


def data_full(limits: Limits, records: int, raw_bytes: int) -> bool:
    return ((limits.max_records is not None and records >= limits.max_records)
            or (limits.max_bytes is not None and raw_bytes >= limits.max_bytes))


def time_due(limits: Limits, opened_at: float | None, now: float) -> bool:
    return (limits.max_seconds is not None and opened_at is not None
            and now - opened_at >= limits.max_seconds)


@dataclass(slots=True)
class Chunk:
    """A range of source offsets and its records: either as rows (HTTP, Kafka, Parquet), or, for
    NDJSON/CSV files, already rendered into `body` (tasks/spool.py) as the records arrived."""

    start_offset: int
    end_offset: int
    rows: Columns[Encoded] = field(default_factory=Columns)
    raw_bytes: int = 0
    records: int = 0
    first_timestamp_ms: int = 0
    body: FileBody | None = None

    @property
    def items(self) -> list[Encoded]:
        """The encoded records, in order (empty when they went into `body`)."""
        return self.rows.values

    def release(self) -> None:
        """Free the body (memory or temporary file) once the chunk is delivered."""
        if self.body is not None:
            self.body.close()


class Batcher:
    """Accumulates transformed batches; hands back chunks when a limit is reached. With a
    `body_factory`, each chunk's lines go straight into its file body instead of rows."""

    def __init__(self, limits: Limits, start_offset: int,
                 body_factory: Callable[[], FileBody] | None = None, *,
                 hold_empty: bool = False, cut_at: int | None = None) -> None:
        self.limits = limits
        self.body_factory = body_factory
        # A chunk another owner claimed (tasks/sinks/partitioned.py): the first chunk holds
        # exactly the offsets below `cut_at`, whatever the limits say, and closes there.
        self.cut_at = cut_at
        # Chained sinks (S3, file): a chunk closes only once it holds a record, so the chunk
        # that starts at an offset always holds the same first record, and so has the same name
        # (its {dt} comes from that record) whoever cuts it (tasks/sinks/base.py).
        self.hold_empty = hold_empty
        self.current = self._open(start_offset)
        self.opened_at: float | None = None

    def _open(self, start: int) -> Chunk:
        body = self.body_factory() if self.body_factory is not None else None
        return Chunk(start, start, body=body)

    def _close(self, end: int) -> Chunk:
        done = self.current
        done.end_offset = end
        if done.body is not None:
            done.body.finish()
        self.current = self._open(end)
        self.opened_at = None
        return done

    def add(self, out: TransformOutput, next_offset: int, now: float) -> list[Chunk]:
        """Append a batch; close a chunk right after the record that reaches a limit. Works on
        slices (the result equals checking after every record, without a Python step each)."""
        closed: list[Chunk] = []
        recs, limits = out.records, self.limits
        values, count = recs.values, len(recs)
        lines = bool(values) and isinstance(values[0], bytes)
        sizes: list[int] | None = None  # per-record sizes, only where a byte limit may cut
        total = (sum(map(len, values)) + count if lines
                 else sum(encoded_size(v) for v in values))
        pos = 0
        while pos < count:
            chunk = self.current
            if self.opened_at is None:
                self.opened_at = now
            take = count - pos
            if self.cut_at is not None:
                take = bisect_left(recs.offsets, self.cut_at, pos) - pos
                if take == 0:   # the next record is past the claimed end
                    closed.append(self._close(self.cut_at))
                    self.cut_at = None
                    continue
            elif limits.max_records is not None:
                take = min(take, limits.max_records - chunk.records)
            if (self.cut_at is None and limits.max_bytes is not None
                    and chunk.raw_bytes + total >= limits.max_bytes):
                if sizes is None:  # lines: each counts with its newline
                    sizes = ([len(v) + 1 for v in values] if lines
                             else [encoded_size(v) for v in values])
                running = list(accumulate(sizes[pos:pos + take], initial=chunk.raw_bytes))[1:]
                take = min(take, bisect_left(running, limits.max_bytes) + 1)
            take = max(take, 1)  # a chunk that is not full has room for one more
            end = pos + take
            taken = (total if take == count else
                     sum(sizes[pos:end]) if sizes is not None else
                     sum(map(len, values[pos:end])) + take if lines
                     else sum(encoded_size(v) for v in values[pos:end]))
            if chunk.records == 0:
                chunk.first_timestamp_ms = recs.timestamps[pos]
            if chunk.body is not None:
                chunk.body.add(values[pos:end], raw=out.raw)  # type: ignore[arg-type]
            else:
                chunk.rows.offsets.extend(recs.offsets[pos:end])
                chunk.rows.timestamps.extend(recs.timestamps[pos:end])
                chunk.rows.values.extend(values[pos:end])
            chunk.records += take
            chunk.raw_bytes += taken
            total -= taken
            pos = end
            if self.cut_at is not None:
                pass   # closes at cut_at only
            elif data_full(limits, chunk.records, chunk.raw_bytes):
                closed.append(self._close(recs.offsets[pos - 1] + 1))
            elif chunk.body is not None and chunk.body.pressed:   # the spill budget is full
                chunk.body.cut_early()
                closed.append(self._close(recs.offsets[pos - 1] + 1))
        chunk = self.current
        if self.cut_at is not None and next_offset >= self.cut_at:
            closed.append(self._close(self.cut_at))   # the claimed end, read past
            self.cut_at = None
            chunk = self.current
        if next_offset > chunk.end_offset:
            chunk.end_offset = next_offset
            if self.opened_at is None:
                self.opened_at = now
        return closed

    def due(self, now: float) -> bool:
        # A claimed chunk closes at its claimed end only.
        return self.cut_at is None and time_due(self.limits, self.opened_at, now)

    def flush(self) -> Chunk | None:
        """Close the current chunk whatever its size (time limit, drain); None if it is empty
        and covers no offsets, or holds no record and `hold_empty`."""
        if self.current.end_offset == self.current.start_offset:
            return None
        if self.hold_empty and self.current.records == 0:
            return None
        if self.cut_at is not None:   # not up to the claimed end yet: the next owner redoes it
            return None
        return self._close(self.current.end_offset)
