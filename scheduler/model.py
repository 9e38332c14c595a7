"""The scheduler's input and output: plain frozen dataclasses, the contract with the master.

Times are plain floats (seconds on the caller's clock); the scheduler never reads a clock itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Resources:
    """A load or capacity vector: CPU cores (or CPU seconds/s) and network bytes/s."""

    cpu: float = 0.0
    net: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.net + other.net)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.net - other.net)

    def scaled(self, factor: float) -> Resources:
        return Resources(self.cpu * factor, self.net * factor)


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    group: str
    capacity: Resources
    # Measured usage of things that are not our tasks (other processes, overhead); may be zero.
    background: Resources = Resources()
    alive: bool = True
    cordoned: bool = False
    draining: bool = False
    # The most tasks the server holds at once (its memory budget's task slots, issue 17): tasks
    # running there, in flight towards it and still draining off it all take one. None (or
    # under 1): no cap.
    max_tasks: int | None = None


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    job: str
    group: str
    # Measured load (EWMA of reports) when `measured`, else None and the scheduler estimates.
    load: Resources | None = None
    measured: bool = False
    # The job's load hint for tasks not measured yet.
    hint: Resources | None = None
    server: str | None = None
    generation: int = 0
    last_moved_at: float | None = None
    # The job is paused or deleted: the task must not run anywhere.
    stopped: bool = False
    # The task's share of its job's bytes/s rate limit: its net load never exceeds it, so no
    # estimate (hint, default) may either (scheduler/estimates.py). None: not limited.
    net_cap: float | None = None


@dataclass(frozen=True, slots=True)
class MoveInFlight:
    """A handoff already under way (revoked from `source`, not yet running on `target`).

    The master keeps one from the moment it acts on a `Move` until the task got a `Placement` or a
    `Pending` in a later plan. While it is present the task's load counts on `target` and the
    task is never moved again; see scheduler/planner.py for the whole contract."""

    task: str
    source: str | None
    target: str
    started_at: float


@dataclass(frozen=True, slots=True)
class Config:
    high_watermark: float = 0.85
    target_watermark: float = 0.70
    imbalance_threshold: float = 0.10
    min_gain: float = 0.02
    move_budget: int = 20
    cooldown_s: float = 300.0
    default_estimate: Resources = Resources(cpu=0.05, net=256 * 1024)
    drain_budget: int = 50
    # Rebalancing starts when a server is more than `imbalance_threshold` above its group's mean,
    # and then brings it down to mean + (1 - hysteresis) * imbalance_threshold, so that small
    # load drifts after a rebalance do not trigger the next one.
    hysteresis: float = 0.5
    # False: move_budget and drain_budget bound the moves decided per plan() call. True: moves
    # still in flight use them up too, so they bound the handoffs under way at any time, however
    # often the master plans (for a master that plans on every event).
    budget_counts_in_flight: bool = False
    # Count balance (scheduler/spread.py): in a group whose mean utilisation is under this, a
    # server with less than half its share of the group's tasks (by count, in proportion to its
    # size) takes tasks from the servers with the most, up to its share, within move_budget.
    # 0 turns it off.
    count_balance_below: float = 0.30
    # No running task is free (a consumer, its buffers, a thread): every task counts at least
    # this many cores, so idle tasks spread over servers instead of piling onto one.
    task_cpu_floor: float = 0.001


@dataclass(frozen=True, slots=True)
class ClusterView:
    now: float
    servers: tuple[Server, ...]
    tasks: tuple[Task, ...]
    in_flight: tuple[MoveInFlight, ...] = ()
    config: Config = Config()


@dataclass(frozen=True, slots=True)
class Placement:
    """An unplaced task (new, evacuated, revoked earlier) goes to `server`."""

    task: str
    server: str
    reason: str


@dataclass(frozen=True, slots=True)
class Move:
    """Revoke `task` from `source`, then (after it drains) assign it to `target`: rebalance,
    drain and isolation repair are all this same direct handoff."""

    task: str
    source: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class Revocation:
    """Stop `task` on `server` with nowhere to go: its job is paused or deleted. (Drains are
    `Move`s to a chosen target; a cordon stops nothing.)"""

    task: str
    server: str
    reason: str


@dataclass(frozen=True, slots=True)
class Pending:
    """An unplaced task that gets no server this round, and why."""

    task: str
    reason: str


@dataclass(frozen=True, slots=True)
class GroupAdvice:
    group: str
    servers_alive: int
    utilisation: float          # mean dominant utilisation of the group's schedulable servers
    imbalance: float            # max - mean utilisation
    servers_wanted: int         # servers that bring mean utilisation to the target watermark
    reason: str
    # Task slots left on the group's schedulable servers when every one of them has a task cap;
    # None when one has none (slots are then no limit).
    task_slots_free: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    placements: tuple[Placement, ...] = ()
    moves: tuple[Move, ...] = ()
    revocations: tuple[Revocation, ...] = ()
    pending: tuple[Pending, ...] = ()
    advice: tuple[GroupAdvice, ...] = field(default_factory=tuple)

    def is_empty(self) -> bool:
        return not (self.placements or self.moves or self.revocations)
