"""The task status a server reports: progress fields on the wire, and a task the host stopped
reports no rates and no stall (server/tasktable.py, server/wire.py)."""

from __future__ import annotations

from proto import exportd_pb2 as pb
from server.tasktable import TaskEntry, report_tasks
from tasks.runner import TaskState, TaskStats

STATS = TaskStats(TaskState.RUNNING, records_per_s=40.0, bytes_per_s=4000.0,
                  cpu_seconds_per_s=0.1, consumer_lag=300, committed_offset=0,
                  last_error="sink: S3 NoSuchBucket", records_total=300, bytes_total=9000,
                  exported_total=0, dead_letters_total=1, last_commit_age_s=42.0,
                  freshness_s=41.0, stalled="no commit for 42s")


class Runner:
    task_id, generation = "j:t:0", 1

    async def start(self) -> None: ...

    async def stop(self, *, drain: bool = True) -> None: ...

    def stats(self) -> TaskStats:
        return STATS


def test_progress_goes_on_the_wire() -> None:
    entry = TaskEntry("j:t:0", "j", 1, runner=Runner())
    [(_, status)] = report_tasks({"j:t:0": entry})
    assert status.state == pb.TASK_STATE_RUNNING
    assert (status.consumer_lag, status.committed_offset, status.stalled) == (
        300, 0, "no commit for 42s")
    assert (status.last_commit_age_s, status.freshness_s) == (42.0, 41.0)
    assert (status.records_total, status.bytes_total, status.exported_total,
            status.dead_letters_total) == (300, 9000, 0, 1)


def test_a_stopped_task_reports_no_rates_and_no_stall() -> None:
    entry = TaskEntry("j:t:0", "j", 1, runner=Runner(), stopped=True)
    [(_, status)] = report_tasks({"j:t:0": entry})
    assert status.state == pb.TASK_STATE_STOPPED
    assert (status.records_per_s, status.bytes_per_s, status.cpu_seconds_per_s) == (0, 0, 0)
    assert (status.stalled, status.freshness_s) == ("", 0.0)
    assert status.records_total == 300   # totals stay
