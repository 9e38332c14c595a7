"""Builders and a tiny "master" for scheduler tests: apply a plan the way the master does."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import scheduler
from scheduler import ClusterView, Config, MoveInFlight, Plan, Resources, Server, Task

MB = 1e6


def srv(sid: str, group: str = "default", cpu: float = 8.0, net: float = 1000 * MB,
        bg_cpu: float = 0.0, bg_net: float = 0.0, **kw: Any) -> Server:
    return Server(id=sid, group=group, capacity=Resources(cpu, net),
                  background=Resources(bg_cpu, bg_net), **kw)


def task(tid: str, group: str = "default", cpu: float = 0.1, net: float = 1 * MB,
         server: str | None = None, job: str = "job", **kw: Any) -> Task:
    return Task(id=tid, job=job, group=group, load=Resources(cpu, net), measured=True,
                server=server, **kw)


def view(servers: Iterable[Server], tasks: Iterable[Task], now: float = 10_000.0,
         in_flight: Iterable[MoveInFlight] = (), **config: Any) -> ClusterView:
    return ClusterView(now=now, servers=tuple(servers), tasks=tuple(tasks),
                       in_flight=tuple(in_flight), config=Config(**config))


def apply(v: ClusterView, plan: Plan, advance: float = 0.0) -> ClusterView:
    """The cluster once the plan is done: placements and moves land at once (a move's task gets
    `last_moved_at = now`), revoked tasks have no server, and the in-flight entries of tasks that
    got a Placement or a Pending are over (the master drops them)."""
    where: dict[str, str | None] = {p.task: p.server for p in plan.placements}
    moved = {m.task: m.target for m in plan.moves}
    where.update(moved)
    where.update({r.task: None for r in plan.revocations})
    tasks = tuple(
        replace(t, server=where[t.id],
                last_moved_at=v.now if t.id in moved else t.last_moved_at)
        if t.id in where else t
        for t in v.tasks
    )
    over = {p.task for p in plan.placements} | {p.task for p in plan.pending}
    flights = tuple(f for f in v.in_flight if f.task not in over)
    return replace(v, tasks=tasks, in_flight=flights, now=v.now + advance)


def kill_some(v: ClusterView, seed: int, share: float = 0.2) -> tuple[set[str], ClusterView]:
    """The ids of a random `share` of the live servers (drawn from `seed`), and `v` with them
    dead."""
    rng = random.Random(seed)
    doomed = {s.id for s in v.servers if s.alive and rng.random() < share}
    dead = replace(v, servers=tuple(replace(s, alive=False) if s.id in doomed else s
                                    for s in v.servers))
    return doomed, dead


def handoff(v: ClusterView, plan: Plan, advance: float = 0.0) -> ClusterView:
    """Like `apply`, but moves take the master's two steps: the task is revoked from its source
    and has drained (`server=None`), with a `MoveInFlight` for the next round to complete."""
    where: dict[str, str | None] = {p.task: p.server for p in plan.placements}
    where.update({m.task: None for m in plan.moves})
    where.update({r.task: None for r in plan.revocations})
    moved = {m.task for m in plan.moves}
    tasks = tuple(
        replace(t, server=where[t.id],
                last_moved_at=v.now if t.id in moved else t.last_moved_at)
        if t.id in where else t
        for t in v.tasks
    )
    over = {p.task for p in plan.placements} | {p.task for p in plan.pending}
    flights = tuple(f for f in v.in_flight if f.task not in over) + tuple(
        MoveInFlight(m.task, m.source, m.target, v.now) for m in plan.moves
    )
    return replace(v, tasks=tasks, in_flight=flights, now=v.now + advance)


def scores(v: ClusterView) -> dict[str, float]:
    """Dominant utilisation of every server."""
    return {sid: max(c, n) for sid, (c, n) in scheduler.utilisation(v).items()}


def group_scores(v: ClusterView, group: str) -> list[float]:
    s = scores(v)
    return [s[x.id] for x in v.servers
            if x.group == group and x.alive and not x.cordoned and not x.draining]


def imbalance(v: ClusterView, group: str = "default") -> float:
    values = group_scores(v, group)
    return max(values) - statistics.fmean(values)


def on(v: ClusterView, sid: str) -> set[str]:
    return {t.id for t in v.tasks if t.server == sid}
