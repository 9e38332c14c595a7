"""The sink contract and the retry policy shared by sinks and the pipeline."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

from tasks.batching import Chunk
from tasks.transforms.batch import DeadRecord

T = TypeVar("T")


class CpuClock:
    """Thread CPU time of the work a sink runs in threads (rendering, compressing, sending), so
    a task's CPU seconds include it even though it ran outside the event loop."""

    def __init__(self) -> None:
        self.total = 0.0
        self._lock = threading.Lock()

    def run(self, func: Callable[..., T], *args: object) -> T:
        start = time.thread_time()
        try:
            return func(*args)
        finally:
            spent = time.thread_time() - start
            with self._lock:
                self.total += spent


END_OFFSET_META = "end-offset"
"""S3 user metadata (`x-amz-meta-end-offset`) of an object's end offset (exclusive)."""
END_OFFSET_XATTR = "user.exportd.end-offset"
"""The file sink's extended attribute holding a file's end offset (exclusive)."""


class KeyTaken(Exception):
    """A create-only write found its name taken: another owner of the task (a successor, or a
    zombie whose write landed late) already exported the chunk starting at this offset, up to
    `end_offset`. The records before it are exported; the writer continues from there."""

    def __init__(self, key: str, end_offset: int) -> None:
        super().__init__(f"{key} already exists, covering offsets up to {end_offset}")
        self.key, self.end_offset = key, end_offset


class Sink(Protocol):
    cpu: CpuClock
    # Create-only chained objects (S3, file): every chunk holds at least one record, so a chunk
    # that starts at an offset always has the same name (tasks/batching.py, `hold_empty`).
    chained: bool
    # The sink commits the source offsets itself, in its own transaction (Kafka): the pipeline
    # does not commit them after a write.
    commits_offsets: bool

    async def write(self, chunk: Chunk) -> list[DeadRecord]:
        """Deliver a non-empty chunk. Returns the records the destination rejected for good
        (they go to dead-letter); raises SinkError when the chunk was not delivered, KeyTaken
        when another owner's object already starts at the chunk's offset, Fenced when the
        worker's lease ran out before the write could start."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Screens(Protocol):
    """A sink that can tell, before a write, which records it can never take as they are (a
    Kafka sink: records larger than a message may be). The pipeline dead-letters them first, so
    their dead letters are written before any commit that covers their offsets, and the write
    skips them: one such record does not fail its chunk again and again."""

    def oversized(self, chunk: Chunk) -> list[DeadRecord]: ...


@runtime_checkable
class Resumes(Protocol):
    """A sink whose destination knows better than Kafka where the task goes on (an Iceberg
    table: the offset its last commit recorded, then the chunk reports written after it). The
    pipeline asks once, after the source opened at `kafka_start` (the committed offset or the
    job's start), and reads from the answer. Blocking: called in a thread."""

    def resume_offset(self, kafka_start: int) -> int: ...


def screened(sink: Sink, chunk: Chunk) -> list[DeadRecord]:
    """The records of `chunk` that `sink` will skip (none for sinks that do not screen)."""
    return sink.oversized(chunk) if isinstance(sink, Screens) else []


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 30.0,
                  rand: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return (rand or random).uniform(0, ceiling)


def rejected(chunk: Chunk, reason: str) -> list[DeadRecord]:
    """Every record of a chunk, dead-lettered with one reason (e.g. an HTTP 400)."""
    rows = chunk.rows
    return [DeadRecord(offset, ts, item if isinstance(item, bytes) else repr(item).encode(), reason)
            for offset, ts, item in zip(rows.offsets, rows.timestamps, rows.values, strict=True)]
