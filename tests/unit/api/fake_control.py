"""An in-memory ControlPlane for testing the HTTP translation (master/api) and exportctl.

It is a test double of the master's core: jobs split into three tasks each, placed round-robin
on the servers of the job's group; a drain moves one task away each time progress is asked for,
so a waiting client sees it advance. `writes` counts every write call that reached it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import TypeVar

from aiohttp import web

from master.api.handlers import SETTINGS
from master.api.listener import ApiSite
from master.api.ports import (
    DrainProgress,
    GroupView,
    JobView,
    LeaderView,
    PlacementView,
    PlannedChange,
    PlanView,
    Readiness,
    ServerView,
    TaskEvent,
    TaskFilter,
    TaskView,
)
from master.api.settings import ApiSettings
from tasks.errors import Conflict, NotFound, Unavailable
from tasks.spec import JobSpec

PARTITIONS = 3
V = TypeVar("V")


def _server(sid: str, group: str, cpu: float, net: float) -> ServerView:
    return ServerView(id=sid, group=group, address=f"10.0.0.{len(sid)}:7000", alive=True,
                      cordoned=False, draining=False, cpu_capacity=4.0, net_capacity=1e8,
                      cpu_utilisation=cpu, net_utilisation=net, last_report_unix=1000.0,
                      version="0.1.0")


def _lookup(items: Mapping[str, V], key: str, kind: str) -> V:
    if key not in items:
        raise NotFound(f"no {kind} {key}", **{kind: key})
    return items[key]


class FakeControl:
    def __init__(self, *, leads: bool = True, master_id: str = "m1",
                 leader_http: str = "http://127.0.0.1:1") -> None:
        self.leads = leads
        self.master_id = master_id
        self.leader_http = leader_http
        self.has_leader = True
        self.ready = Readiness(True)
        self.writes = 0
        self.jobs: dict[str, JobView] = {}
        self.tasks: dict[str, TaskView] = {}
        self.servers: dict[str, ServerView] = {
            s.id: s for s in (_server("srv-a", "default", 0.42, 0.10),
                              _server("srv-b", "default", 0.18, 0.05),
                              _server("srv-h", "heavy", 0.90, 0.70))}
        self.drain_start: dict[str, int] = {}

    # --- leadership -------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self.leads

    def readiness(self) -> Readiness:
        return self.ready

    def leader(self) -> LeaderView:
        if not self.has_leader:
            raise Unavailable("no leader node in ZooKeeper")
        return LeaderView(id="m1" if self.leads else "m0", grpc="127.0.0.1:7000",
                          http=self.leader_http, epoch=7, since_unix=1000.0,
                          this_master=self.master_id, this_master_leads=self.leads)

    def _write(self) -> None:
        if not self.leads:
            raise Unavailable("not the leader")
        self.writes += 1

    # --- jobs ---------------------------------------------------------------------------------
    async def create_job(self, spec: JobSpec) -> JobView:
        self._write()
        if spec.id in self.jobs:
            raise Conflict(f"job {spec.id} exists", job=spec.id)
        group_servers = sorted(s for s, v in self.servers.items() if v.group == spec.group)
        ids = []
        for p in range(PARTITIONS):
            tid = f"{spec.id}:{spec.source.topic}:{p}"
            server = group_servers[p % len(group_servers)] if group_servers else None
            history: tuple[TaskEvent, ...] = (
                (TaskEvent(1000.0 + p, "placed", "lowest resulting score", server, 1),)
                if server else (TaskEvent(1000.0, "pending", "no server in group"),))
            self.tasks[tid] = TaskView(
                id=tid, job=spec.id, group=spec.group, topic=spec.source.topic, partition=p,
                server=server, generation=1, state="running" if server else "pending",
                pending_reason="" if server else f"no server in group {spec.group}",
                cpu=0.1, net=1000.0, since_unix=1000.0 + p, history=history)
            ids.append(tid)
        job = JobView(spec=spec, state=spec.state, tasks=tuple(ids), created_unix=1000.0)
        self.jobs[spec.id] = job
        self._sync_servers()
        return job

    def list_jobs(self) -> list[JobView]:
        return [self.jobs[k] for k in sorted(self.jobs)]

    def get_job(self, job_id: str) -> JobView:
        return _lookup(self.jobs, job_id, "job")

    async def delete_job(self, job_id: str) -> None:
        self._write()
        job = self.get_job(job_id)
        del self.jobs[job_id]
        for tid in job.tasks:
            self.tasks.pop(tid, None)
        self._sync_servers()

    async def set_job_state(self, job_id: str, state: str) -> JobView:
        self._write()
        job = replace(self.get_job(job_id), state=state)
        self.jobs[job_id] = job
        return job

    # --- tasks --------------------------------------------------------------------------------
    def list_tasks(self, where: TaskFilter) -> list[TaskView]:
        return [replace(t, history=()) for t in sorted(self.tasks.values(), key=lambda t: t.id)
                if (where.job is None or t.job == where.job)
                and (where.server is None or t.server == where.server)
                and (where.group is None or t.group == where.group)
                and (where.state is None or t.state == where.state)]

    def get_task(self, task_id: str) -> TaskView:
        return _lookup(self.tasks, task_id, "task")

    # --- servers ------------------------------------------------------------------------------
    def _sync_servers(self) -> None:
        for sid, view in self.servers.items():
            on = tuple(sorted(t.id for t in self.tasks.values() if t.server == sid))
            self.servers[sid] = replace(view, tasks=on)

    def list_servers(self) -> list[ServerView]:
        return [self.servers[k] for k in sorted(self.servers)]

    def get_server(self, server_id: str) -> ServerView:
        return _lookup(self.servers, server_id, "server")

    async def set_cordon(self, server_id: str, cordoned: bool) -> ServerView:
        self._write()
        view = replace(self.get_server(server_id), cordoned=cordoned)
        self.servers[server_id] = view
        return view

    async def drain(self, server_id: str) -> DrainProgress:
        self._write()
        view = self.get_server(server_id)
        self.servers[server_id] = replace(view, draining=True, cordoned=True)
        self.drain_start[server_id] = len(view.tasks)
        return DrainProgress(server_id, True, len(view.tasks), len(view.tasks))

    def drain_progress(self, server_id: str) -> DrainProgress:
        view = self.get_server(server_id)
        if server_id not in self.drain_start:
            return DrainProgress(server_id, False, len(view.tasks), 0)
        others = sorted(s for s, v in self.servers.items()
                        if v.group == view.group and s != server_id)
        if view.tasks and others:  # one handoff per poll
            tid = view.tasks[0]
            task = self.tasks[tid]
            event = TaskEvent(2000.0, "moved", f"drain of {server_id}", others[0],
                              task.generation + 1)
            self.tasks[tid] = replace(task, server=others[0], generation=task.generation + 1,
                                      history=(*task.history, event))
            self._sync_servers()
        left = len(self.servers[server_id].tasks)
        return DrainProgress(server_id, left > 0, left, self.drain_start[server_id])

    # --- placement ----------------------------------------------------------------------------
    def groups(self) -> list[GroupView]:
        out = []
        for group in sorted({s.group for s in self.servers.values()}):
            tasks = [t for t in self.tasks.values() if t.group == group]
            out.append(GroupView(group=group, servers_alive=sum(
                1 for s in self.servers.values() if s.group == group), utilisation=0.3,
                imbalance=0.1, servers_wanted=1, tasks=len(tasks),
                tasks_pending=sum(1 for t in tasks if t.state == "pending"), reason="ok"))
        return out

    def placement(self) -> PlacementView:
        return PlacementView(servers=tuple(self.list_servers()),
                             tasks=tuple(self.list_tasks(TaskFilter())),
                             groups=tuple(self.groups()))

    def rebalance_dry_run(self) -> PlanView:
        changes = tuple(PlannedChange("move", t.id, "imbalance 0.24 > 0.10", t.server, "srv-b")
                        for t in self.list_tasks(TaskFilter(server="srv-a"))[:1])
        return PlanView(changes=changes, groups=tuple(self.groups()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app: web.Application,
                ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Run `app` on a loopback port (https with `ssl_context`) as a master does (ApiSite);
    yields its base URL; always cleans up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        settings = app[SETTINGS] if SETTINGS in app else ApiSettings()
        site = ApiSite(runner, sock, ssl_context=ssl_context,
                       header_timeout=settings.header_timeout)
        await site.start()
        sockets = runner.addresses
        host, port = sockets[0][:2]
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()
