"""The export server host: ties registration, the heartbeat session, the lease and the tasks.

Handlers only translate: a leader message passes the epoch check (reconcile.accept_epoch), then
an ack renews the lease and a directive replaces the desired set; after each of these and after
every finished start or stop, `_reconcile` asks the pure `plan_reconcile` what to do and
schedules it. A watchdog self-fences when the lease runs out (lease.Lease). Everything runs on
one asyncio loop, so decisions never race each other; only runners' start/stop are awaited in
the background, one at a time per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

from proto import exportd_pb2 as pb
from server import metrics
from server.http import HttpEndpoint
from server.lease import Lease
from server.reconcile import (
    Desired,
    EpochRead,
    Running,
    Stop,
    Version,
    choose_leader,
    fence_plan,
    judge_epoch,
    newer_epoch,
    plan_reconcile,
)
from server.registration import Registration
from server.sampler import Sampler
from server.session import SessionLoop
from server.settings import ServerSettings
from server.tasktable import TaskEntry, forget_task_metrics, report_tasks
from server.wire import assignment_from_proto
from tasks.cluster import LeaderInfo, ServerRegistration
from tasks.errors import ValidationError
from tasks.logs import get_logger
from tasks.runner import Assignment, RunnerFactory, TaskState

log = get_logger(__name__)

# How often the watchdog looks at the lease: the precision of self-fencing.
WATCHDOG_PERIOD_S = 0.1
# A floor under the leader's heartbeat interval, against a bad value flooding the leader.
MIN_HEARTBEAT_INTERVAL_S = 0.05
# How long a shutdown waits for the leader to acknowledge the final report.
FINAL_ACK_TIMEOUT_S = 5.0
# At most one re-read of the `epoch` znode this often, whatever a leader node or message claims.
EPOCH_RECHECK_GAP_S = 1.0


def _version() -> str:
    try:
        return metadata.version("exportd")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def advertised_host(settings: ServerSettings) -> str:
    return settings.http.advertised_host()


class ServerHost:
    """One export server. `start()`, then `shutdown()` (drain, final report, deregister) or
    `close()` (stop at once)."""

    def __init__(self, settings: ServerSettings, factory: RunnerFactory, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_lease: Callable[[float], None] | None = None,
                 max_tasks: int | None = None) -> None:
        self.settings = settings
        # The task cap reported to the leader (server/main.py derives it from the budget);
        # None: the setting's, else no cap.
        self.max_tasks = max_tasks if max_tasks is not None else settings.max_tasks
        self._factory = factory
        self._clock = clock
        # Told the lease's deadline (on `clock`) at every renewal and -inf when it is dropped:
        # the task workers fence themselves with it (tasks/fence.py, WorkerPool.renew_lease).
        self._on_lease = on_lease
        self.lease = Lease(settings.lease.margin)
        self.highest_epoch = 0      # of the last message obeyed (reported to the leader)
        # The `epoch` znode as last read: the only source of a higher epoch (reconcile.py).
        self.confirmed_epoch: EpochRead | None = None
        self._announced: LeaderInfo | None = None     # the `leader` znode
        self._rechecking = False
        self._last_recheck = float("-inf")
        self._desired: dict[str, Desired[Assignment]] = {}
        self._drain_directive = False
        self._generations: dict[str, Version] = {}
        self._refusals_seen: set[tuple[str, int]] = set()
        self.tasks: dict[str, TaskEntry] = {}
        self._ops: set[asyncio.Task[None]] = set()
        self._interval = settings.lease.initial_heartbeat_interval
        self.draining = False
        self._closed = False
        self._sampler = Sampler(settings.capacity)
        settings.tls.require()   # secure by default: no certificates, no server
        self.session = SessionLoop(self, settings.session, tls=settings.tls,
                                   cluster=settings.zookeeper.cluster)
        self.http = HttpEndpoint(settings.http.host, settings.http.port, self.ready)
        self.registration: Registration | None = None
        self.address = ""
        self._background: list[asyncio.Task[None]] = []
        # seq -> tasks reported STOPPED in it, on the current session.
        self._stopped_in_report: dict[int, list[TaskEntry]] = {}
        self._want_final = False
        self._final_seq: int | None = None
        self._final_acked = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        port = await self.http.start()
        self.address = f"{advertised_host(self.settings)}:{port}"
        payload = ServerRegistration(
            id=self.settings.id, group=self.settings.group, address=self.address,
            cpu_cores=self._sampler.capacity.cpu_cores,
            net_bytes_per_s=self._sampler.capacity.net_bytes_per_s,
            version=_version(), labels=dict(self.settings.labels))
        self.registration = Registration(self.settings.zookeeper, payload,
                                         self._on_leader, self._on_epoch)
        try:
            await self.registration.start()
        except BaseException:
            await self.http.stop()
            raise
        self._background = [asyncio.ensure_future(self.session.run()),
                            asyncio.ensure_future(self._watchdog())]
        metrics.MAX_TASKS.set(self.max_tasks or 0)
        log.info("server_started", server=self.settings.id, address=self.address,
                 cpu_cores=payload.cpu_cores, max_tasks=self.max_tasks)

    def ready(self) -> bool:
        """Registered, in a session the leader answered on, and not shutting down."""
        return bool(self.registration and self.registration.registered
                    and self.session.connected and not self.draining)

    async def shutdown(self) -> None:
        """SIGTERM: want nothing new, drain every task, tell the leader, deregister, stop."""
        if self._closed:
            return
        log.info("shutdown_draining", tasks=len(self.tasks))
        self.draining = True
        self._reconcile()
        self.session.report_now()
        await self._wait_ops(self.settings.session.shutdown_timeout)
        self._want_final = True
        self._final_seq = None
        self.session.report_now()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._final_acked.wait(), FINAL_ACK_TIMEOUT_S)
        await self.close()

    async def close(self) -> None:
        """Stop at once: runners without drain, the session, the node, the HTTP endpoint."""
        if self._closed:
            return
        self._closed = True
        self.session.stop()
        for entry in list(self.tasks.values()):
            self._schedule_stop(Stop(entry.task_id, entry.generation, drain=False,
                                     reason="server closing"))
        await self._wait_ops(self.settings.session.shutdown_timeout)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.registration is not None:
            await self.registration.stop(deregister=True)
        metrics.REGISTERED.set(0)
        metrics.SESSION_UP.set(0)
        await self.http.stop()
        log.info("server_stopped", server=self.settings.id)

    async def _wait_ops(self, timeout: float) -> None:
        deadline = self._clock() + timeout
        while self._ops and (left := deadline - self._clock()) > 0:
            await asyncio.wait(set(self._ops), timeout=left)
        if self._ops:
            log.error("tasks_did_not_stop_in_time", pending=len(self._ops), timeout_s=timeout)

    # --- session callbacks (SessionHost) -----------------------------------------------------

    @property
    def heartbeat_interval(self) -> float:
        return self._interval

    def session_started(self) -> None:
        self._stopped_in_report.clear()
        self._final_seq = None

    def build_report(self, seq: int) -> pb.Report:
        usage = self._sampler.sample()
        metrics.CPU_UTILISATION.set(usage.cpu_fraction)
        metrics.NET_BYTES_PER_SECOND.labels(direction="in").set(usage.net_in_bytes_per_s)
        metrics.NET_BYTES_PER_SECOND.labels(direction="out").set(usage.net_out_bytes_per_s)
        statuses = report_tasks(self.tasks)
        self._stopped_in_report[seq] = [
            entry for entry, status in statuses if status.state == pb.TASK_STATE_STOPPED]
        self._stopped_in_report.pop(seq - 64, None)   # unacked reports are not kept forever
        if self._want_final and self._final_seq is None and not self._ops:
            self._final_seq = seq
        return pb.Report(
            server_id=self.settings.id, group=self.settings.group, address=self.address,
            capacity=self._sampler.capacity, usage=usage,
            tasks=[status for _, status in statuses], seq=seq,
            highest_epoch_seen=self.highest_epoch, version=_version(),
            labels=dict(self.settings.labels), sent_at_unix=time.time(), draining=self.draining,
            max_tasks=self.max_tasks or 0)

    def handle(self, message: pb.LeaderMessage) -> None:
        verdict = judge_epoch(message.epoch, self.confirmed_epoch)
        if verdict != "obey":
            metrics.STALE_MESSAGES.inc()
            confirmed = self.confirmed_epoch.version if self.confirmed_epoch else None
            event = "stale_epoch_ignored" if verdict == "stale" else "unconfirmed_epoch_refused"
            log.warning(event, epoch=message.epoch, confirmed=confirmed,
                        kind=message.WhichOneof("body"))
            if verdict == "unconfirmed":
                self._recheck_epoch()
            return
        self.highest_epoch = message.epoch
        kind = message.WhichOneof("body")
        if kind == "ack":
            self._on_ack(message.ack)
        elif kind == "directive":
            self._on_directive(message.directive)
        elif kind == "reregister":
            log.warning("reregister_requested", reason=message.reregister.reason)
            if self.registration is not None:
                self.registration.register_soon()
            self.session.reconnect(backoff=True)

    # --- which leader: the `leader` and `epoch` znodes (reconcile.choose_leader) ---------------

    def _on_leader(self, info: LeaderInfo | None) -> None:
        self._announced = info
        self._follow()

    def _on_epoch(self, read: EpochRead | None) -> None:
        self.confirmed_epoch = newer_epoch(self.confirmed_epoch, read)
        self._follow()

    def _follow(self) -> None:
        announced = self._announced
        decision = choose_leader(announced, self.confirmed_epoch, self.session.leader)
        if decision == "follow" and announced is not None:
            self.session.set_leader(announced)
        elif decision == "recheck" and announced is not None:
            log.warning("leader_epoch_unconfirmed", leader=announced.id, epoch=announced.epoch,
                        confirmed=self.confirmed_epoch.version if self.confirmed_epoch else None)
            self._recheck_epoch()

    def _recheck_epoch(self) -> None:
        """Re-read the `epoch` znode in the background: one read at a time, at most one per
        EPOCH_RECHECK_GAP_S, so a lying leader node or listener costs ZooKeeper next to nothing."""
        now = self._clock()
        if (self._rechecking or self.registration is None or self._closed
                or now - self._last_recheck < EPOCH_RECHECK_GAP_S):
            return
        self._rechecking = True
        self._last_recheck = now
        registration = self.registration

        async def recheck() -> None:
            try:
                read = await registration.read_epoch()
            finally:
                self._rechecking = False
            self._on_epoch(read)

        task = asyncio.ensure_future(recheck())
        self._background.append(task)

    def _on_ack(self, ack: pb.Ack) -> None:
        now = self._clock()
        if self.lease.must_self_fence(now):
            # An ack read after the lease ran out (the process was stopped, or its loop wedged,
            # past the deadline) must not revive tasks the leader may have given away: fence
            # first; the fresh session's acks and directive start what is still ours.
            self._self_fence()
            return
        self.session.mark_answered()
        self.lease.renew(now, ack.lease_ttl_s)
        if self._on_lease is not None:
            self._on_lease(now + self.lease.window_s)
        if ack.heartbeat_interval_s > 0:
            self._interval = max(ack.heartbeat_interval_s, MIN_HEARTBEAT_INTERVAL_S)
        for seq in [s for s in self._stopped_in_report if s <= ack.report_seq]:
            for entry in self._stopped_in_report.pop(seq):
                entry.final_acked = True
        if self._final_seq is not None and ack.report_seq >= self._final_seq:
            self._final_acked.set()
        self._reconcile()

    def _on_directive(self, directive: pb.Directive) -> None:
        desired: dict[str, Desired[Assignment]] = {}
        for item in directive.desired:
            try:
                assignment = assignment_from_proto(item)
            except ValidationError as exc:
                metrics.REFUSED_ASSIGNMENTS.labels(reason="invalid_spec").inc()
                log.error("assignment_invalid", task=item.task_id, error=exc.message)
                continue
            desired[item.task_id] = Desired(item.task_id, item.generation, assignment,
                                            item.incarnation)
        log.info("directive", seq=directive.seq, tasks=len(desired), drain=directive.drain)
        self._desired = desired
        self._drain_directive = directive.drain
        self._reconcile()

    # --- reconcile and lease -----------------------------------------------------------------

    def _running(self, now: float) -> dict[str, Running]:
        return {task_id: entry.running_view(entry.stats().state, now)
                for task_id, entry in self.tasks.items()}

    def _reconcile(self) -> None:
        if self._closed:
            return
        now = self._clock()
        stopping = self.draining or self._drain_directive
        plan = plan_reconcile(
            {} if stopping else self._desired, self._running(now), self._generations,
            may_start=self.lease.held(now) and not stopping, now=now,
            restart_backoff_s=self.settings.session.restart_backoff)
        self._generations = dict(plan.generations)
        for refusal in plan.refused:
            if (refusal.task_id, refusal.generation) not in self._refusals_seen:
                self._refusals_seen.add((refusal.task_id, refusal.generation))
                metrics.REFUSED_ASSIGNMENTS.labels(reason="stale_generation").inc()
                log.warning("assignment_refused", task=refusal.task_id,
                            generation=refusal.generation, reason=refusal.reason)
        for stop in plan.stop:
            self._schedule_stop(stop)
        for want in plan.start:
            self._schedule_start(want)
        for task_id in plan.forget:
            forget_task_metrics(self.tasks.pop(task_id))

    async def _watchdog(self) -> None:
        while not self._closed:
            now = self._clock()
            metrics.LEASE_REMAINING.set(self.lease.remaining(now))
            metrics.REGISTERED.set(bool(self.registration and self.registration.registered))
            metrics.SESSION_UP.set(self.session.connected)
            if self.lease.must_self_fence(now):
                self._self_fence()
            await asyncio.sleep(WATCHDOG_PERIOD_S)

    def _self_fence(self) -> None:
        """No ack for lease_ttl - margin: the leader may soon give our tasks to others. Stop them
        all without committing more, forget the desired set (only a directive that follows a
        renewed lease starts anything again), and open a fresh session, on which the leader
        sends the full desired set."""
        metrics.SELF_FENCES.inc()
        stops = fence_plan(self._running(self._clock()))
        log.warning("self_fencing", tasks=len(stops), lease_ttl_s=self.lease.ttl_s,
                    margin_s=self.lease.margin_s)
        self.lease.drop()
        if self._on_lease is not None:
            self._on_lease(-math.inf)
        self._desired = {}
        for stop in stops:
            self._schedule_stop(stop)
        self.session.reconnect()

    # --- carrying out the plan ----------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._ops.add(task)
        task.add_done_callback(self._ops.discard)
        return task

    def _schedule_start(self, want: Desired[Assignment]) -> None:
        old = self.tasks.get(want.task_id)
        failed = old is not None and old.failed_at is not None
        entry = TaskEntry(want.task_id, want.payload.job.id, want.generation,
                          want.incarnation, pending=1, started_at=self._clock(),
                          failures_before=old.failures() if old is not None else 0,
                          previous_error=old.stats().last_error if old and failed else "")
        self.tasks[want.task_id] = entry
        self._spawn(self._start(entry, want.payload, old))

    def _schedule_stop(self, stop: Stop) -> None:
        entry = self.tasks.get(stop.task_id)
        if entry is None or entry.stopped:
            return
        if not stop.drain and entry.drain_op is not None and not entry.drain_op.done():
            # A fence (or close) does not wait for a drain under way: the lease is gone, and
            # the leader may hand the task to another server once lease_ttl has passed.
            entry.drain_op.cancel()
        entry.pending += 1
        op = self._spawn(self._stop(entry, stop))
        # In a callback, not in _stop's finally: a drain cancelled by a fence before its first
        # step never runs its coroutine, and the entry would stay busy (never restarted).
        op.add_done_callback(lambda _op: self._stop_done(entry))
        if stop.drain:
            entry.drain_op = op

    async def _start(self, entry: TaskEntry, assignment: Assignment,
                     old: TaskEntry | None) -> None:
        bound = log.bind(task=entry.task_id, generation=entry.generation)
        try:
            if old is not None and old.runner is not None and not old.stopped:
                await self._release(old, drain=False)   # a FAILED runner being restarted
            async with entry.lock:
                if entry.stopped:   # fenced or closed before it got going
                    return
                entry.runner = self._factory(assignment)
                await entry.runner.start()
            bound.info("task_started")
        except Exception as exc:  # the runner is another module's code: report, never crash
            entry.error = f"start failed: {exc}"
            bound.error("task_start_failed", error=repr(exc))
        finally:
            entry.pending -= 1
            self._after_op()

    async def _stop(self, entry: TaskEntry, stop: Stop) -> None:
        await self._release(entry, drain=stop.drain)
        log.info("task_stopped", task=entry.task_id, generation=entry.generation,
                 drain=stop.drain, reason=stop.reason)

    def _stop_done(self, entry: TaskEntry) -> None:
        entry.pending -= 1
        self._after_op()

    async def _release(self, entry: TaskEntry, *, drain: bool) -> None:
        async with entry.lock:
            if entry.stopped:
                return
            try:
                if entry.runner is not None:
                    await entry.runner.stop(drain=drain)
            except asyncio.CancelledError:
                # An interrupted drain: not stopped yet, the stop without drain that
                # interrupted it follows.
                log.warning("drain_interrupted", task=entry.task_id)
                raise
            except Exception as exc:
                entry.error = f"stop failed: {exc}"
                log.error("task_stop_failed", task=entry.task_id, error=repr(exc))
            entry.stopped = True
            entry.final_acked = False

    def _after_op(self) -> None:
        # The leader should see a start or a finished drain at once (a handoff waits on it).
        self.session.report_now()
        self._reconcile()

    def task_states(self) -> dict[str, TaskState]:
        """For tests and logs: each task's state as the host reports it."""
        return {task_id: entry.stats().state for task_id, entry in self.tasks.items()}
