"""One leadership term's work: events in, actions out.

`Leadership.run` loads the control state from ZooKeeper into a `LiveState`, then runs rounds on
every event (report that changed something, server join or leave, job change, admin action) and
at least every `reconcile_interval`. A round: expire leases, drop finished tasks, build the
scheduler's view, `plan` it (unless a live server has not told us its capacity yet), apply the
plan with the handoff state machine (master/decisions.py), persist the changed assignment shards
in ONE fenced transaction, and only then push directives to the servers whose set changed.

Every ZooKeeper write of the term goes through `_commit` under one lock, so writes are ordered
and a write is always of the state the loop holds. A write that fails for any reason but bad input
ends the term: the leader's memory may then differ from ZooKeeper, and the safe way back is to
step down and rebuild from ZooKeeper (the next leader, maybe this master again, does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from kazoo.exceptions import KazooException
from kazoo.recipe.watchers import ChildrenWatch

from master import decisions, metrics, story
from master.api.ports import TASK_STATES
from master.election import Op, Term
from master.partitions import PartitionSource
from master.settings import MasterSettings
from master.state import LiveState
from master.store import AdminFlags, Store, StoredJob
from scheduler.model import ClusterView, Config, Plan
from tasks.egress import check_submission
from tasks.errors import Conflict, ExportdError, NotFound, Unavailable, ValidationError
from tasks.iceberg.spec import IcebergSink
from tasks.logs import get_logger
from tasks.spec import JobSpec
from tasks.topics import job_topics, missing_topics, source_field

log = get_logger(__name__)

Planner = Callable[[ClusterView], Plan]


def config_from(settings: MasterSettings) -> Config:
    s = settings.scheduler
    return decisions.scheduler_config(
        s.high_watermark, s.target_watermark, s.imbalance_threshold, s.min_gain, s.move_budget,
        s.cooldown, s.drain_budget, s.default_cpu_estimate, s.default_net_estimate)


def _known_catalog(spec: JobSpec, settings: MasterSettings) -> None:
    """An Iceberg job names a catalog of the masters' settings (a 400 naming the known ones):
    the leader commits to it, and servers are given the same `iceberg` block."""
    sink = spec.sink
    if isinstance(sink, IcebergSink) and sink.catalog not in settings.iceberg.catalogs:
        known = ", ".join(sorted(settings.iceberg.catalogs)) or "none"
        raise ValidationError(f"iceberg catalog {sink.catalog!r} is not configured "
                              f"(iceberg.catalogs: {known})", field="sink.catalog")


def _refuse_existing(state: LiveState, job_id: str) -> None:
    """Conflict if the job exists, or was deleted and some of its tasks have not stopped yet.
    A job submitted again under its id must not adopt those: one still assigned at its old
    generation would keep running the old spec on its server (a server restarts a task for a
    new generation, not for a new spec), so the new spec would be silently ignored."""
    if job_id in state.jobs:
        raise Conflict(f"job {job_id} already exists", job=job_id)
    leftover = state.tasks_of(job_id)
    if leftover:
        raise Conflict(f"job {job_id} was deleted and {len(leftover)} of its tasks have not "
                       f"stopped yet; submit it again once `exportctl tasks --job {job_id}` "
                       "lists none (`exportctl jobs delete --wait` waits for that)",
                       job=job_id, tasks=len(leftover))


NEW_TASK_REASON = "new: waiting for the next placement round"


def _awaiting_placement(state: LiveState, added: Sequence[str]) -> None:
    """New tasks of a running job are pending until a round places them (with a reason),
    not `stopped`, which would read as if someone had stopped them."""
    for tid in added:
        rec = state.tasks.get(tid)
        if rec is not None and rec.job in state.jobs \
                and state.jobs[rec.job].spec.state == "running" and rec.server is None:
            rec.pending_reason = rec.pending_reason or NEW_TASK_REASON


class Leadership:
    def __init__(self, term: Term, store: Store, settings: MasterSettings, planner: Planner,
                 partitions: PartitionSource, step_down: Callable[[], None]) -> None:
        self.term = term
        self.store = store
        self.settings = settings
        self.planner = planner
        self.partitions = partitions
        self._step_down = step_down
        self.config = config_from(settings)
        self.state: LiveState | None = None
        self.last_plan: Plan = Plan()
        self.ready = asyncio.Event()
        self._kick = asyncio.Event()
        self._changed = True
        self._planned_at = float("-inf")
        self._plan_interval = settings.plan_interval_min
        self._server_names: set[str] = set()
        self._view_cache: decisions.ViewCache = {}
        self._stories: story.StoryBook | None = None
        self._names_event = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        # Set by the session service: sends directives to servers whose set changed.
        self.push_directives: Callable[[set[str]], None] = lambda servers: None
        term.on_change = self.kick

    # -- events ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Something changed: run a round (with a plan) soon."""
        self._changed = True
        self._kick.set()

    @property
    def active(self) -> bool:
        return self.term.active and self.state is not None

    def live(self) -> LiveState:
        if self.state is None or not self.term.active:
            raise Unavailable("leadership is suspended or not ready")
        return self.state

    # -- the term --------------------------------------------------------------------------

    async def run(self) -> None:
        started = time.monotonic()
        snapshot = await asyncio.to_thread(self.store.snapshot)
        state = LiveState(snapshot, time.monotonic(), alpha=self.settings.load_ewma_alpha,
                          history=self.settings.task_history)
        # The stories the last leader wrote: explain keeps its history across the change.
        history = story.install(state, snapshot.stories, self.settings.task_history)
        self._stories = story.StoryBook(state, history, self.settings.story_flush_interval)
        self.state = state
        log.info("leader_loaded", epoch=self.term.epoch, jobs=len(snapshot.jobs),
                 tasks=len(snapshot.assignments), servers=len(snapshot.servers),
                 seconds=round(time.monotonic() - started, 3))
        self._watch_servers()
        self.ready.set()
        await self._end_drains_logged()
        helpers = [asyncio.create_task(self._partition_checks(), name="partition-checks"),
                   asyncio.create_task(self._sync_servers(), name="server-sync")]
        try:
            await self._loop_rounds()
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            self.state = None

    async def _loop_rounds(self) -> None:
        interval = self.settings.reconcile_interval
        was_suspended = False
        while not self.term.lost:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), interval)
            self._kick.clear()
            if not self.term.active:
                was_suspended = True
                continue     # SUSPENDED: act on nothing until the session is confirmed
            if was_suspended and self.state is not None:
                # Streams were refused meanwhile: silence is not the servers' fault.
                decisions.renew_all(self.state.servers.values(), time.monotonic())
                was_suspended = False
                log.info("leadership_resumed", epoch=self.term.epoch)
            try:
                await self.round()
            except ExportdError as exc:
                if self.term.lost:
                    break
                log.warning("round_failed", error=exc.message, epoch=self.term.epoch)
            await asyncio.sleep(self.settings.reconcile_min_gap)

    async def round(self) -> None:
        state = self.live()
        async with self._write_lock:
            now, now_unix = time.monotonic(), time.time()
            died = state.expire(now, now_unix, self.settings.lease_ttl)
            if died:
                log.warning("servers_dead", servers=died, epoch=self.term.epoch)
                self._changed = True
            # Timer rounds with no event re-plan less often (measured loads drift slowly; a plan
            # over 100k tasks is not free).
            if self._changed or now - self._planned_at >= self._plan_interval:
                self._changed = False
                self._planned_at = now
                await self._plan(state, now)
            await self._persist_dirty()
            await self._persist_stories(state, now)
        self._push()

    async def _plan(self, state: LiveState, now: float) -> None:
        state.forget_finished()
        unready = decisions.unready_servers(state.servers.values(), now,
                                            state.started_at + self.settings.lease_ttl)
        if unready:
            log.debug("plan_deferred", reason="servers not reported yet", servers=unready[:10])
            self._changed = True      # try again next round
            return
        started = time.perf_counter()
        servers, tasks = list(state.servers.values()), list(state.tasks.values())
        running, hints, config = state.running_jobs(), state.hints(), self.config
        net_caps = state.net_caps()

        cache = self._view_cache

        def build_and_plan() -> Plan:
            if len(cache) > 2 * len(tasks) + 1000:
                cache.clear()      # tasks of deleted jobs
            return self.planner(decisions.build_view(now, servers, tasks, running, hints, config,
                                                     cache, net_caps))

        # Building the view of 100k tasks and planning it take a while: off the event loop, so
        # acks keep flowing. Reports may change records meanwhile (a handoff completing); the
        # plan is applied on the loop, where `apply` re-checks every decision against them.
        plan = await asyncio.to_thread(build_and_plan)
        if self.state is not state or not self.term.active:
            return
        applied = state.apply(plan, time.monotonic(), time.time())
        took = time.perf_counter() - started
        metrics.PLAN_SECONDS.observe(took)
        cfg = self.settings
        self._plan_interval = decisions.plan_interval(
            took, cfg.plan_time_share, cfg.plan_interval_min, cfg.plan_interval_max)
        self.last_plan = plan
        metrics.PLANS.inc()
        for kind, count in applied.moves.items():
            metrics.MOVES.labels(kind=kind).inc(count)
        for tid, event in applied.events:
            if event.kind != "pending":
                log.info("task_" + event.kind, task=tid, server=event.server,
                         generation=event.generation, reason=event.reason)
        self._update_metrics()

    async def _persist_dirty(self) -> None:
        """Write the changed shards (caller holds the write lock)."""
        state = self.live()
        if not state.dirty_shards:
            return
        shards, state.dirty_shards = state.dirty_shards, set()
        ops = self.store.shard_ops(state.shard_contents(shards))
        try:
            await self._commit(ops)
        except ExportdError:
            state.dirty_shards |= shards
            raise

    async def _persist_stories(self, state: LiveState, now: float) -> None:
        """Write the story shards whose tasks' stories changed, every `story_flush_interval`
        (caller holds the write lock; after the assignments: master/story.py)."""
        book = self._stories
        if book is None or book.state is not state or not book.due(now):
            return
        contents = book.collect(now, time.time())
        if not contents:
            return
        try:
            batches = await asyncio.to_thread(self.store.story_ops, contents)
        except KazooException as exc:     # reading which nodes exist: try again next time
            book.give_back()
            log.warning("story_write_deferred", error=repr(exc), epoch=self.term.epoch)
            return
        try:
            for ops in batches:
                await self._commit(ops)
        except ExportdError:
            book.give_back()
            raise

    async def _commit(self, ops: Sequence[Op]) -> None:
        if not self.term.active:
            raise Unavailable("leadership is suspended: not writing")
        try:
            await asyncio.to_thread(self.term.commit, ops)
        except (Conflict, NotFound, ValidationError):
            raise
        except ExportdError as exc:
            log.error("leader_write_failed", error=exc.message, epoch=self.term.epoch)
            self._step_down()
            raise

    def _push(self) -> None:
        state = self.state
        if state is None or not self.term.active or not state.push:
            return
        servers, state.push = state.push, set()
        self.push_directives(servers)

    # -- servers joining and leaving -------------------------------------------------------

    def _watch_servers(self) -> None:
        def changed(children: list[str]) -> bool:
            if self.term.lost:
                return False          # stop watching
            names = set(children)
            self._loop.call_soon_threadsafe(self._names_changed, names)
            return True

        ChildrenWatch(self.store.client, self.store.paths.servers, changed)

    def _names_changed(self, names: set[str]) -> None:
        # Only the latest list matters: a thousand servers joining is one sync, not a thousand.
        self._server_names = names
        self._names_event.set()

    async def _sync_servers(self) -> None:
        while not self.term.lost:
            await self._names_event.wait()
            self._names_event.clear()
            state = self.state
            if state is None:
                continue
            names = self._server_names
            changed = False
            for sid, srv in state.servers.items():
                if sid not in names and srv.registration is not None:
                    log.info("server_left", server=sid)
                    state.unregistered(sid)
                    changed = True
            new = sorted(n for n in names if state.servers.get(n) is None
                         or state.servers[n].registration is None)
            regs = await asyncio.to_thread(self.store.load_servers_named, new)
            now = time.monotonic()
            for reg in regs:
                if reg is not None and self.state is state:
                    log.info("server_joined", server=reg.id, group=reg.group)
                    state.registered(reg, now)
                    changed = True
            if changed:
                self.kick()
                await self._end_drains_logged()

    async def _end_drains_logged(self) -> None:
        try:
            await self.end_finished_drains()
        except ExportdError as exc:
            log.warning("drain_end_failed", error=exc.message, epoch=self.term.epoch)
        except KazooException as exc:     # checked again at the next registration change
            log.warning("drain_end_failed", error=repr(exc), epoch=self.term.epoch)

    async def known_server(self, server_id: str) -> bool:
        """Registered? (Asks ZooKeeper when the watch has not told us yet.)"""
        state = self.live()
        srv = state.servers.get(server_id)
        if srv is not None and srv.registration is not None:
            return True
        reg = await asyncio.to_thread(self.store.load_server, server_id)
        if reg is None:
            return False
        state.registered(reg, time.monotonic())
        return True

    # -- jobs ------------------------------------------------------------------------------

    async def _cluster_topics(self, spec: JobSpec) -> dict[str, int]:
        """Every topic of the job's cluster with its partition count (tasks/topics.py picks)."""
        return await asyncio.to_thread(self.partitions.topics, spec.source.bootstrap_servers)

    async def _partition_checks(self) -> None:
        """At takeover and then periodically: tasks for partitions that have none yet."""
        while not self.term.lost:
            state = self.state
            if state is not None and self.term.active:
                for job in list(state.jobs.values()):
                    try:
                        found = job_topics(job.spec, await self._cluster_topics(job.spec))
                    except Unavailable as exc:
                        log.warning("partition_check_failed", job=job.spec.id, error=exc.message)
                        continue
                    if job.spec.id not in state.jobs:
                        continue
                    added = state.add_partitions(job.spec.id, found, time.time())
                    _awaiting_placement(state, added)
                    if added:
                        log.info("partitions_added", job=job.spec.id, tasks=len(added))
                        self.kick()
            await asyncio.sleep(self.settings.kafka.partition_check_interval)

    async def create_job(self, spec: JobSpec) -> StoredJob:
        # Where it sends data and credentials: a 400 before anything is read or written.
        check_submission(spec, self.settings.egress, self.settings.kafka.access())
        _known_catalog(spec, self.settings)
        _refuse_existing(self.live(), spec.id)
        available = await self._cluster_topics(spec)
        missing = missing_topics(spec, available)
        if missing:
            raise ValidationError(f"topic {', '.join(map(repr, missing))} does not exist",
                                  field=source_field(spec))
        found = job_topics(spec, available)   # a pattern may match nothing yet: no tasks yet
        job = StoredJob(spec, time.time())
        async with self._write_lock:
            state = self.live()
            _refuse_existing(state, spec.id)
            state.put_job(job)
            added = state.add_partitions(spec.id, found, job.created_unix)
            shards, state.dirty_shards = set(state.dirty_shards), set()
            try:
                await self._commit([*self.store.job_ops(job, create=True),
                                    *self.store.shard_ops(state.shard_contents(shards))])
            except ExportdError:
                for tid in added:
                    state.tasks.pop(tid, None)
                state.drop_job(spec.id)
                state.dirty_shards |= shards
                raise
        _awaiting_placement(state, added)
        log.info("job_created", job=spec.id, tasks=len(added), epoch=self.term.epoch)
        self.kick()
        return job

    def _job(self, job_id: str) -> StoredJob:
        job = self.live().jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", job=job_id)
        return job

    async def delete_job(self, job_id: str) -> None:
        async with self._write_lock:
            self._job(job_id)
            await self._commit(self.store.delete_job_ops(job_id))
            self.live().drop_job(job_id)
        log.info("job_deleted", job=job_id, epoch=self.term.epoch)
        self.kick()

    async def set_job_state(self, job_id: str, desired: str) -> StoredJob:
        if desired not in {"running", "paused"}:
            raise ValidationError("state is running or paused", field="state")
        async with self._write_lock:
            job = self._job(job_id)
            new = StoredJob(job.spec.model_copy(update={"state": desired}), job.created_unix)
            await self._commit(self.store.job_ops(new, create=False))
            self.live().put_job(new)
            if desired == "paused":   # unplaced ones are stopped now, not waiting for a place
                for rec in self.live().tasks.values():
                    if rec.job == job_id and rec.server is None:
                        rec.pending_reason = ""
        log.info("job_state", job=job_id, state=desired, epoch=self.term.epoch)
        self.kick()
        return new

    # -- admin -----------------------------------------------------------------------------

    async def set_admin(self, server_id: str, *, cordoned: bool | None = None,
                        draining: bool | None = None) -> AdminFlags:
        """Cordon, uncordon, start or end a drain. A drain remembers which process it is of
        (the registration's ZooKeeper session; `decisions.drain_over`)."""
        async with self._write_lock:
            state = self.live()
            srv = state.servers.get(server_id)
            if srv is None:
                raise NotFound(f"no server {server_id}", server=server_id)
            old = srv.admin
            starts = bool(draining) and not old.draining
            owner = (await asyncio.to_thread(self.store.registration_owner, server_id)
                     if starts else None)
            flags = decisions.admin_flags(
                old, cordoned=cordoned, draining=draining, owner=owner,
                held=len(state.held_by(server_id)) if starts else 0)
            await self._write_admin(state, server_id, flags)
        self.kick()
        return flags

    async def _write_admin(self, state: LiveState, server_id: str, flags: AdminFlags) -> None:
        """Persist a server's flags, then adopt them (caller holds the write lock)."""
        ops = await asyncio.to_thread(self.store.admin_ops, server_id, flags)
        await self._commit(ops)
        state.set_admin(server_id, flags, time.monotonic())

    async def end_finished_drains(self) -> None:
        """Drains whose process is gone and another registered instead end here (a restart
        after `drain`, e.g. a rolling upgrade, needs no manual step): at takeover and after
        every change of the registrations, so a leave and a join seen together still count."""
        state = self.state
        if state is None:
            return
        ids = sorted(sid for sid, srv in state.servers.items() if srv.admin.draining)
        for sid in ids:
            owner = await asyncio.to_thread(self.store.registration_owner, sid)
            async with self._write_lock:
                if self.state is not state or not self.term.active:
                    return
                flags = state.servers[sid].admin
                if not decisions.drain_over(flags, owner):
                    continue
                await self._write_admin(state, sid, decisions.drain_ended(flags))
            log.info("drain_ended", server=sid, reason="another process registered",
                     cordoned=flags.cordoned, epoch=self.term.epoch)
            self.kick()

    # -- metrics ---------------------------------------------------------------------------

    def _update_metrics(self) -> None:
        state = self.state
        if state is None:
            return
        alive: dict[str, int] = {}
        for srv in state.servers.values():
            alive.setdefault(srv.group or "unknown", 0)
            if not srv.dead:
                alive[srv.group or "unknown"] += 1
        for group, n in alive.items():
            metrics.SERVERS_ALIVE.labels(group=group).set(n)
        states: dict[str, int] = dict.fromkeys(TASK_STATES, 0)
        pending: dict[str, int] = {}
        for rec in state.tasks.values():
            s = rec.state
            states[s] = states.get(s, 0) + 1
            if s == "pending":
                pending[rec.group] = pending.get(rec.group, 0) + 1
        for s, n in states.items():
            metrics.TASKS.labels(state=s).set(n)
        for adv in self.last_plan.advice:
            metrics.TASKS_PENDING.labels(group=adv.group).set(pending.get(adv.group, 0))
            metrics.GROUP_UTILISATION.labels(group=adv.group).set(adv.utilisation)
            metrics.GROUP_IMBALANCE.labels(group=adv.group).set(adv.imbalance)
            metrics.GROUP_SERVERS_WANTED.labels(group=adv.group).set(adv.servers_wanted)

    def heartbeat_interval(self) -> float:
        state = self.state
        servers = sum(not s.dead for s in state.servers.values()) if state is not None else 1
        return decisions.heartbeat_interval(servers, self.settings.heartbeat_budget,
                                            self.settings.min_heartbeat_interval)
