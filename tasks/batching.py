"""Cutting the transformed stream into chunks (files, HTTP batches, Kafka batches). Pure.

A chunk covers a range of source offsets [start, end) and holds the encoded records of that
range that survived the transforms. Its `end` is what gets committed once the sink acknowledged
it; the next chunk starts there. Records and bytes limits are checked after each record, so where
a chunk ends depends only on the data: a task restarted from the committed offset cuts exactly
the same chunks again. Only `max_seconds` (and a drain) cut by wall-clock.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate

from tasks.formats import Encoded, encoded_size
from tasks.spec import HttpSink, JobSpec
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
    start_offset: int
    end_offset: int
    rows: Columns[Encoded] = field(default_factory=Columns)
    raw_bytes: int = 0

    @property
    def items(self) -> list[Encoded]:
        """The encoded records, in order."""
        return self.rows.values

    @property
    def first_timestamp_ms(self) -> int:
        return self.rows.timestamps[0] if self.rows.timestamps else 0

    @property
    def records(self) -> int:
        return len(self.rows)


class Batcher:
    """Accumulates transformed batches; hands back chunks when a limit is reached."""

    def __init__(self, limits: Limits, start_offset: int) -> None:
        self.limits = limits
        self.current = Chunk(start_offset, start_offset)
        self.opened_at: float | None = None

    def _close(self, end: int) -> Chunk:
        done = self.current
        done.end_offset = end
        self.current = Chunk(end, end)
        self.opened_at = None
        return done

    def add(self, out: TransformOutput, next_offset: int, now: float) -> list[Chunk]:
        """Append a batch; close a chunk right after the record that reaches a limit. Works on
        slices (the result equals checking after every record, without a Python step each)."""
        closed: list[Chunk] = []
        recs, limits = out.records, self.limits
        values, count = recs.values, len(recs)
        if values and isinstance(values[0], bytes):  # lines: each counts with its newline
            sizes = [len(v) + 1 for v in values]
        else:
            sizes = [encoded_size(v) for v in values]
        pos = 0
        while pos < count:
            chunk = self.current
            if self.opened_at is None:
                self.opened_at = now
            take = count - pos
            if limits.max_records is not None:
                take = min(take, limits.max_records - len(chunk.rows))
            if (limits.max_bytes is not None
                    and chunk.raw_bytes + sum(sizes[pos:pos + take]) >= limits.max_bytes):
                running = list(accumulate(sizes[pos:pos + take], initial=chunk.raw_bytes))[1:]
                take = min(take, bisect_left(running, limits.max_bytes) + 1)
            take = max(take, 1)  # a chunk that is not full has room for one more
            end = pos + take
            chunk.rows.offsets.extend(recs.offsets[pos:end])
            chunk.rows.timestamps.extend(recs.timestamps[pos:end])
            chunk.rows.values.extend(values[pos:end])
            chunk.raw_bytes += sum(sizes[pos:end])
            pos = end
            if data_full(limits, len(chunk.rows), chunk.raw_bytes):
                closed.append(self._close(recs.offsets[pos - 1] + 1))
        chunk = self.current
        if next_offset > chunk.end_offset:
            chunk.end_offset = next_offset
            if self.opened_at is None:
                self.opened_at = now
        return closed

    def due(self, now: float) -> bool:
        return time_due(self.limits, self.opened_at, now)

    def flush(self) -> Chunk | None:
        """Close the current chunk whatever its size (time limit, drain); None if it is empty
        and covers no offsets."""
        if self.current.end_offset == self.current.start_offset:
            return None
        return self._close(self.current.end_offset)
