"""Tasks in worker processes (tasks/workers): spread over processes, exactly once to S3 when a
worker is killed with -9 mid-stream and the task restarts on a fresh one, and a worker whose
server vanished (its pipe closed) stops its tasks and exits on its own."""

from __future__ import annotations

import collections
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil

from tasks.runner import Assignment, TaskState, task_id
from tasks.spec import JobSpec
from tasks.workers.pool import WorkerPool, WorkerRunner
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    json_records,
    lines,
    new_bucket,
    produce,
    s3_objects,
    unique,
    wait_for,
)
from tools.infra.process import ManagedProcess


@asynccontextmanager
async def worker_pool(kafka: str, s3: str, tmp: Path, processes: int,
                      abort_timeout_s: float = 5.0) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(environment(kafka, tmp, s3), processes, log_json=False,
                      log_level="warning", abort_timeout_s=abort_timeout_s)
    pool.start()
    try:
        yield pool
    finally:
        await pool.aclose()


def assignment(spec: JobSpec, partition: int, generation: int = 1) -> Assignment:
    return Assignment(task_id(spec.id, spec.source.topic, partition), generation, spec, partition)


def s3_job(topic: str, bucket: str, records: int) -> JobSpec:
    return job(topic, {"type": "s3", "bucket": bucket},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               format={"type": "ndjson", "compression": "gzip"},
               rotation={"max_records": records})


async def test_tasks_spread_over_worker_processes_export_every_record(
        kafka: str, s3: str, tmp_path: Path) -> None:
    n, partitions = 4000, 4
    topic = create_topic(kafka, unique("workers"), partitions=partitions)
    for p in range(partitions):
        produce(kafka, topic, json_records(p * n, (p + 1) * n), partition=p)
    bucket = new_bucket(s3)
    spec = s3_job(topic, bucket, 500)
    async with worker_pool(kafka, s3, tmp_path, processes=2) as pool:
        runners = [pool.factory(assignment(spec, p)) for p in range(partitions)]
        for r in runners:
            await r.start()
        try:
            pids = {r.worker.process.pid for r in runners if isinstance(r, WorkerRunner)
                    and r.worker is not None}
            assert len(pids) == 2, "four tasks on two workers: two each"
            await wait_for(lambda: sum(r.stats().records_total for r in runners)
                           >= n * partitions, "every record consumed")
        finally:
            for r in runners:
                await r.stop(drain=True)
        assert [r.stats().state for r in runners] == [TaskState.STOPPED] * partitions
        assert [r.stats().committed_offset for r in runners] == [n] * partitions
    ids = [rec["id"] for rec in lines(s3_objects(s3, bucket, "gzip").values())]
    assert sorted(ids) == list(range(n * partitions))


async def test_worker_killed_mid_stream_then_task_restarts_exports_every_record_once(
        kafka: str, s3: str, tmp_path: Path) -> None:
    n = 20_000
    topic = create_topic(kafka, unique("wkill"))
    produce(kafka, topic, json_records(0, n))
    bucket = new_bucket(s3)
    spec = s3_job(topic, bucket, 100)
    async with worker_pool(kafka, s3, tmp_path, processes=2) as pool:
        first = pool.factory(assignment(spec, 0))
        await first.start()
        assert isinstance(first, WorkerRunner) and first.worker is not None
        dead = first.worker
        await wait_for(lambda: first.stats().committed_offset >= 2000, "some files committed")
        os.kill(dead.process.pid or 0, signal.SIGKILL)
        await wait_for(lambda: first.stats().state is TaskState.FAILED, "the task to fail")
        assert "exited" in first.stats().last_error
        await first.stop(drain=False)   # what the host does before it restarts a failed task

        second = pool.factory(assignment(spec, 0, generation=2))
        await second.start()
        assert isinstance(second, WorkerRunner) and second.worker is not None
        assert second.worker is not dead and second.worker.alive
        try:
            await wait_for(lambda: second.stats().records_total > 0
                           and second.stats().consumer_lag == 0, "the restarted task to catch up")
        finally:
            await second.stop(drain=True)
        assert second.stats().committed_offset == n
    counts = collections.Counter(
        rec["id"] for rec in lines(s3_objects(s3, bucket, "gzip").values()))
    assert sorted(counts) == list(range(n)), "every record exported"
    assert set(counts.values()) == {1}, "and exactly once"


async def test_worker_whose_server_was_killed_stops_its_tasks_and_exits(
        kafka: str, s3: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("orphan"))
    produce(kafka, topic, json_records(0, 100))
    argv = [sys.executable, "-m", "tests.integration.pipeline.pool_main", kafka, topic,
            str(tmp_path)]
    host = ManagedProcess("pool-host", argv, tmp_path / "host.log", cwd=Path.cwd())
    try:
        pid_file = tmp_path / "worker.pid"
        await wait_for(pid_file.exists, "the task running in a worker")
        worker = psutil.Process(int(pid_file.read_text()))
        assert worker.is_running()
        # -9 to the host alone (not its process group): no Shutdown, no atexit; the worker
        # only sees its pipe close.
        os.kill(host.pid, signal.SIGKILL)
        host.proc.wait(timeout=10)
        await wait_for(lambda: not worker.is_running()
                       or worker.status() == psutil.STATUS_ZOMBIE,
                       "the orphaned worker to exit", timeout=30)
        assert "server_gone" in (tmp_path / "host.log").read_text()
    finally:
        host.stop()


async def test_a_fence_on_a_wedged_worker_kills_it(kafka: str, s3: str, tmp_path: Path) -> None:
    """A stop without drain (the lease is lost) must hold even when the worker cannot answer."""
    topic = create_topic(kafka, unique("wedged"))
    produce(kafka, topic, json_records(0, 100))
    spec = job(topic, {"type": "file", "directory": str(tmp_path / "out")})
    async with worker_pool(kafka, s3, tmp_path, processes=1, abort_timeout_s=1.0) as pool:
        r = pool.factory(assignment(spec, 0))
        await r.start()
        assert isinstance(r, WorkerRunner) and r.worker is not None
        wedged = r.worker
        os.kill(wedged.process.pid or 0, signal.SIGSTOP)   # it can no longer answer anything
        await r.stop(drain=False)
        assert not wedged.alive and wedged.process.exitcode == -signal.SIGKILL
        assert r.stats().state is TaskState.STOPPED
        # The next task gets a fresh worker.
        r2 = pool.factory(assignment(spec, 0, generation=2))
        await r2.start()
        assert isinstance(r2, WorkerRunner) and r2.worker is not wedged
        await r2.stop(drain=False)
