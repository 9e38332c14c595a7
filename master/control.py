"""`MasterControl`: the `ControlPlane` the HTTP API calls (master/api/ports.py).

While this master leads (and its session is not suspended) reads come from the live view and
writes go through the term's fenced writes. Otherwise reads come from ZooKeeper alone (a snapshot
`StandbyReader` refreshes in a thread every few seconds, so no handler blocks on ZooKeeper) and
writes raise Unavailable (the API forwards them to the leader named by `leader()`).

A master never serves a view older than its last term: the standby snapshot is dropped when a
term begins or ends and whenever the ZooKeeper connection is not CONNECTED (`invalidate`), and a
read that started before that is thrown away; until a fresh read lands, reads answer 503. A
master whose ZooKeeper client is not connected answers 503 at once, saying so: it cannot tell
whether what it holds is still true (a suspended leader included).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from master import story, views
from master.api.ports import (
    DrainProgress,
    GroupView,
    JobView,
    LeaderView,
    PlacementView,
    PlanView,
    Readiness,
    ServerView,
    TaskFilter,
    TaskView,
)
from master.election import current_leader
from master.reconcile import Leadership, Planner
from master.state import LiveState
from master.store import Store
from scheduler.model import Config, Plan
from tasks.cluster import LeaderInfo
from tasks.errors import Unavailable
from tasks.logs import get_logger
from tasks.spec import JobSpec

log = get_logger(__name__)


@dataclass(slots=True)
class _Standby:
    state: LiveState
    leader: LeaderInfo | None
    plan: Plan
    read_at: float


class StandbyReader:
    """A periodically refreshed picture of the cluster from ZooKeeper alone.

    The `leader` node is read every interval; the full snapshot (every job, shard and
    registration) only while someone reads it (within `idle_after` of the last read), so an
    idle standby of a 100k-task cluster does not decode it every few seconds."""

    def __init__(self, store: Store, planner: Planner, config: Config,
                 interval: float = 2.0, idle_after: float = 60.0) -> None:
        self.store = store
        self.planner = planner
        self.config = config
        self.interval = interval
        self.idle_after = idle_after
        self._current: _Standby | None = None
        self._used_at = time.monotonic()
        # Bumped by `invalidate`: a read started under an older generation is not kept.
        self._generation = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        store.client.add_listener(self._on_zk_state)

    @property
    def connected(self) -> bool:
        """The ZooKeeper client is connected (read without blocking)."""
        return bool(self.store.client.connected)

    def invalidate(self) -> None:
        """Forget the snapshot (a term began or ended, or the session wavered) and re-read soon.
        Safe from any thread (kazoo's listener thread included)."""
        self._generation += 1
        self._current = None
        self._wake_up()

    def _wake_up(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _on_zk_state(self, state: str) -> None:
        """kazoo's connection listener: never blocks."""
        if state != KazooState.CONNECTED:
            self.invalidate()
        else:
            self._wake_up()   # read afresh now rather than at the next interval

    @property
    def current(self) -> _Standby | None:
        self._used_at = time.monotonic()
        return self._current

    @property
    def has_view(self) -> bool:
        return self._current is not None

    @property
    def leader(self) -> LeaderInfo | None:
        return self._current.leader if self._current is not None else None

    def _read(self, full: bool) -> _Standby:
        leader = current_leader(self.store.client, self.store.paths)
        now = time.monotonic()
        if not full and self._current is not None:
            return _Standby(self._current.state, leader, self._current.plan, now)
        snapshot = self.store.snapshot()
        state = LiveState(snapshot, now)
        story.install(state, snapshot.stories, state.history.limit)
        return _Standby(state, leader, self.planner(state.view(now, self.config)), now)

    async def refresh(self) -> None:
        full = time.monotonic() - self._used_at < self.idle_after
        generation = self._generation
        if not self.connected:
            return
        try:
            current = await asyncio.to_thread(self._read, full)
        except KazooException as exc:
            log.warning("standby_read_failed", error=repr(exc))
            return
        if generation == self._generation:   # nothing ended or wavered while it read
            self._current = current

    async def run(self, leading: Callable[[], bool]) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            if not leading():
                await self.refresh()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)


class MasterControl:
    def __init__(self, master_id: str, leadership: Callable[[], Leadership | None],
                 standby: StandbyReader, planner: Planner, config: Config) -> None:
        self.master_id = master_id
        self._leadership = leadership
        self.standby = standby
        self.planner = planner
        self.config = config

    # -- which source --------------------------------------------------------------------------

    def _lead(self) -> Leadership | None:
        lead = self._leadership()
        return lead if lead is not None and lead.active else None

    def _writer(self) -> Leadership:
        lead = self._lead()
        if lead is None:
            raise Unavailable("this master does not lead: send writes to the leader")
        return lead

    def _source(self) -> tuple[LiveState, Plan]:
        lead = self._lead()
        if lead is not None and lead.state is not None:
            return lead.state, lead.last_plan
        if not self.standby.connected:
            raise Unavailable("this master is cut off from ZooKeeper and cannot vouch for any "
                              "view of the cluster; ask another master")
        cur = self.standby.current
        if cur is None:
            raise Unavailable("no current view of the cluster yet (reading ZooKeeper afresh "
                              "after a leadership or session change); retry in a few seconds")
        return cur.state, cur.plan

    # -- ControlPlane --------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._lead() is not None

    def readiness(self) -> Readiness:
        lead = self._leadership()
        if lead is not None:
            if lead.term.suspended:
                return Readiness(False, ("leadership suspended: ZooKeeper connection lost",))
            if not lead.ready.is_set():
                return Readiness(False, ("leader loading state from ZooKeeper",))
            return Readiness(True)
        reasons: list[str] = []
        if not self.standby.has_view:
            reasons.append("no view of the cluster from ZooKeeper yet")
        elif self.standby.leader is None:
            reasons.append("no leader elected")
        return Readiness(not reasons, tuple(reasons))

    def leader(self) -> LeaderView:
        lead = self._lead()
        info = lead.term.info if lead is not None else None
        if info is None:
            info = self.standby.leader
        if info is None:
            raise Unavailable("no leader elected")
        return LeaderView(id=info.id, grpc=info.grpc, http=info.http, epoch=info.epoch,
                          since_unix=info.since_unix, this_master=self.master_id,
                          this_master_leads=lead is not None)

    async def create_job(self, spec: JobSpec) -> JobView:
        lead = self._writer()
        await lead.create_job(spec)
        return views.job_view(lead.live(), spec.id)

    def list_jobs(self) -> list[JobView]:
        return views.list_jobs(self._source()[0])

    def get_job(self, job_id: str) -> JobView:
        return views.job_view(self._source()[0], job_id)

    async def delete_job(self, job_id: str) -> None:
        await self._writer().delete_job(job_id)

    async def set_job_state(self, job_id: str, state: str) -> JobView:
        lead = self._writer()
        await lead.set_job_state(job_id, state)
        return views.job_view(lead.live(), job_id)

    def list_tasks(self, where: TaskFilter) -> list[TaskView]:
        return views.list_tasks(self._source()[0], where)

    def get_task(self, task_id: str) -> TaskView:
        return views.get_task(self._source()[0], task_id)

    def list_servers(self) -> list[ServerView]:
        return views.list_servers(self._source()[0])

    def get_server(self, server_id: str) -> ServerView:
        return views.get_server(self._source()[0], server_id)

    async def set_cordon(self, server_id: str, cordoned: bool) -> ServerView:
        """`uncordon` is the one way back to work: it clears the cordon AND a drain (a drain
        also ends by itself when the drained process is replaced; docs/OPERATIONS.md)."""
        lead = self._writer()
        await lead.set_admin(server_id, cordoned=cordoned, draining=None if cordoned else False)
        return views.get_server(lead.live(), server_id)

    async def drain(self, server_id: str) -> DrainProgress:
        lead = self._writer()
        await lead.set_admin(server_id, draining=True)
        return views.drain_progress(lead.live(), server_id)

    def drain_progress(self, server_id: str) -> DrainProgress:
        return views.drain_progress(self._source()[0], server_id)

    def placement(self) -> PlacementView:
        state, plan = self._source()
        return PlacementView(
            servers=tuple(views.list_servers(state)),
            tasks=tuple(views.list_tasks(state, TaskFilter())),
            groups=tuple(views.group_views(state, plan)))

    def groups(self) -> list[GroupView]:
        state, plan = self._source()
        return views.group_views(state, plan)

    def rebalance_dry_run(self) -> PlanView:
        state, _ = self._source()
        plan = views.dry_run(state, self.planner, self.config, time.monotonic())
        return views.plan_view(state, plan)

