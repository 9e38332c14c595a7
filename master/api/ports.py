"""What the HTTP API needs from the control plane: the `ControlPlane` protocol and its views.

The API (master/api) only translates HTTP to these calls and these views to JSON; the master's
core implements the protocol twice: on the leader from its live view, and on a standby from
ZooKeeper alone (reads only; the API forwards writes to the leader's URL from `leader()`).
Views are frozen dataclasses; `dataclasses.asdict` turns each into the JSON the API returns.
Errors are raised from tasks.errors (NotFound, Conflict, Unavailable, ValidationError, ...) and
mapped to HTTP in one place (master/api).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tasks.spec import JobSpec


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One line of a task's history: placed, moved, revoked, pending, failed, ..."""

    at_unix: float
    kind: str
    reason: str
    server: str | None = None
    generation: int | None = None


# What TaskView.state may be (master/records.py TaskRecord.state): the API's filter and the
# leader's task gauge list them all.
TASK_STATES = ("pending", "assigned", "running", "stalled", "draining", "stopped", "failed")


@dataclass(frozen=True, slots=True)
class TableView:
    """An Iceberg job's table as its leader's committer last saw it (master/iceberg/service.py);
    only the leader knows it (a standby's views have none)."""

    catalog: str
    namespace: str
    table: str
    exists: bool = False              # False until a task has created it
    commit_interval_s: float = 0.0
    last_commit_unix: float | None = None   # the newest snapshot of exportd's on the table
    snapshot_id: int | None = None          # the table's current snapshot
    committed_total: int = 0          # records this leader committed
    pending_records: int = 0          # in reports written but not (yet) in the table
    pending_files: int = 0
    pending_reports: int = 0
    oldest_pending_age_s: float = -1.0   # -1: nothing pending
    consecutive_errors: int = 0       # rounds in a row that failed or were refused
    last_error: str = ""
    bad_reports: int = 0              # reports that do not parse (left in place)
    # "topic/partition" -> why its chain stops (a file that cannot be committed)
    blocked: dict[str, str] = field(default_factory=dict)
    stalled_reason: str = ""          # why its tasks show `stalled` ('' when they do not)
    checked_unix: float | None = None   # when the last round ended


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    job: str
    group: str
    topic: str
    partition: int
    server: str | None
    generation: int
    state: str                    # one of TASK_STATES
    pending_reason: str = ""
    cpu: float = 0.0              # measured or estimated load
    net: float = 0.0
    measured: bool = False
    records_per_s: float = 0.0
    consumer_lag: int = -1
    committed_offset: int = -1
    last_error: str = ""
    since_unix: float | None = None   # on its current server since
    history: tuple[TaskEvent, ...] = ()  # filled by get_task only
    # Progress (master/views.py): lag is the high watermark - committed_offset.
    stalled_reason: str = ""      # why state is `stalled`
    last_commit_age_s: float = -1.0   # -1 unknown
    freshness_s: float = 0.0      # age of the oldest record read but not committed
    records_total: int = 0        # as its current runner counted them
    bytes_total: int = 0
    exported_total: int = 0
    dead_letters_total: int = 0
    # The job's rate_limit (tasks/ratelimit.py): this task's share (0: not limited), the job's
    # task count it is split over, and how long the pull has waited on it (as last reported).
    rate_share_records_per_s: float = 0.0
    rate_share_bytes_per_s: float = 0.0
    job_tasks: int = 0
    rate_limited_s: float = 0.0
    table: TableView | None = None    # an Iceberg job's table; filled by get_task only


@dataclass(frozen=True, slots=True)
class ServerView:
    id: str
    group: str
    address: str
    alive: bool
    cordoned: bool
    draining: bool
    cpu_capacity: float
    net_capacity: float
    cpu_utilisation: float        # 0..1 of capacity (tasks' load + background)
    net_utilisation: float
    tasks: tuple[str, ...] = ()
    last_report_unix: float | None = None
    version: str = ""
    # The most tasks it takes (its memory budget's task slots, or its max_tasks setting);
    # None: no cap. `tasks` counts what it holds against it.
    max_tasks: int | None = None


@dataclass(frozen=True, slots=True)
class DrainProgress:
    server: str
    draining: bool
    tasks_left: int
    tasks_at_start: int


@dataclass(frozen=True, slots=True)
class GroupView:
    group: str
    servers_alive: int
    utilisation: float
    imbalance: float
    servers_wanted: int
    tasks: int
    tasks_pending: int
    reason: str
    # Task slots left on its schedulable servers when all of them have a cap; None: no limit.
    task_slots_free: int | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    spec: JobSpec
    state: str                    # running / paused
    tasks: tuple[str, ...]
    created_unix: float | None = None
    table: TableView | None = None    # an Iceberg job's table, on the leader


@dataclass(frozen=True, slots=True)
class PlacementView:
    servers: tuple[ServerView, ...]
    tasks: tuple[TaskView, ...]   # every task, pending ones with pending_reason
    groups: tuple[GroupView, ...]


@dataclass(frozen=True, slots=True)
class PlannedChange:
    kind: str                     # place / move / revoke / pending
    task: str
    reason: str
    source: str | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class PlanView:
    changes: tuple[PlannedChange, ...]
    groups: tuple[GroupView, ...]


@dataclass(frozen=True, slots=True)
class LeaderView:
    id: str
    grpc: str
    http: str
    epoch: int
    since_unix: float
    this_master: str              # the id of the master that answered
    this_master_leads: bool


@dataclass(frozen=True, slots=True)
class TaskFilter:
    job: str | None = None
    server: str | None = None
    group: str | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


class ControlPlane(Protocol):
    """Every call may raise tasks.errors.ExportdError subclasses; writes raise Unavailable
    on a master that does not lead (the API forwards them instead of calling)."""

    def is_leader(self) -> bool: ...

    def readiness(self) -> Readiness: ...

    def leader(self) -> LeaderView: ...

    # jobs
    async def create_job(self, spec: JobSpec) -> JobView: ...

    def list_jobs(self) -> list[JobView]: ...

    def get_job(self, job_id: str) -> JobView: ...

    async def delete_job(self, job_id: str) -> None: ...

    async def set_job_state(self, job_id: str, state: str) -> JobView: ...

    # tasks
    def list_tasks(self, where: TaskFilter) -> list[TaskView]: ...

    def get_task(self, task_id: str) -> TaskView: ...

    # servers
    def list_servers(self) -> list[ServerView]: ...

    def get_server(self, server_id: str) -> ServerView: ...

    async def set_cordon(self, server_id: str, cordoned: bool) -> ServerView: ...

    async def drain(self, server_id: str) -> DrainProgress: ...

    def drain_progress(self, server_id: str) -> DrainProgress: ...

    # placement
    def placement(self) -> PlacementView: ...

    def groups(self) -> list[GroupView]: ...

    def rebalance_dry_run(self) -> PlanView: ...
