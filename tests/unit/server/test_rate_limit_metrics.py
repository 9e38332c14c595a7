"""A rate-limited task's share and waits reach the report and the server's metrics
(server/tasktable.py, server/wire.py); an unlimited task has no rate-limit series."""

from __future__ import annotations

from prometheus_client import generate_latest

from server import metrics
from server.tasktable import TaskEntry, forget_task_metrics, report_tasks
from tasks.runner import TaskState, TaskStats


class Runner:
    def __init__(self, task_id: str, stats: TaskStats) -> None:
        self.task_id, self.generation, self._stats = task_id, 1, stats

    async def start(self) -> None: ...

    async def stop(self, *, drain: bool = True) -> None: ...

    def stats(self) -> TaskStats:
        return self._stats


def test_share_and_waits_in_the_report_and_the_metrics() -> None:
    limited = TaskEntry("rl:t:0", "rl", 1, runner=Runner("rl:t:0", TaskStats(
        TaskState.RUNNING, rate_share_records_per_s=500.0, rate_limited_s=12.5)))
    free = TaskEntry("free:t:0", "free", 1, runner=Runner("free:t:0",
                                                          TaskStats(TaskState.RUNNING)))
    statuses = dict((e.task_id, s) for e, s in report_tasks({"rl:t:0": limited,
                                                             "free:t:0": free}))
    assert statuses["rl:t:0"].rate_limited_s == 12.5
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'exportd_task_rate_limit{export_job="rl",task="rl:t:0",unit="records"} 500.0' in text
    assert 'exportd_task_rate_limited_seconds{export_job="rl",task="rl:t:0"} 12.5' in text
    assert 'task="free:t:0",unit=' not in text
    assert 'exportd_task_rate_limited_seconds{export_job="free"' not in text
    forget_task_metrics(limited)
    forget_task_metrics(free)
    assert 'task="rl:t:0"' not in generate_latest(metrics.REGISTRY).decode()
