"""The API's views (master/api/ports.py) from a `LiveState`: the leader's, or a standby's built
from ZooKeeper alone. Pure functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from master.api.ports import (
    DrainProgress,
    GroupView,
    JobView,
    PlannedChange,
    PlanView,
    ServerView,
    TaskFilter,
    TaskView,
)
from master.records import ServerRecord, TaskRecord
from master.state import LiveState
from scheduler.model import ClusterView, Config, Plan
from tasks.errors import NotFound
from tasks.ratelimit import task_share


def task_view(state: LiveState, rec: TaskRecord, *, history: bool = False) -> TaskView:
    job = state.jobs.get(rec.job)
    measured = rec.load_cpu is not None
    cpu, net = rec.load_cpu or 0.0, rec.load_net or 0.0
    # The job's own hint (not state.hints(), a dict of every job, built again per task).
    hint = job.spec.load_hint if job is not None and not measured else None
    if hint:
        cpu, net = hint.cpu, hint.net
    live = rec.live   # a stopped (e.g. paused) task moves nothing: no last rate, no ages
    job_tasks = state.job_tasks.get(rec.job, 0)
    share = task_share(job.spec.rate_limit if job else None, job_tasks)
    return TaskView(
        id=rec.id, job=rec.job, group=rec.group, topic=rec.topic, partition=rec.partition,
        server=rec.holder, generation=rec.generation, state=rec.state,
        pending_reason=rec.pending_reason, cpu=cpu, net=net, measured=measured,
        records_per_s=rec.records_per_s if live else 0.0, consumer_lag=rec.consumer_lag,
        committed_offset=rec.committed_offset, last_error=rec.last_error,
        since_unix=rec.since_unix, history=state.history.of(rec.id) if history else (),
        stalled_reason=(rec.stalled or rec.table_stalled) if rec.state == "stalled" else "",
        last_commit_age_s=rec.last_commit_age_s if live else -1.0,
        freshness_s=rec.freshness_s if live else 0.0, records_total=rec.records_total,
        bytes_total=rec.bytes_total, exported_total=rec.exported_total,
        dead_letters_total=rec.dead_letters_total,
        rate_share_records_per_s=(share.records_per_s or 0.0) if share else 0.0,
        rate_share_bytes_per_s=(share.bytes_per_s or 0.0) if share else 0.0,
        job_tasks=job_tasks, rate_limited_s=rec.rate_limited_s,
        table=state.tables.get(rec.job) if history else None)


def _ratio(used: float, capacity: float) -> float:
    return used / capacity if capacity > 0 else 0.0


def server_view(state: LiveState, srv: ServerRecord) -> ServerView:
    held = state.held_by(srv.id)
    if srv.reported:
        cpu, net = srv.cpu_used, srv.net_used
    else:
        cpu = sum(t.load_cpu or 0.0 for t in held)
        net = sum(t.load_net or 0.0 for t in held)
    return ServerView(
        id=srv.id, group=srv.group, address=srv.address, alive=not srv.dead,
        cordoned=srv.admin.cordoned, draining=srv.admin.draining or srv.reported_draining,
        cpu_capacity=srv.cpu_capacity, net_capacity=srv.net_capacity,
        cpu_utilisation=_ratio(cpu, srv.cpu_capacity),
        net_utilisation=_ratio(net, srv.net_capacity),
        tasks=tuple(t.id for t in held), last_report_unix=srv.last_report_unix,
        version=srv.version, max_tasks=srv.max_tasks)


def matches(view: TaskView, where: TaskFilter) -> bool:
    return ((where.job is None or view.job == where.job)
            and (where.server is None or view.server == where.server)
            and (where.group is None or view.group == where.group)
            and (where.state is None or view.state == where.state))


def list_tasks(state: LiveState, where: TaskFilter) -> list[TaskView]:
    recs: Iterable[TaskRecord] = state.tasks.values()
    if where.job is not None:
        recs = [t for t in recs if t.job == where.job]
    views = (task_view(state, t) for t in recs)
    return sorted((v for v in views if matches(v, where)), key=lambda v: v.id)


def get_task(state: LiveState, task_id: str) -> TaskView:
    rec = state.tasks.get(task_id)
    if rec is None:
        raise NotFound(f"no task {task_id}", task=task_id)
    return task_view(state, rec, history=True)


def list_servers(state: LiveState) -> list[ServerView]:
    return [server_view(state, s) for _, s in sorted(state.servers.items())]


def get_server(state: LiveState, server_id: str) -> ServerView:
    srv = state.servers.get(server_id)
    if srv is None:
        raise NotFound(f"no server {server_id}", server=server_id)
    return server_view(state, srv)


def job_view(state: LiveState, job_id: str) -> JobView:
    job = state.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}", job=job_id)
    return JobView(spec=job.spec, state=job.spec.state, tasks=tuple(state.tasks_of(job_id)),
                   created_unix=job.created_unix, table=state.tables.get(job_id))


def list_jobs(state: LiveState) -> list[JobView]:
    by_job: dict[str, list[str]] = {}
    for rec in state.tasks.values():
        by_job.setdefault(rec.job, []).append(rec.id)
    return [JobView(spec=j.spec, state=j.spec.state, tasks=tuple(sorted(by_job.get(i, []))),
                    created_unix=j.created_unix, table=state.tables.get(i))
            for i, j in sorted(state.jobs.items())]


def drain_progress(state: LiveState, server_id: str) -> DrainProgress:
    srv = state.servers.get(server_id)
    if srv is None:
        raise NotFound(f"no server {server_id}", server=server_id)
    left = len(state.held_by(server_id))
    return DrainProgress(server=server_id, draining=srv.admin.draining, tasks_left=left,
                         tasks_at_start=max(srv.admin.drain_started_tasks, left))


def group_views(state: LiveState, plan: Plan) -> list[GroupView]:
    tasks: dict[str, int] = {}
    pending: dict[str, int] = {}
    for rec in state.tasks.values():
        tasks[rec.group] = tasks.get(rec.group, 0) + 1
        if rec.state == "pending":
            pending[rec.group] = pending.get(rec.group, 0) + 1
    return [GroupView(group=a.group, servers_alive=a.servers_alive, utilisation=a.utilisation,
                      imbalance=a.imbalance, servers_wanted=a.servers_wanted,
                      tasks=tasks.get(a.group, 0), tasks_pending=pending.get(a.group, 0),
                      reason=a.reason, task_slots_free=a.task_slots_free)
            for a in plan.advice]


def plan_view(state: LiveState, plan: Plan) -> PlanView:
    changes: list[PlannedChange] = []
    changes += [PlannedChange("place", p.task, p.reason, state.tasks[p.task].holder
                              if p.task in state.tasks else None, p.server)
                for p in plan.placements]
    changes += [PlannedChange("move", m.task, m.reason, m.source, m.target) for m in plan.moves]
    changes += [PlannedChange("revoke", r.task, r.reason, r.server) for r in plan.revocations]
    changes += [PlannedChange("pending", p.task, p.reason) for p in plan.pending]
    return PlanView(changes=tuple(changes), groups=tuple(group_views(state, plan)))


def dry_run(state: LiveState, planner: Callable[[ClusterView], Plan], config: Config,
            now: float) -> Plan:
    """What a round would decide now, without applying it."""
    return planner(state.view(now, config))
