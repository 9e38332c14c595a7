"""A real `exportd-server` process: registers, runs what it is told, and on SIGTERM reports
draining, drains every task, sends a final report with them STOPPED, deregisters, exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from kazoo.client import KazooClient

from proto import exportd_pb2 as pb
from tasks.cluster import ZkPaths
from tests.integration.server.harness import Coordinator, assignment, wait_until

REPO = Path(__file__).resolve().parents[3]
A, B = "job1:events:0", "job1:events:1"


async def test_sigterm_drains_reports_deregisters_and_exits_0(
        zookeeper: str, cluster: str, zk: KazooClient, paths: ZkPaths,
        coordinator: Coordinator, tmp_path: Path) -> None:
    server_id = "proc-server-1"
    log_path = tmp_path / "server.log"
    args = [
        str(Path(sys.executable).with_name("exportd-server")),
        "--set", f"id={server_id}",
        "--set", f"zookeeper.hosts={zookeeper}",
        "--set", f"zookeeper.cluster={cluster}",
        "--set", "zookeeper.session_timeout=4s",
        "--set", "http.port=0",
        "--set", f"work_dir={tmp_path}",
        "--set", "capacity.worker_processes=1",
        "--set", "runner_factory=tests.integration.server.harness:fake_factory",
        "--set", "log_format=console",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    coordinator.desired = [assignment(A, 1), assignment(B, 1)]
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=log, stderr=log,
                                                    cwd=str(REPO))
        try:
            node = paths.server(server_id)
            await wait_until(lambda: proc.returncode is None and zk.exists(node) is not None,
                             "registered")

            def running() -> bool:
                states = coordinator.latest_task_states()
                return states == {A: pb.TASK_STATE_RUNNING, B: pb.TASK_STATE_RUNNING}

            await wait_until(running, "A and B reported RUNNING")
            reports_before = len(coordinator.reports)
            proc.send_signal(signal.SIGTERM)
            returncode = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert returncode == 0, log_path.read_text()[-3000:]
    after = coordinator.reports[reports_before:]
    assert after and all(r.draining for r in after)
    final = after[-1]
    assert {t.task_id: t.state for t in final.tasks} == {
        A: pb.TASK_STATE_STOPPED, B: pb.TASK_STATE_STOPPED}
    assert zk.exists(node) is None
