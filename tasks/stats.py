"""Per-task counters and the rates a server reports each heartbeat (records/s, bytes/s, CPU s/s).

CPU time is measured where the task's work runs (the consume thread, the transform thread or
worker process, the event loop's push step), so it is attributable to the task even when many
tasks share a process. Rates are over the interval since the previous report (at least 1 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tasks.runner import TaskState, TaskStats

MIN_INTERVAL = 1.0


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
    lag: int = -1
    last_error: str = ""
    _mark: tuple[float, int, int, float] = (0.0, 0, 0, 0.0)
    _rates: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        self._mark = (self.clock(), 0, 0, 0.0)

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
        rps, bps, cps = self._rates
        return TaskStats(state=state, records_per_s=rps, bytes_per_s=bps, cpu_seconds_per_s=cps,
                         consumer_lag=self.lag, committed_offset=self.committed_offset,
                         last_error=self.last_error, records_total=self.records_total,
                         dead_letters_total=self.dead_letters_total,
                         bytes_total=self.bytes_total, exported_total=self.exported_total)
