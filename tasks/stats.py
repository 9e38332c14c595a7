"""Per-task counters and the rates a server reports each heartbeat (records/s, bytes/s, CPU s/s),
and the task's progress as an on-call engineer needs it: lag, last-commit age, freshness, stalled.

CPU time is measured where the task's work runs (the consume thread, the transform thread or
worker process, the event loop's push step), so it is attributable to the task even when many
tasks share a process. Rates are over the interval since the previous report (at least 1 s); a
task that is not running or draining reports rates of 0, not its last ones.

Progress is measured from what is durable, not from what was read:
- lag = the partition's end as the broker reports it (high watermark) - the committed offset, so a
  task that reads but cannot deliver shows every record it has not exported; -1 while the source
  cannot reach its broker (`unreachable` says since when), never a stale 0;
- last-commit age = seconds since the last commit (or the start);
- freshness = age of the oldest record read but not yet committed (0 when none is held);
- stalled (`stall_reason`, pure): running, but nothing committed for longer than the rotation
  allows while there is work to commit. An idle partition at its high watermark is not stalled.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.runner import TaskState, TaskStats

MIN_INTERVAL = 1.0
# How long past its rotation interval a task may go without committing: the interval again, and
# at least this (a delivery's retries and a slow commit fit in it).
STALL_MARGIN_MIN = 10.0
# With no time limit on rotation a partial file may wait for data for ever; a task with records
# it has not even read yet and no commit for this long is stalled nevertheless.
STALL_NO_TIME_LIMIT = 300.0
# Read-but-uncommitted batches remembered for the freshness; beyond this, adjacent batches merge
# (keeping the older read time: freshness errs on the old side, memory stays bounded).
HELD_ENTRIES = 64
_LIVE = (TaskState.RUNNING, TaskState.DRAINING)


def stall_limit(rotation_s: float | None) -> float:
    """Seconds a running task with work may go without a commit before it counts as stalled."""
    if rotation_s is None:
        return STALL_NO_TIME_LIMIT
    return rotation_s + max(STALL_MARGIN_MIN, rotation_s)


def stall_reason(state: TaskState, *, since_commit: float, freshness: float, unread: int,
                 rotation_s: float | None, unreachable: str = "", last_error: str = "") -> str:
    """Why a task is stalled, or "" when it is not. Pure: the caller passes what it measured.

    `unread`: records at the broker the task has not read (high watermark - position; -1 unknown).
    A task whose source cannot reach its broker is stalled at once (the reason says since when).
    Otherwise only a running task that has not committed for longer than `stall_limit` and has
    work is stalled: records it read and holds longer than the limit (with a time-limited rotation
    they should have been in a file by now; without one, only while an error repeats), or records
    it has not read at all. Idle at the high watermark (nothing held, nothing unread) is healthy.
    """
    if state is not TaskState.RUNNING:
        return ""
    if unreachable:
        return f"source: {unreachable}"
    limit = stall_limit(rotation_s)
    if since_commit <= limit:
        return ""
    work: list[str] = []
    if freshness > limit and (rotation_s is not None or last_error):
        work.append(f"oldest record read {freshness:.0f}s ago is not committed")
    if unread > 0:
        work.append(f"{unread} records not read yet")
    if not work:
        return ""
    rotation = "no time limit" if rotation_s is None else f"rotation {rotation_s:g}s"
    reason = (f"no commit for {since_commit:.0f}s (limit {limit:.0f}s, {rotation}): "
              + "; ".join(work))
    return f"{reason}; last error: {last_error}" if last_error else reason


@dataclass(slots=True)
class TaskMeter:
    clock: Callable[[], float] = time.monotonic
    records_total: int = 0       # consumed
    bytes_total: int = 0         # consumed value bytes
    exported_total: int = 0      # delivered to the sink
    dead_letters_total: int = 0
    filtered_total: int = 0
    cpu_total: float = 0.0       # consume, transform, chunking
    sink_cpu: float = 0.0        # rendering and sending, as the sink's clock last said
    committed_offset: int = -1
    last_error: str = ""
    rotation_s: float | None = None   # the job's rotation.max_seconds (for stall_reason)
    high_watermark: int = -1     # the partition's end as the broker last reported it
    position: int = -1           # the next offset the source reads
    unreachable: str = ""        # the source cannot reach its broker (since when, why)
    _committed_at: float = 0.0
    _held: deque[tuple[int, float]] = field(default_factory=deque)  # (next offset, read at)
    _mark: tuple[float, int, int, float] = (0.0, 0, 0, 0.0)
    _rates: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        self._mark = (self.clock(), 0, 0, 0.0)
        self._committed_at = self.clock()

    @property
    def lag(self) -> int:
        """High watermark - committed offset; -1 when unknown or the broker is unreachable."""
        if self.unreachable or self.high_watermark < 0 or self.committed_offset < 0:
            return -1
        return max(self.high_watermark, self.position) - self.committed_offset

    def read(self, next_offset: int, high_watermark: int, got_records: bool,
             unreachable: str = "") -> None:
        """The source polled: where it is, the broker's end, and whether it can reach it."""
        self.unreachable = unreachable
        if high_watermark >= 0:
            self.high_watermark = high_watermark
        self.position = next_offset
        if got_records:
            now = self.clock()
            if len(self._held) >= HELD_ENTRIES:
                _, at = self._held.pop()
                self._held.append((next_offset, at))
            else:
                self._held.append((next_offset, now))

    def committed(self, offset: int, *, restart: bool = False) -> None:
        """Offsets below `offset` are committed (or, `restart`: the task reads on from there and
        drops what it held)."""
        self.committed_offset = offset
        self._committed_at = self.clock()
        if restart:
            self._held.clear()
        while self._held and self._held[0][0] <= offset:
            self._held.popleft()

    def freshness(self) -> float:
        return self.clock() - self._held[0][1] if self._held else 0.0

    def consumed(self, records: int, value_bytes: int, cpu: float) -> None:
        self.records_total += records
        self.bytes_total += value_bytes
        self.cpu_total += cpu

    def snapshot(self, state: TaskState) -> TaskStats:
        now = self.clock()
        t0, r0, b0, c0 = self._mark
        cpu = self.cpu_total + self.sink_cpu
        if now - t0 >= MIN_INTERVAL:
            span = now - t0
            self._rates = ((self.records_total - r0) / span, (self.bytes_total - b0) / span,
                           (cpu - c0) / span)
            self._mark = (now, self.records_total, self.bytes_total, cpu)
        rps, bps, cps = self._rates if state in _LIVE else (0.0, 0.0, 0.0)
        since_commit, freshness = now - self._committed_at, self.freshness()
        last_error = self.unreachable or self.last_error
        unread = self.high_watermark - self.position if self.position >= 0 else -1
        stalled = stall_reason(state, since_commit=since_commit, freshness=freshness,
                               unread=unread, rotation_s=self.rotation_s,
                               unreachable=self.unreachable, last_error=self.last_error)
        return TaskStats(state=state, records_per_s=rps, bytes_per_s=bps, cpu_seconds_per_s=cps,
                         consumer_lag=self.lag, committed_offset=self.committed_offset,
                         last_error=last_error, records_total=self.records_total,
                         dead_letters_total=self.dead_letters_total,
                         bytes_total=self.bytes_total, exported_total=self.exported_total,
                         last_commit_age_s=since_commit, freshness_s=freshness, stalled=stalled)
