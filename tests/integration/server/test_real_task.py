"""A real task on a real `exportd-server`: the pipeline's runner (tasks.factory) built with the
server's defaults and process pool, reading a real Kafka topic into the file sink; SIGTERM drains
it, and every record is in the files exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil

from proto import exportd_pb2 as pb
from tasks.runner import task_id
from tests.integration.pipeline.kit import create_topic, job, json_records, produce, unique
from tests.integration.server.harness import (
    Coordinator,
    assignment,
    exported_ids,
    last_status,
    process_settings,
    server_process,
    wait_until,
)

N = 1000


async def test_real_task_exports_to_files_and_drains_on_sigterm(
        kafka: str, zookeeper: str, cluster: str, coordinator: Coordinator,
        tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("srv"))
    produce(kafka, topic, json_records(0, N))
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out)},
               transform={"parse": {"format": "json"}, "select": "{id: id, path: path}"},
               rotation={"max_records": 300}, dead_letter={"type": "file",
                                                           "directory": str(tmp_path / "dlq")})
    tid = task_id(spec.id, topic, 0)
    coordinator.desired = [assignment(tid, 1, spec)]
    settings = {**process_settings("real-task-server", zookeeper, cluster, tmp_path),
                "kafka.bootstrap_servers": kafka, "capacity.worker_processes": "2"}
    log_path = tmp_path / "server.log"
    async with server_process(settings, log_path) as proc:
        def exported() -> int:
            status = last_status(coordinator, tid, proc, log_path)
            return status.records_total if status is not None else 0

        # Full files (300, 600, 900) are written while running; the drain flushes the rest.
        await wait_until(lambda: exported() >= N, f"{N} records through the task", timeout=90)
        # The transforms ran in the server's worker processes (forkserver + its workers).
        assert len(psutil.Process(proc.pid).children(recursive=True)) >= 2
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), 90)
    assert returncode == 0, log_path.read_text()[-3000:]
    final = coordinator.reports[-1]
    assert [(t.task_id, t.state, t.committed_offset) for t in final.tasks] == [
        (tid, pb.TASK_STATE_STOPPED, N)]
    assert exported_ids(out) == list(range(N))


def worker_pids(server_pid: int) -> set[int]:
    """The server's task workers: the forkserver's children."""
    return {p.pid for child in psutil.Process(server_pid).children()
            for p in child.children()}


async def test_a_killed_worker_process_restarts_its_task_and_loses_nothing(
        kafka: str, zookeeper: str, cluster: str, coordinator: Coordinator,
        tmp_path: Path) -> None:
    n = 30_000
    topic = create_topic(kafka, unique("wkill"))
    produce(kafka, topic, json_records(0, n))
    out = tmp_path / "out"
    spec = job(topic, {"type": "file", "directory": str(out)},
               transform={"parse": {"format": "json"}, "select": "{id: id}"},
               rotation={"max_records": 500}, source={"topic": topic, "batch_size": 100})
    tid = task_id(spec.id, topic, 0)
    coordinator.desired = [assignment(tid, 1, spec)]
    settings = {**process_settings("wkill-server", zookeeper, cluster, tmp_path),
                "kafka.bootstrap_servers": kafka, "session.restart_backoff": "0.2s"}
    log_path = tmp_path / "server.log"
    async with server_process(settings, log_path) as proc:
        def committed() -> int:
            status = last_status(coordinator, tid, proc, log_path)
            return status.committed_offset if status is not None else -1

        await wait_until(lambda: committed() >= 1000, "some files committed", timeout=90)
        (victim,) = worker_pids(proc.pid)
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: committed() == n, "the restarted task to commit every record",
                         timeout=90)
        assert victim not in worker_pids(proc.pid)
        assert "worker_exited" in log_path.read_text()   # and the host restarted the task
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 90) == 0, log_path.read_text()[-3000:]
    ids = exported_ids(out)
    assert sorted(ids) == list(range(n)), "every record exported"
    assert len(ids) == n, "and none twice"
