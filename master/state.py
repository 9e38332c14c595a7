"""The leader's live view: jobs, tasks and servers, rebuilt from ZooKeeper plus reports.

Owned by the event loop; nothing here blocks or does I/O. Changes are tracked so the reconcile
loop can persist exactly the assignment shards that changed (fenced) and then push directives to
exactly the servers whose desired set changed (`dirty_shards`, `push`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from master import decisions
from master.api.ports import TableView, TaskEvent
from master.records import History, ServerRecord, TaskRecord
from master.store import AdminFlags, Snapshot, StoredAssignment, StoredJob, shard_of
from proto import exportd_pb2 as pb
from scheduler.model import ClusterView, Config, Plan, Resources
from tasks.cluster import ServerRegistration
from tasks.ratelimit import task_share
from tasks.runner import parse_task_id, task_id

STATE_NAMES = {
    pb.TASK_STATE_STARTING: "starting", pb.TASK_STATE_RUNNING: "running",
    pb.TASK_STATE_DRAINING: "draining", pb.TASK_STATE_STOPPED: "stopped",
    pb.TASK_STATE_FAILED: "failed",
}


class LiveState:
    def __init__(self, snapshot: Snapshot, now: float, *, alpha: float = 0.3,
                 history: int = 50) -> None:
        self.shards = snapshot.shards
        self.alpha = alpha
        self.jobs: dict[str, StoredJob] = dict(snapshot.jobs)
        self.job_json: dict[str, bytes] = {j: s.spec.to_json() for j, s in self.jobs.items()}
        self.tasks: dict[str, TaskRecord] = {}
        # job -> its number of tasks: each task's share of the job's rate_limit is 1/that.
        self.job_tasks: dict[str, int] = {}
        self.servers: dict[str, ServerRecord] = {}
        self.index: dict[str, set[str]] = {}
        self.history = History(history)
        self.dirty_shards: set[int] = set()
        self.push: set[str] = set()
        # server -> tasks draining there (may hold stale ids; checked on use)
        self.draining: dict[str, set[str]] = {}
        # Iceberg job -> its table as the leader's committer last saw it (master/iceberg/).
        self.tables: dict[str, TableView] = {}
        self.started_at = now
        for tid, stored in snapshot.assignments.items():
            self._adopt(tid, stored, now)
        for sid, reg in snapshot.servers.items():
            self.server(sid, now).register(reg)
        for sid, flags in snapshot.admin.items():
            if sid in self.servers:
                self.servers[sid].admin = flags

    # -- records ---------------------------------------------------------------------------

    def _adopt(self, tid: str, stored: StoredAssignment, now: float) -> None:
        job_id, topic, partition = parse_task_id(tid)
        job = self.jobs.get(job_id)
        rec = TaskRecord(tid, job_id, topic, partition, job.spec.group if job else "",
                         shard_of(tid, self.shards), generation=stored.generation,
                         draining_on=stored.draining_on)
        self.tasks[tid] = rec
        self.job_tasks[job_id] = self.job_tasks.get(job_id, 0) + 1
        decisions.set_server(self.index, rec, stored.server)
        if rec.draining_on is not None:
            self.draining.setdefault(rec.draining_on, set()).add(tid)
        for holder in (stored.server, stored.draining_on):
            if holder is not None:
                self.server(holder, now)   # its lease starts at our takeover

    def server(self, sid: str, now: float) -> ServerRecord:
        rec = self.servers.get(sid)
        if rec is None:
            rec = self.servers[sid] = ServerRecord(sid, last_seen_at=now)
        return rec

    def desired(self, sid: str) -> list[TaskRecord]:
        return [self.tasks[t] for t in sorted(self.index.get(sid, ()))]

    def held_by(self, sid: str) -> list[TaskRecord]:
        """Tasks desired on or still draining on `sid`."""
        ids = set(self.index.get(sid, ()))
        ids.update(t for t in self.draining.get(sid, ()) if self._drains_on(t, sid))
        return [self.tasks[t] for t in sorted(ids)]

    def _drains_on(self, tid: str, sid: str) -> bool:
        rec = self.tasks.get(tid)
        return rec is not None and rec.draining_on == sid

    def _record(self, out: decisions.Applied) -> None:
        for tid, event in out.events:
            self.history.add(tid, event)
        for tid in out.tasks:
            rec = self.tasks.get(tid)
            self.dirty_shards.add(rec.shard if rec else shard_of(tid, self.shards))
            if rec is not None and rec.draining_on is not None:
                self.draining.setdefault(rec.draining_on, set()).add(tid)
        self.push |= out.servers

    def shard_contents(self, shards: Iterable[int]) -> dict[int, dict[str, StoredAssignment]]:
        wanted = set(shards)
        out: dict[int, dict[str, StoredAssignment]] = {i: {} for i in wanted}
        for rec in self.tasks.values():
            if rec.shard in wanted:
                out[rec.shard][rec.id] = rec.stored()
        return out

    # -- servers ---------------------------------------------------------------------------

    def registered(self, reg: ServerRegistration, now: float) -> None:
        self.server(reg.id, now).register(reg)

    def unregistered(self, sid: str) -> None:
        """The ephemeral node is gone; the lease still decides when its tasks move."""
        rec = self.servers.get(sid)
        if rec is not None:
            rec.registration = None

    def set_admin(self, sid: str, flags: AdminFlags, now: float) -> None:
        self.server(sid, now).admin = flags

    def ingest_report(self, report: pb.Report, now: float, now_unix: float) -> None:
        """A report renews the lease, refreshes usage and task loads, and may complete the
        first half of handoffs from this server."""
        srv = self.server(report.server_id, now)
        srv.last_seen_at = now
        srv.dead = False
        srv.reported = True
        srv.last_report_unix = now_unix
        srv.group = report.group or srv.group
        srv.address = report.address or srv.address
        srv.version = report.version or srv.version
        if report.capacity.cpu_cores > 0 or report.capacity.net_bytes_per_s > 0:
            srv.cpu_capacity = report.capacity.cpu_cores
            srv.net_capacity = report.capacity.net_bytes_per_s
        srv.cpu_used = report.usage.cpu_fraction * srv.cpu_capacity
        srv.net_used = report.usage.net_in_bytes_per_s + report.usage.net_out_bytes_per_s
        srv.reported_draining = report.draining
        srv.max_tasks = report.max_tasks or None
        seen: dict[str, str] = {}
        for status in report.tasks:
            state = STATE_NAMES.get(status.state, "")
            seen[status.task_id] = state
            rec = self.tasks.get(status.task_id)
            if rec is None or rec.server != srv.id or status.generation != rec.generation:
                continue
            rec.reported_state = state
            rec.records_per_s = status.records_per_s
            rec.consumer_lag = status.consumer_lag
            rec.committed_offset = status.committed_offset
            rec.last_error = status.last_error
            rec.last_commit_age_s = status.last_commit_age_s
            rec.freshness_s = status.freshness_s
            rec.stalled = status.stalled
            rec.records_total = status.records_total
            rec.bytes_total = status.bytes_total
            rec.exported_total = status.exported_total
            rec.dead_letters_total = status.dead_letters_total
            rec.rate_limited_s = status.rate_limited_s
            if state in {"running", "starting"}:
                rec.load_cpu = decisions.ewma(rec.load_cpu, status.cpu_seconds_per_s, self.alpha)
                rec.load_net = decisions.ewma(rec.load_net, status.bytes_per_s, self.alpha)
        out = decisions.Applied()
        waiting = self.draining.get(srv.id, set())
        for tid in sorted(waiting):
            rec = self.tasks.get(tid)
            if rec is None or rec.draining_on != srv.id:
                waiting.discard(tid)
                continue
            if decisions.released_by_report(rec, seen.get(tid)):
                decisions.release(rec, f"reported {seen.get(tid) or 'gone'} by {srv.id}",
                                  now_unix, out)
                waiting.discard(tid)
        self._record(out)

    def expire(self, now: float, now_unix: float, lease_ttl: float) -> list[str]:
        """Declare servers dead whose lease ran out; release what was draining on them."""
        died = decisions.expire_leases(self.servers.values(), now, lease_ttl)
        if died:
            out = decisions.Applied()
            dead = set(died)
            for rec in self.tasks.values():
                if rec.draining_on in dead:
                    decisions.release(rec, f"lease of {rec.draining_on} ran out", now_unix, out)
                elif rec.server in dead:
                    out.events.append((rec.id, TaskEvent(
                        now_unix, "lost", f"lease of {rec.server} ran out", rec.server,
                        rec.generation)))
            self._record(out)
        return died

    # -- jobs ------------------------------------------------------------------------------

    def put_job(self, job: StoredJob) -> None:
        self.jobs[job.spec.id] = job
        self.job_json[job.spec.id] = job.spec.to_json()
        # A spec change reaches every server running one of its tasks.
        for rec in self.tasks.values():
            if rec.job == job.spec.id:
                rec.group = job.spec.group
                if rec.server is not None:
                    self.push.add(rec.server)

    def drop_job(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.job_json.pop(job_id, None)

    def add_partitions(self, job_id: str, partitions: Mapping[str, int],
                       now_unix: float) -> list[str]:
        """Tasks for partitions (topic -> count) the job has no task for yet; returns the new
        ids. A job may read several topics (tasks/topics.py)."""
        job = self.jobs.get(job_id)
        if job is None:
            return []
        added: list[str] = []
        for topic, count in partitions.items():
            for p in range(count):
                tid = task_id(job_id, topic, p)
                if tid in self.tasks:
                    continue
                rec = TaskRecord(tid, job_id, topic, p, job.spec.group,
                                 shard_of(tid, self.shards), since_unix=None)
                self.tasks[tid] = rec
                self.job_tasks[job_id] = self.job_tasks.get(job_id, 0) + 1
                self.dirty_shards.add(rec.shard)
                self.history.add(tid, TaskEvent(now_unix, "created",
                                                f"partition {p} of {topic} (job {job_id})"))
                added.append(tid)
        return added

    def tasks_of(self, job_id: str) -> list[str]:
        return sorted(t.id for t in self.tasks.values() if t.job == job_id)

    def forget_finished(self) -> None:
        """Tasks of deleted jobs that run nowhere any more leave the assignments."""
        for rec in [t for t in self.tasks.values() if t.job not in self.jobs]:
            if rec.server is None and rec.draining_on is None:
                del self.tasks[rec.id]
                left = self.job_tasks.pop(rec.job, 1) - 1
                if left > 0:
                    self.job_tasks[rec.job] = left
                self.dirty_shards.add(rec.shard)
                self.history.forget(rec.id)

    # -- planning --------------------------------------------------------------------------

    def running_jobs(self) -> set[str]:
        return {j for j, s in self.jobs.items() if s.spec.state == "running"}

    def hints(self) -> dict[str, Resources | None]:
        out: dict[str, Resources | None] = {}
        for j, s in self.jobs.items():
            hint = s.spec.load_hint
            out[j] = Resources(hint.cpu, hint.net) if hint else None
        return out

    def net_caps(self) -> dict[str, float]:
        """Job -> each task's share of the job's bytes/s rate_limit (limited jobs only)."""
        out: dict[str, float] = {}
        for j, s in self.jobs.items():
            share = task_share(s.spec.rate_limit, self.job_tasks.get(j, 0))
            if share is not None and share.bytes_per_s is not None:
                out[j] = share.bytes_per_s
        return out

    def view(self, now: float, config: Config) -> ClusterView:
        return decisions.build_view(now, self.servers.values(), self.tasks.values(),
                                    self.running_jobs(), self.hints(), config,
                                    net_caps=self.net_caps())

    def apply(self, plan: Plan, now: float, now_unix: float) -> decisions.Applied:
        alive = {s.id for s in self.servers.values() if not s.dead}
        out = decisions.apply_plan(plan, self.tasks, self.index, alive, self.running_jobs(), now,
                                   now_unix)
        self._record(out)
        return out
