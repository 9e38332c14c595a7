"""The contract between a host (the export server, a test harness) and one running task.

A task id is `<job_id>:<topic>:<partition>` (`task_id()`); job ids are [a-z0-9-] and Kafka topic
names cannot hold ':', so the id is unambiguous and URL-safe.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tasks.spec import JobSpec


def task_id(job_id: str, topic: str, partition: int) -> str:
    return f"{job_id}:{topic}:{partition}"


def parse_task_id(value: str) -> tuple[str, str, int]:
    job_id, topic, partition = value.rsplit(":", 2)
    return job_id, topic, int(partition)


class TaskState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskStats:
    state: TaskState
    records_per_s: float = 0.0
    bytes_per_s: float = 0.0
    cpu_seconds_per_s: float = 0.0
    consumer_lag: int = -1
    committed_offset: int = -1
    last_error: str = ""
    records_total: int = 0
    dead_letters_total: int = 0
    bytes_total: int = 0        # consumed value bytes
    exported_total: int = 0     # records the sink acknowledged
    last_commit_age_s: float = -1.0   # since the last commit (or the start); -1 unknown
    freshness_s: float = 0.0    # age of the oldest record read but not yet committed
    stalled: str = ""           # why the task is stalled (tasks/stats.py); "" when it is not
    # The job's rate_limit (tasks/ratelimit.py): this task's share (0: not limited) and how
    # long its pull has waited on it in all.
    rate_share_records_per_s: float = 0.0
    rate_share_bytes_per_s: float = 0.0
    rate_limited_s: float = 0.0


class TaskRunner(Protocol):
    """One task's pipeline. Created stopped; `start` returns once it is running."""

    @property
    def task_id(self) -> str: ...

    @property
    def generation(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self, *, drain: bool = True) -> None:
        """drain=True: flush the sink and commit offsets before returning (a handoff).
        drain=False: stop at once without committing more (self-fencing after a lost lease)."""
        ...

    def stats(self) -> TaskStats: ...


def safe_stats(runner: TaskRunner) -> TaskStats:
    """`runner.stats()`, or FAILED with the reason: a runner's bug must not break the host's
    heartbeat (or a worker's report)."""
    try:
        return runner.stats()
    except Exception as exc:
        return TaskStats(TaskState.FAILED, last_error=f"stats() failed: {exc!r}")


@dataclass(frozen=True, slots=True)
class Assignment:
    """One task a host should run: the job's spec, the partition, and the fencing generation."""

    task_id: str
    generation: int
    job: JobSpec
    partition: int
    # How many tasks the job has (from the leader): each gets that share of the job's
    # rate_limit (tasks/ratelimit.py). 0: unknown (a harness), the task gets the whole limit.
    job_tasks: int = 0

    @property
    def topic(self) -> str:
        """The topic of the task's id: a job may read several (tasks/topics.py)."""
        return parse_task_id(self.task_id)[1]


RunnerFactory = Callable[[Assignment], TaskRunner]
"""Builds a (stopped) runner for an assignment; the server holds one, made from its settings."""
