"""The leader's live records of tasks and servers, and the bounded per-task history.

Plain mutable dataclasses, owned by the event loop (master/state.py changes them; the pure
functions of master/decisions.py read and update them). Times named `*_at` are the leader's
monotonic clock; times named `*_unix` are wall-clock for people.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from master.api.ports import TaskEvent
from master.store import AdminFlags, StoredAssignment
from tasks.cluster import ServerRegistration


@dataclass(slots=True)
class TaskRecord:
    id: str
    job: str
    topic: str
    partition: int
    group: str
    shard: int
    # Desired: the server in whose directive the task is (None: unplaced or draining).
    server: str | None = None
    generation: int = 0
    # Revoked from this server and not yet reported stopped there (the handoff's first half).
    draining_on: str | None = None
    # Reports from `draining_on` since the revoke that did not list the task at all.
    absent_reports: int = 0
    # An in-flight move: where the task goes once it has drained, and since when.
    move_target: str | None = None
    move_source: str | None = None      # kept after the drain, for the move's reason
    move_started_at: float | None = None
    last_moved_at: float | None = None
    # What the running server last said about the task at the current generation.
    reported_state: str = ""
    records_per_s: float = 0.0
    consumer_lag: int = -1
    committed_offset: int = -1
    last_error: str = ""
    # Progress as the server measured it (tasks/stats.py): -1 unknown.
    last_commit_age_s: float = -1.0
    freshness_s: float = 0.0
    stalled: str = ""               # why the task is stalled; "" when it is not
    # Why its job's Iceberg table does not take its chunks (master/iceberg/service.py): a
    # running task shows `stalled` for it too.
    table_stalled: str = ""
    records_total: int = 0
    bytes_total: int = 0
    exported_total: int = 0
    dead_letters_total: int = 0
    rate_limited_s: float = 0.0     # the pull's waits on the job's rate_limit, in all
    # EWMA of measured load (cpu seconds/s, bytes/s); None until the first report.
    load_cpu: float | None = None
    load_net: float | None = None
    pending_reason: str = ""
    since_unix: float | None = None

    def stored(self) -> StoredAssignment:
        return StoredAssignment(self.server, self.generation, self.draining_on)

    @property
    def live(self) -> bool:
        """Its reported rates are current: it runs (or drains) where it is desired."""
        return self.state in {"running", "stalled", "draining"}

    @property
    def holder(self) -> str | None:
        """The server the task may be running on right now (desired there, or draining there)."""
        return self.server if self.server is not None else self.draining_on

    @property
    def state(self) -> str:
        """pending / assigned / running / stalled / draining / stopped / failed, for people.
        `stalled`: running, but its server says it has not committed for longer than its rotation
        allows while it has work, or its source cannot reach the broker (`stalled` says why), or
        its Iceberg table's commits fail or lag (`table_stalled`)."""
        if self.draining_on is not None:
            return "draining"
        if self.server is None:
            return "pending" if self.pending_reason else "stopped"
        if self.reported_state == "running" and (self.stalled or self.table_stalled):
            return "stalled"
        if self.reported_state in {"running", "failed", "starting"}:
            return "running" if self.reported_state == "starting" else self.reported_state
        return "assigned"


@dataclass(slots=True)
class ServerRecord:
    id: str
    # Lease: alive while `last_seen_at + lease_ttl` is in the future (monotonic).
    last_seen_at: float
    registration: ServerRegistration | None = None
    admin: AdminFlags = field(default_factory=AdminFlags)
    group: str = ""
    address: str = ""
    version: str = ""
    cpu_capacity: float = 0.0
    net_capacity: float = 0.0
    cpu_used: float = 0.0           # cores in use, measured (all processes)
    net_used: float = 0.0           # bytes/s in + out, measured
    reported_draining: bool = False
    # The most tasks the server takes (Report.max_tasks: its memory budget's task slots, issue
    # 17); None: no cap (not reported, or an older server).
    max_tasks: int | None = None
    last_report_unix: float | None = None
    reported: bool = False          # has reported to this leader
    dead: bool = False

    @property
    def has_capacity(self) -> bool:
        return self.cpu_capacity > 0 or self.net_capacity > 0

    def register(self, reg: ServerRegistration) -> None:
        self.registration = reg
        self.group = reg.group
        self.address = reg.address
        self.version = reg.version
        if not self.reported:
            self.cpu_capacity = reg.cpu_cores
            self.net_capacity = reg.net_bytes_per_s


class History:
    """The last `limit` events of every task (placements, moves, revocations, pending)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: dict[str, deque[TaskEvent]] = {}

    def add(self, task: str, event: TaskEvent) -> None:
        events = self._events.get(task)
        if events is None:
            events = self._events[task] = deque(maxlen=self.limit)
        # Pending for the same reason every round is one event, not a flood.
        if events and event.kind == "pending" and events[-1].kind == "pending" \
                and events[-1].reason == event.reason:
            return
        events.append(event)

    def of(self, task: str) -> tuple[TaskEvent, ...]:
        return tuple(self._events.get(task, ()))

    def forget(self, task: str) -> None:
        self._events.pop(task, None)
