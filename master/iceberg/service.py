"""`IcebergCommits`: the leader's commit loops, one per Iceberg job, for one leadership term.

Started by the master (master/process.py) next to `Leadership.run`, cancelled when the term
ends. It does nothing until the leader has loaded its view (`ready`), and a job's round runs
only while `term_check` says the term is this master's confirmed leadership: not suspended
(never trust leadership after SUSPENDED), not ended, and still the master's current
`Leadership`. The committer asks `term_check` again right before its catalog commit (from its
thread: the flags are plain booleans), and `rounds.fence` also refuses when the table records
a newer epoch than ours. The catalog's compare-and-swap and the chain rule make even a commit
already in flight when the term ends harmless (docs/architecture/master.md, "Iceberg commits").

Events in, actions out: every JOB_SCAN_S the loops follow the jobs of the live state (a new
Iceberg job gets a loop, a deleted one loses it); each loop runs a round every
`commit_interval` in a thread of its own pool (pyiceberg and S3 block; a hung catalog must
not starve the executor the term's ZooKeeper writes use), then publishes what it saw on the
event loop: the job's `TableView` (`LiveState.tables`), `table_stalled` on the job's tasks
(their state is `stalled` in tasks/explain/metrics), and the exportd_iceberg_* metrics. The
views are refreshed every scan too, so a table whose round hangs still turns stalled in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from master import metrics
from master.api.ports import TableView
from master.iceberg import rounds
from master.iceberg.committer import RoundResult, TableCommitter
from master.reconcile import Leadership
from master.records import TaskRecord
from master.settings import MasterSettings
from tasks.errors import ConfigError
from tasks.iceberg.spec import IcebergSink
from tasks.logs import get_logger

log = get_logger(__name__)

JOB_SCAN_S = 1.0      # how often loops follow the jobs and views are refreshed
ROUND_THREADS = 4     # rounds of different tables that run at once


@dataclass
class _Status:
    """A job's table as its loop last saw it (a cache: the table holds the truth)."""

    sink: IcebergSink
    last: RoundResult = field(default_factory=RoundResult)
    errors: int = 0
    last_error: str = ""
    committed_total: int = 0
    bad_reports: int = 0
    checked_unix: float | None = None
    round_started: float | None = None     # wall clock, while a round runs


class IcebergCommits:
    def __init__(self, lead: Leadership, settings: MasterSettings,
                 current: Callable[[], Leadership | None]) -> None:
        self.lead = lead
        self.settings = settings
        self._current = current
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._status: dict[str, _Status] = {}
        self._task_ids: dict[str, list[str]] = {}
        # Rounds run in threads of their own: a catalog or warehouse that hangs must not take
        # the default executor's few threads, which the term's ZooKeeper writes need.
        self._pool = ThreadPoolExecutor(max_workers=ROUND_THREADS,
                                        thread_name_prefix="iceberg-round")

    def term_check(self) -> str | None:
        """None while this term may commit; else why not. Safe from any thread."""
        lead = self.lead
        if self._current() is not lead or lead.term.lost:
            return "this master's leadership term has ended"
        if lead.term.suspended:
            return "the ZooKeeper session is suspended: leadership is not confirmed"
        if lead.state is None or not lead.ready.is_set():
            return "the leader has not loaded its view of the cluster yet"
        return None

    async def run(self) -> None:
        await self.lead.ready.wait()
        try:
            while not self.lead.term.lost:
                self._follow_jobs()
                now = time.time()
                for job_id in list(self._status):
                    self._publish(job_id, now)
                await asyncio.sleep(JOB_SCAN_S)
        finally:
            loops = list(self._loops.values())
            for loop in loops:
                loop.cancel()
            for loop in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loop
            for job_id in list(self._status):
                self._forget(job_id)
            # A round still running finds the term over at its fence and ends by itself.
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _follow_jobs(self) -> None:
        state = self.lead.state
        if state is None:
            return
        wanted = {jid for jid, job in state.jobs.items() if isinstance(job.spec.sink, IcebergSink)}
        for job_id in sorted(wanted - set(self._loops)):
            self._loops[job_id] = asyncio.create_task(self._job_loop(job_id),
                                                      name=f"iceberg-{job_id}")
        for job_id in sorted(set(self._loops) - wanted):
            self._loops.pop(job_id).cancel()
            self._forget(job_id)

    def _sink(self, job_id: str) -> IcebergSink | None:
        state = self.lead.state
        job = state.jobs.get(job_id) if state is not None else None
        sink = job.spec.sink if job is not None else None
        return sink if isinstance(sink, IcebergSink) else None

    async def _job_loop(self, job_id: str) -> None:
        committer: TableCommitter | None = None
        while not self.lead.term.lost:
            sink = self._sink(job_id)
            if sink is None:
                return
            status = self._status.setdefault(job_id, _Status(sink))
            status.sink = sink
            started = time.monotonic()
            if self.term_check() is None:
                if committer is None or committer.sink != sink:
                    committer = self._committer(job_id, sink, status)
                if committer is not None:
                    status.round_started = time.time()
                    try:
                        result = await asyncio.get_running_loop().run_in_executor(
                            self._pool, committer.round, self.term_check)
                    finally:
                        status.round_started = None
                    self._record(job_id, status, result)
                self._publish(job_id, time.time())
            # Every commit_interval from the start of the round (a long round: at once again).
            await asyncio.sleep(max(0.05, sink.commit_interval - (time.monotonic() - started)))

    def _committer(self, job_id: str, sink: IcebergSink,
                   status: _Status) -> TableCommitter | None:
        try:
            catalog = self.settings.iceberg.catalog(sink.catalog)
        except ConfigError as exc:
            self._record(job_id, status, RoundResult(error=exc.message))
            return None
        return TableCommitter(job_id, sink, catalog, self.lead.term.epoch)

    def _record(self, job_id: str, status: _Status, result: RoundResult) -> None:
        status.last = result
        status.checked_unix = time.time()
        status.committed_total += result.committed_records
        status.bad_reports += result.bad_reports
        if result.bad_reports:
            metrics.ICEBERG_BAD_REPORTS.labels(job=job_id).inc(result.bad_reports)
        if result.committed_reports:
            metrics.ICEBERG_COMMITS.labels(job=job_id).inc()
            metrics.ICEBERG_COMMITTED_RECORDS.labels(job=job_id).inc(result.committed_records)
        failed = rounds.round_failure(error=result.error, refused=result.refused,
                                      term_current=self.term_check() is None)
        if failed:
            status.errors += 1
            status.last_error = failed
            metrics.ICEBERG_COMMIT_ERRORS.labels(job=job_id).inc()
            log.warning("iceberg_round_error", job=job_id, errors=status.errors, error=failed,
                        epoch=self.lead.term.epoch)
        elif not result.refused:
            status.errors = 0

    def _publish(self, job_id: str, now: float) -> None:
        """The job's TableView, its tasks' `table_stalled`, and its metrics, as of `now`."""
        status = self._status.get(job_id)
        state = self.lead.state
        if status is None or state is None:
            return
        sink, last = status.sink, status.last
        age = last.pending.age_s(now)
        errors, last_error = rounds.failures_now(
            errors=status.errors, last_error=status.last_error,
            round_started=status.round_started, now=now, commit_interval=sink.commit_interval)
        reason = rounds.stalled_reason(errors=errors, last_error=last_error,
                                       oldest_pending_age_s=age,
                                       commit_interval=sink.commit_interval)
        state.tables[job_id] = TableView(
            catalog=sink.catalog, namespace=sink.namespace, table=sink.table,
            exists=last.exists, commit_interval_s=sink.commit_interval,
            last_commit_unix=last.last_commit_unix, snapshot_id=last.snapshot_id,
            committed_total=status.committed_total, pending_records=last.pending.records,
            pending_files=last.pending.files, pending_reports=last.pending.reports,
            oldest_pending_age_s=age, consecutive_errors=errors, last_error=last_error,
            bad_reports=status.bad_reports, blocked=dict(last.blocked), stalled_reason=reason,
            checked_unix=status.checked_unix)
        for rec in self._tasks_of(job_id):
            rec.table_stalled = last.blocked.get(f"{rec.topic}/{rec.partition}") or reason
        labels = {"job": job_id}
        metrics.ICEBERG_LAST_COMMIT.labels(**labels).set(last.last_commit_unix or 0.0)
        metrics.ICEBERG_PENDING_RECORDS.labels(**labels).set(last.pending.records)
        metrics.ICEBERG_PENDING_FILES.labels(**labels).set(last.pending.files)
        metrics.ICEBERG_PENDING_REPORTS.labels(**labels).set(last.pending.reports)
        metrics.ICEBERG_OLDEST_PENDING.labels(**labels).set(max(age, 0.0))
        metrics.ICEBERG_STALLED.labels(**labels).set(1 if reason else 0)
        metrics.ICEBERG_BLOCKED.labels(**labels).set(len(last.blocked))

    def _tasks_of(self, job_id: str) -> list[TaskRecord]:
        """The job's task records; its ids are looked up again only when its task count
        changed (a scan of every task per job per second would not do at 100k tasks)."""
        state = self.lead.state
        if state is None:
            return []
        ids = self._task_ids.get(job_id)
        if ids is None or len(ids) != state.job_tasks.get(job_id, 0):
            ids = self._task_ids[job_id] = state.tasks_of(job_id)
        return [rec for rec in (state.tasks.get(t) for t in ids) if rec is not None]

    def _forget(self, job_id: str) -> None:
        """The job is gone or this term ended: no view, no gauges of it from this master."""
        self._status.pop(job_id, None)
        state = self.lead.state
        if state is not None:
            state.tables.pop(job_id, None)
            for rec in self._tasks_of(job_id):
                rec.table_stalled = ""
        self._task_ids.pop(job_id, None)
        for gauge in (metrics.ICEBERG_LAST_COMMIT, metrics.ICEBERG_PENDING_RECORDS,
                      metrics.ICEBERG_PENDING_FILES, metrics.ICEBERG_PENDING_REPORTS,
                      metrics.ICEBERG_OLDEST_PENDING, metrics.ICEBERG_STALLED,
                      metrics.ICEBERG_BLOCKED):
            with contextlib.suppress(KeyError):
                gauge.remove(job_id)
