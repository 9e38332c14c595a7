"""The leader's decisions as pure functions: leases, heartbeat interval, load EWMA, the
scheduler's view, and the handoff state machine that turns a `Plan` into assignment changes.

No I/O, no clocks (callers pass `now`, monotonic, and `now_unix`, wall-clock for history).

Handoff (DESIGN.md, "Server lease and task handoff"), per task:

    assigned(A, g) --Move/Revocation--> draining on A (not desired anywhere)
    draining on A  --A reports STOPPED/FAILED, or omits it twice, or A's lease runs out--> released
    released       --Placement(B)--> assigned(B, g + 1)        (stopped jobs: stays unplaced)
    assigned(A, g), A's lease ran out --Placement(B)--> assigned(B, g + 1)   (evacuation)

A task is in at most one server's desired set, and never while it may still run elsewhere.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from master.api.ports import TaskEvent
from master.records import ServerRecord, TaskRecord
from master.store import AdminFlags
from scheduler.model import (
    ClusterView,
    Config,
    MoveInFlight,
    Plan,
    Resources,
    Server,
    Task,
)

# Reports from a revoked task's server that must omit it before it counts as stopped there
# (the first may have been built before the server saw the revoking directive).
ABSENT_REPORTS_TO_RELEASE = 2
FINAL_STATES = frozenset({"stopped", "failed"})


def heartbeat_interval(servers: int, budget: float, minimum: float) -> float:
    """Seconds between reports so that `servers` send at most `budget` reports per second."""
    return max(minimum, servers / budget) if budget > 0 else minimum


def plan_interval(last_plan_s: float, share: float, low: float, high: float) -> float:
    """How long timer rounds wait before re-planning with no event: planning may take `share` of
    the time, within [low, high]."""
    return min(high, max(low, last_plan_s / share))


def ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else old + alpha * (sample - old)


def lease_expired(last_seen_at: float, now: float, lease_ttl: float) -> bool:
    """A new leader sets every `last_seen_at` to its takeover: nobody dies before a full ttl."""
    return now - last_seen_at > lease_ttl


def renew_all(servers: Iterable[ServerRecord], now: float) -> None:
    """After a takeover or a suspension: reports could not arrive, so no lease is held against
    a server for that time; every live lease restarts now."""
    for srv in servers:
        if not srv.dead:
            srv.last_seen_at = max(srv.last_seen_at, now)


def expire_leases(servers: Iterable[ServerRecord], now: float, lease_ttl: float) -> list[str]:
    """Mark servers whose lease ran out dead; return the ids that just died."""
    died: list[str] = []
    for srv in servers:
        if not srv.dead and lease_expired(srv.last_seen_at, now, lease_ttl):
            srv.dead = True
            died.append(srv.id)
    return died


def drain_over(flags: AdminFlags, owner: int | None) -> bool:
    """Does a drain end because the drained process is gone and another one registered?

    A drain is of one server process, named by the ZooKeeper session that owned its
    registration when the drain began (`drain_session`). A registration owned by another
    session is a new process (a restart, a rolling upgrade): it takes work again, unless it is
    cordoned, which is the operator's way to keep a server out across restarts. While nothing
    is registered (`owner` None) the drain stands; an unknown session (0) never ends by itself
    (`uncordon` ends it)."""
    return (flags.draining and flags.drain_session != 0 and owner is not None
            and owner != flags.drain_session)


def drain_ended(flags: AdminFlags) -> AdminFlags:
    """The flags once a drain is over (by `uncordon` or `drain_over`): the cordon stays."""
    return AdminFlags(cordoned=flags.cordoned)


def admin_flags(old: AdminFlags, *, cordoned: bool | None, draining: bool | None,
                held: int, owner: int | None) -> AdminFlags:
    """A server's flags after a cordon, uncordon, drain or end of drain (None: unchanged).
    A drain that starts counts the `held` tasks and remembers the registration's `owner`
    session (`drain_over`); ending one keeps only the cordon (`drain_ended`)."""
    cordon = old.cordoned if cordoned is None else cordoned
    if draining and not old.draining:
        return AdminFlags(cordon, True, held, owner or 0)
    if draining is False:
        return replace(drain_ended(old), cordoned=cordon)
    return replace(old, cordoned=cordon)


def released_by_report(task: TaskRecord, reported_state: str | None) -> bool:
    """The draining server reported on `task`: is the first half of the handoff done?
    `reported_state` is None when the report did not list the task at all (counted)."""
    if reported_state is None:
        task.absent_reports += 1
        return task.absent_reports >= ABSENT_REPORTS_TO_RELEASE
    return reported_state in FINAL_STATES


def set_server(index: dict[str, set[str]], task: TaskRecord, server: str | None) -> None:
    """Change the task's desired server, keeping the server -> tasks index in step."""
    if task.server is not None:
        members = index.get(task.server)
        if members is not None:
            members.discard(task.id)
    task.server = server
    if server is not None:
        index.setdefault(server, set()).add(task.id)


@dataclass(slots=True)
class Applied:
    """What a round (or a report) changed: tasks to persist, servers to send directives to."""

    tasks: set[str] = field(default_factory=set)
    servers: set[str] = field(default_factory=set)
    events: list[tuple[str, TaskEvent]] = field(default_factory=list)
    moves: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Applied) -> None:
        self.tasks |= other.tasks
        self.servers |= other.servers
        self.events.extend(other.events)
        self.moves.update(other.moves)


def release(task: TaskRecord, why: str, now_unix: float, out: Applied) -> None:
    """The task stopped on its draining server (or that server died): free to place."""
    source = task.draining_on
    task.draining_on = None
    task.absent_reports = 0
    task.reported_state = ""
    out.tasks.add(task.id)
    out.events.append((task.id, TaskEvent(now_unix, "stopped", why, source, task.generation)))


def revoke(index: dict[str, set[str]], task: TaskRecord, target: str | None, reason: str,
           now: float, now_unix: float, out: Applied) -> None:
    source = task.server
    if source is None:
        return
    set_server(index, task, None)
    task.draining_on = source
    task.absent_reports = 0
    task.move_target = target
    task.move_source = source if target is not None else None
    task.move_started_at = now if target is not None else None
    if target is not None:
        task.last_moved_at = now
    out.tasks.add(task.id)
    out.servers.add(source)
    kind = "move" if target is not None else "revoke"
    out.moves[kind] += 1
    text = f"revoked from {source}" + (f" to move to {target}" if target else "")
    out.events.append((task.id, TaskEvent(now_unix, "revoked", f"{text}: {reason}", source,
                                          task.generation)))


def assign(index: dict[str, set[str]], task: TaskRecord, server: str, reason: str, now: float,
           now_unix: float, out: Applied) -> None:
    """Second half of a handoff (or a first placement): generation + 1 on the new server."""
    old = task.server
    if old is not None:
        out.servers.add(old)
    moved = task.move_target is not None or old is not None
    set_server(index, task, server)
    task.generation += 1
    task.move_target = None
    task.move_source = None
    task.move_started_at = None
    task.pending_reason = ""
    task.reported_state = ""
    task.since_unix = now_unix
    if moved:
        task.last_moved_at = now
    out.tasks.add(task.id)
    out.servers.add(server)
    kind = "evacuated" if old is not None else ("moved" if moved else "placed")
    out.moves[kind] += 1
    out.events.append((task.id, TaskEvent(now_unix, kind, reason, server, task.generation)))


def apply_plan(plan: Plan, tasks: Mapping[str, TaskRecord], index: dict[str, set[str]],
               alive: set[str], running_jobs: set[str], now: float, now_unix: float) -> Applied:
    """Carry out a plan's decisions that are still valid for the current records (the plan
    may have been made from a view a moment old)."""
    out = Applied()
    for rev in plan.revocations:
        task = tasks.get(rev.task)
        if task is not None and task.server == rev.server:
            revoke(index, task, None, rev.reason, now, now_unix, out)
    for mv in plan.moves:
        task = tasks.get(mv.task)
        if task is not None and task.server == mv.source and mv.target != mv.source:
            revoke(index, task, mv.target, mv.reason, now, now_unix, out)
    for pl in plan.placements:
        task = tasks.get(pl.task)
        if task is None or task.draining_on is not None or task.job not in running_jobs:
            continue
        if task.server is not None and task.server in alive:
            continue    # still desired on a live server: nothing to place
        assign(index, task, pl.server, pl.reason, now, now_unix, out)
    for pend in plan.pending:
        task = tasks.get(pend.task)
        if task is not None and task.server is None and task.draining_on is None:
            task.pending_reason = pend.reason
            out.events.append((task.id, TaskEvent(now_unix, "pending", pend.reason)))
    return out


def scheduler_config(high: float, target: float, imbalance: float, min_gain: float,
                     move_budget: int, cooldown_s: float, drain_budget: int,
                     default_cpu: float, default_net: float) -> Config:
    return Config(high_watermark=high, target_watermark=target, imbalance_threshold=imbalance,
                  min_gain=min_gain, move_budget=move_budget, cooldown_s=cooldown_s,
                  default_estimate=Resources(default_cpu, default_net), drain_budget=drain_budget)


def unready_servers(servers: Iterable[ServerRecord], now: float, warm_until: float) -> list[str]:
    """Live servers the leader cannot plan around yet. Until `warm_until` (a lease after the
    takeover) that is every server that has not reported to this leader: planning from estimates
    before the measured loads arrive would move tasks for nothing. Later, only servers it knows
    nothing about (no registration, no report), whose tasks would otherwise be evacuated."""
    if now < warm_until:
        return sorted(s.id for s in servers if not s.dead and not s.reported)
    return sorted(s.id for s in servers if not s.dead and not s.has_capacity)


def _bucket(value: float | None) -> int | None:
    """Loads within ~5 % of each other share a bucket (cache key; see `build_view`)."""
    if value is None:
        return None
    return -1 if value <= 1e-9 else round(math.log(value) * LOAD_BUCKETS_PER_E)


# 1 / ln(1.05): one bucket per 5 % of load.
LOAD_BUCKETS_PER_E = 20.5
ViewCache = dict[str, tuple[tuple[object, ...], Task]]


def build_view(now: float, servers: Iterable[ServerRecord], tasks: Iterable[TaskRecord],
               running_jobs: set[str], hints: Mapping[str, Resources | None],
               config: Config, cache: ViewCache | None = None,
               net_caps: Mapping[str, float] | None = None) -> ClusterView:
    """The scheduler's input from the live records.

    A draining task shows on its draining server (the planner leaves it there); an in-flight
    move is passed as `MoveInFlight` until the task lands. A server's background is what it
    measured beyond the measured load of the tasks it holds.

    With `cache`, a task whose placement is unchanged and whose load moved by less than about
    5 % reuses the `Task` built for an earlier view: building 100k frozen dataclasses is most
    of a round's cost, and a load that close makes no placement difference."""
    task_list: list[Task] = []
    flights: list[MoveInFlight] = []
    held: dict[str, list[float]] = {}
    for t in tasks:
        measured = t.load_cpu is not None and t.load_net is not None
        holder = t.holder
        if measured and holder is not None:
            acc = held.setdefault(holder, [0.0, 0.0])
            acc[0] += t.load_cpu or 0.0
            acc[1] += t.load_net or 0.0
        hint = hints.get(t.job)
        cap = net_caps.get(t.job) if net_caps else None   # share of the job's bytes/s limit
        stopped = t.job not in running_jobs
        key: tuple[object, ...] = (holder, t.generation, t.last_moved_at, stopped, t.group,
                                   hint, _bucket(t.load_cpu), _bucket(t.load_net), cap)
        hit = cache.get(t.id) if cache is not None else None
        if hit is not None and hit[0] == key:
            task_list.append(hit[1])
        else:
            load = Resources(t.load_cpu or 0.0, t.load_net or 0.0) if measured else None
            task = Task(id=t.id, job=t.job, group=t.group, load=load, measured=measured,
                        hint=hint, server=holder, generation=t.generation,
                        last_moved_at=t.last_moved_at, stopped=stopped, net_cap=cap)
            task_list.append(task)
            if cache is not None:
                cache[t.id] = (key, task)
        if t.move_target is not None:
            flights.append(MoveInFlight(t.id, t.draining_on or t.move_source, t.move_target,
                                        t.move_started_at if t.move_started_at else now))
    server_list: list[Server] = []
    for s in servers:
        used = held.get(s.id, [0.0, 0.0])
        background = Resources(max(0.0, s.cpu_used - used[0]), max(0.0, s.net_used - used[1]))
        server_list.append(Server(
            id=s.id, group=s.group, capacity=Resources(s.cpu_capacity, s.net_capacity),
            background=background if s.reported else Resources(), alive=not s.dead,
            # Unregistered: keep what it runs until its lease ends, but give it nothing new.
            # Never reported to this leader (a registration alone, which any holder of the
            # servers' ZooKeeper credential can write, capacity included): nothing new either;
            # a report arrives only on a session authenticated as that server (mTLS).
            cordoned=s.admin.cordoned or s.registration is None or not s.reported,
            draining=s.admin.draining or s.reported_draining, max_tasks=s.max_tasks))
    return ClusterView(now=now, servers=tuple(server_list), tasks=tuple(task_list),
                       in_flight=tuple(flights), config=config)
