"""A task that fails again and again backs off (doubling, bounded) and keeps its error visible
between runs, instead of a silent restart every few seconds (issue 16, failure 3)."""

from __future__ import annotations

from server.reconcile import (
    RESTART_DOUBLINGS,
    STABLE_RUN_S,
    Desired,
    Running,
    failures_in_a_row,
    plan_reconcile,
    restart_delay,
)
from server.tasktable import TaskEntry
from tasks.runner import TaskState, TaskStats


class Failing:
    """A runner stand-in that reports FAILED with an error (or RUNNING without one)."""

    def __init__(self, error: str = "") -> None:
        self.error = error

    @property
    def task_id(self) -> str:
        return "a"

    @property
    def generation(self) -> int:
        return 1

    async def start(self) -> None:
        return None

    async def stop(self, *, drain: bool = True) -> None:
        return None

    def stats(self) -> TaskStats:
        state = TaskState.FAILED if self.error else TaskState.RUNNING
        return TaskStats(state, last_error=self.error)


def test_the_delay_doubles_per_failure_in_a_row_and_is_bounded() -> None:
    assert [restart_delay(5, n) for n in (0, 1, 2, 3, 4)] == [5, 5, 10, 20, 40]
    assert restart_delay(5, 100) == 5 * 2 ** RESTART_DOUBLINGS == 80


def test_a_run_that_lasted_starts_the_count_again() -> None:
    assert failures_in_a_row(3, 1.0) == 4
    assert failures_in_a_row(3, None) == 4
    assert failures_in_a_row(3, STABLE_RUN_S) == 1


def test_the_plan_waits_longer_after_each_failure() -> None:
    desired = {"a": Desired("a", 1, "spec")}

    def starts_at(now: float, failures: int) -> bool:
        running = {"a": Running("a", 1, TaskState.FAILED, failed_at=100.0, failures=failures)}
        plan = plan_reconcile(desired, running, {"a": (0, 1)}, may_start=True, now=now,
                              restart_backoff_s=5)
        return bool(plan.start)

    assert starts_at(105, 1)
    assert not starts_at(105, 3) and starts_at(120, 3)
    assert not starts_at(179, 50) and starts_at(180, 50)


def test_the_table_counts_failures_across_runs_and_keeps_the_error() -> None:
    first = TaskEntry("a", "job", 1, runner=Failing("sink: S3 EntityTooLarge"), started_at=0.0)
    assert first.running_view(first.stats().state, now=2.0).failures == 1
    # The host starts the next run from the failed entry (server/host.py _schedule_start).
    second = TaskEntry("a", "job", 1, runner=Failing(), started_at=10.0,
                       failures_before=first.failures(),
                       previous_error=first.stats().last_error)
    assert second.stats().state is TaskState.RUNNING
    assert second.stats().last_error == "sink: S3 EntityTooLarge"   # not blank between runs
    assert second.running_view(TaskState.RUNNING, now=11.0).failures == 0
    assert isinstance(second.runner, Failing)
    second.runner.error = "sink: S3 EntityTooLarge again"
    view = second.running_view(second.stats().state, now=12.0)
    assert view.failures == 2 and view.failed_at == 12.0
    assert second.stats().last_error == "sink: S3 EntityTooLarge again"
