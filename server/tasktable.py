"""The host's table of tasks: one entry per task id, with its runner and what the host did to it.

An entry's state as the host sees it (`state`) is the runner's own, except that a runner the host
has stopped counts as STOPPED whatever it says (so a drain that ended in an error is not stopped
again and again), and a runner that could not be built or started counts as FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field

from proto import exportd_pb2 as pb
from server import metrics
from server.reconcile import Running, failures_in_a_row
from server.wire import task_status
from tasks.runner import TaskRunner, TaskState, TaskStats, safe_stats


@dataclass(eq=False)
class TaskEntry:
    task_id: str
    job_id: str
    generation: int
    incarnation: int = 0        # of the job (server.reconcile.Version)
    runner: TaskRunner | None = None
    # Serialises start and stop of this runner: a fence waits for a start under way.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: int = 0            # starts/stops queued or running
    drain_op: asyncio.Task[None] | None = None   # a stop with drain under way
    stopped: bool = False       # the host has stopped the runner
    error: str = ""             # building, starting or stopping the runner failed
    failed_at: float | None = None
    final_acked: bool = False   # its STOPPED state reached the leader in an acked report
    # For the restart back-off: failed runs in a row before this one, and when this one began.
    failures_before: int = 0
    started_at: float | None = None
    # The error the previous run failed with: this run's last_error until it has one of its own,
    # so a task failing again and again never reports a blank error between its runs.
    previous_error: str = ""
    # For counters fed from the runner's running totals.
    records_seen: int = 0
    bytes_seen: int = 0
    dead_letters_seen: int = 0
    last_error_seen: str = ""

    def stats(self) -> TaskStats:
        if self.runner is None:
            if self.error:
                return TaskStats(TaskState.FAILED, last_error=self.error)
            return TaskStats(TaskState.STOPPED if self.stopped else TaskState.STARTING)
        stats = safe_stats(self.runner)
        if self.error and not stats.last_error:
            stats = dataclasses.replace(stats, last_error=self.error)
        if self.previous_error and not stats.last_error:
            stats = dataclasses.replace(stats, last_error=self.previous_error)
        if self.stopped:
            return _idle(dataclasses.replace(stats, state=TaskState.STOPPED))
        if self.error:
            return _idle(dataclasses.replace(stats, state=TaskState.FAILED))
        return stats

    def running_view(self, state: TaskState, now: float) -> Running:
        if state is TaskState.FAILED and self.failed_at is None:
            self.failed_at = now
        return Running(self.task_id, self.generation, state, busy=self.pending > 0,
                       failed_at=self.failed_at, final_acked=self.final_acked,
                       incarnation=self.incarnation, failures=self.failures())

    def failures(self) -> int:
        """Failed runs in a row ending with this one; 0 if this one did not fail."""
        if self.failed_at is None:
            return 0
        ran = None if self.started_at is None else self.failed_at - self.started_at
        return failures_in_a_row(self.failures_before, ran)


def _idle(stats: TaskStats) -> TaskStats:
    """A task that does not run moves nothing: no rates (not its last ones), not stalled."""
    return dataclasses.replace(stats, records_per_s=0.0, bytes_per_s=0.0, cpu_seconds_per_s=0.0,
                               stalled="", freshness_s=0.0)


def report_tasks(entries: dict[str, TaskEntry]) -> list[tuple[TaskEntry, pb.TaskStatus]]:
    """Every entry's status for a report; also feeds the per-task metrics."""
    out = []
    counts = dict.fromkeys(TaskState, 0)
    for task_id in sorted(entries):
        entry = entries[task_id]
        stats = entry.stats()
        counts[stats.state] += 1
        _task_metrics(entry, stats)
        out.append((entry, task_status(task_id, entry.generation, stats)))
    for state, count in counts.items():
        metrics.SERVER_TASKS.labels(state=state.value).set(count)
    return out


def _task_metrics(entry: TaskEntry, stats: TaskStats) -> None:
    labels = (entry.job_id, entry.task_id)
    metrics.TASK_RECORDS_PER_SECOND.labels(*labels).set(stats.records_per_s)
    metrics.TASK_BYTES_PER_SECOND.labels(*labels).set(stats.bytes_per_s)
    if stats.consumer_lag >= 0:
        metrics.TASK_LAG.labels(*labels).set(stats.consumer_lag)
    else:   # unknown (the broker is unreachable): no stale value
        with contextlib.suppress(KeyError):
            metrics.TASK_LAG.remove(*labels)
    metrics.TASK_STALLED.labels(*labels).set(1 if stats.stalled else 0)
    metrics.TASK_FRESHNESS.labels(*labels).set(stats.freshness_s)
    for unit, share in (("records", stats.rate_share_records_per_s),
                        ("bytes", stats.rate_share_bytes_per_s)):
        if share > 0:
            metrics.TASK_RATE_SHARE.labels(*labels, unit).set(share)
    if stats.rate_share_records_per_s > 0 or stats.rate_share_bytes_per_s > 0:
        metrics.TASK_RATE_LIMITED.labels(*labels).set(stats.rate_limited_s)
    if stats.last_commit_age_s >= 0:
        metrics.TASK_COMMIT_AGE.labels(*labels).set(stats.last_commit_age_s)
    # Counters from running totals: a fresh runner starts at 0 again, so only growth counts.
    if stats.records_total > entry.records_seen:
        metrics.TASK_RECORDS.labels(*labels).inc(stats.records_total - entry.records_seen)
    entry.records_seen = stats.records_total
    if stats.bytes_total > entry.bytes_seen:
        metrics.TASK_BYTES.labels(*labels).inc(stats.bytes_total - entry.bytes_seen)
    entry.bytes_seen = stats.bytes_total
    if stats.dead_letters_total > entry.dead_letters_seen:
        metrics.TASK_DEAD_LETTERS.labels(*labels).inc(
            stats.dead_letters_total - entry.dead_letters_seen)
    entry.dead_letters_seen = stats.dead_letters_total
    if stats.last_error and stats.last_error != entry.last_error_seen:
        metrics.TASK_ERRORS.labels(*labels).inc()
    entry.last_error_seen = stats.last_error


def forget_task_metrics(entry: TaskEntry) -> None:
    for family in (metrics.TASK_RECORDS_PER_SECOND, metrics.TASK_BYTES_PER_SECOND,
                   metrics.TASK_LAG, metrics.TASK_RECORDS, metrics.TASK_DEAD_LETTERS,
                   metrics.TASK_ERRORS, metrics.TASK_BYTES, metrics.TASK_STALLED,
                   metrics.TASK_FRESHNESS, metrics.TASK_COMMIT_AGE, metrics.TASK_RATE_LIMITED):
        with contextlib.suppress(KeyError):
            family.remove(entry.job_id, entry.task_id)
    for unit in ("records", "bytes"):
        with contextlib.suppress(KeyError):
            metrics.TASK_RATE_SHARE.remove(entry.job_id, entry.task_id, unit)
