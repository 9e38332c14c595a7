"""Messages between a server and its task worker processes (pickled over a multiprocessing Pipe).

The server sends `StartTask`, `StopTask`, `LeaseUpdate` and `Shutdown`; the worker says `Ready`
once, answers each request with a `Done` carrying the same request number, and sends every
task's `TaskStats` in a `StatsReport` each STATS_PERIOD_S, so the host reads stats without a
round trip. Tasks are keyed by (task id, generation): a new generation may start while the
old one still drains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.runner import Assignment, TaskStats

# How often a worker sends its tasks' stats; the server's heartbeat is ~1 s.
STATS_PERIOD_S = 0.5

TaskKey = tuple[str, int]
"""(task id, generation)."""


@dataclass(frozen=True, slots=True)
class StartTask:
    request: int
    assignment: Assignment


@dataclass(frozen=True, slots=True)
class StopTask:
    request: int
    key: TaskKey
    drain: bool


@dataclass(frozen=True, slots=True)
class LeaseUpdate:
    """The server's lease now runs until `deadline` (time.monotonic seconds, one clock for the
    whole host); -inf: it self-fenced. The worker stops side effects by itself at the deadline
    (tasks/fence.py), even when no further message comes because the server is stopped."""

    deadline: float


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop every task at once (no drain) and exit."""


@dataclass(frozen=True, slots=True)
class Done:
    """The answer to request `request`: `error` is empty on success, else "Type: message"."""

    request: int
    error: str = ""
    stats: TaskStats | None = None   # the task's stats when it stopped (StopTask)


@dataclass(frozen=True, slots=True)
class Ready:
    """Sent once, when the worker has imported the pipeline and can start tasks."""

    pid: int


@dataclass(frozen=True, slots=True)
class StatsReport:
    stats: dict[TaskKey, TaskStats] = field(default_factory=dict)


ToWorker = StartTask | StopTask | LeaseUpdate | Shutdown
FromWorker = Done | Ready | StatsReport
