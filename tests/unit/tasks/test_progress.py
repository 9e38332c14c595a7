"""Truthful per-task progress (tasks/stats.py): lag from the committed offset and the broker's
high watermark, last-commit age, freshness, and when a task counts as stalled."""

from __future__ import annotations

from functools import partial

from tasks.runner import TaskState
from tasks.stats import STALL_MARGIN_MIN, TaskMeter, stall_limit, stall_reason


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lag_counts_from_the_committed_offset_not_from_what_was_read() -> None:
    clock = Clock()
    meter = TaskMeter(clock=clock, rotation_s=1.0)
    meter.committed(0)
    meter.read(next_offset=343, high_watermark=343, got_records=True)
    stats = meter.snapshot(TaskState.RUNNING)
    assert stats.consumer_lag == 343   # read everything, delivered nothing
    meter.committed(343)
    assert meter.snapshot(TaskState.RUNNING).consumer_lag == 0


def test_an_unreachable_broker_is_an_error_not_lag_zero() -> None:
    meter = TaskMeter(clock=Clock(), rotation_s=60.0)
    meter.committed(10)
    meter.read(10, 10, False)
    meter.read(10, -1, False, unreachable="broker unreachable since 2026-12-05T12:00:00Z (x)")
    stats = meter.snapshot(TaskState.RUNNING)
    assert stats.consumer_lag == -1
    assert stats.last_error.startswith("broker unreachable since")
    assert stats.stalled.startswith("source: broker unreachable since")
    meter.read(10, 10, False)   # it answers again
    stats = meter.snapshot(TaskState.RUNNING)
    assert (stats.consumer_lag, stats.stalled, stats.last_error) == (0, "", "")


def test_freshness_and_last_commit_age() -> None:
    clock = Clock()
    meter = TaskMeter(clock=clock, rotation_s=5.0)
    meter.committed(0)
    meter.read(100, 300, True)
    clock.now += 2
    meter.read(200, 300, True)
    clock.now += 3
    stats = meter.snapshot(TaskState.RUNNING)
    assert (stats.freshness_s, stats.last_commit_age_s) == (5.0, 5.0)
    meter.committed(150)   # mid-batch: the rest of the second batch is still held
    assert meter.snapshot(TaskState.RUNNING).freshness_s == 3.0
    meter.committed(200)
    stats = meter.snapshot(TaskState.RUNNING)
    assert (stats.freshness_s, stats.last_commit_age_s) == (0.0, 0.0)


def test_held_batches_are_bounded_and_err_on_the_old_side() -> None:
    clock = Clock()
    meter = TaskMeter(clock=clock)
    meter.committed(0)
    for i in range(1, 1000):
        clock.now += 1
        meter.read(i, 1000, True)
    assert len(meter._held) <= 64
    meter.committed(998)
    assert meter.freshness() >= 1.0


def test_a_task_that_does_not_run_reports_no_rates() -> None:
    clock = Clock()
    meter = TaskMeter(clock=clock)
    meter.consumed(500, 5000, 0.5)
    clock.now += 1
    assert meter.snapshot(TaskState.RUNNING).records_per_s == 500
    stopped = meter.snapshot(TaskState.STOPPED)
    assert (stopped.records_per_s, stopped.bytes_per_s, stopped.records_total) == (0, 0, 500)


def test_stall_rules() -> None:
    limit = stall_limit(1.0)
    assert limit == 1.0 + STALL_MARGIN_MIN
    healthy = partial(stall_reason, TaskState.RUNNING, rotation_s=1.0)
    # Idle at the high watermark: nothing held, nothing unread — not stalled however long.
    assert healthy(since_commit=3600, freshness=0, unread=0) == ""
    # Committed recently: not stalled.
    assert healthy(since_commit=limit - 1, freshness=limit - 1, unread=5) == ""
    # Holding records past the rotation + margin: stalled, with the error.
    reason = healthy(since_commit=limit + 1, freshness=limit + 1, unread=0,
                          last_error="sink: NoSuchBucket")
    assert "no commit for 12s" in reason and "NoSuchBucket" in reason
    # Records not read at all and no commit: stalled.
    assert "7 records not read yet" in healthy(since_commit=limit + 1,
                                                    freshness=0, unread=7)
    # Without a time limit a partial file may wait for data, unless an error repeats.
    assert stall_reason(TaskState.RUNNING, since_commit=1e5, freshness=1e5, unread=0,
                        rotation_s=None) == ""
    assert stall_reason(TaskState.RUNNING, since_commit=1e5, freshness=1e5, unread=0,
                        rotation_s=None, last_error="sink: refused") != ""
    # Only running tasks stall.
    assert stall_reason(TaskState.DRAINING, since_commit=1e5, freshness=1e5, unread=9,
                        rotation_s=1.0) == ""
