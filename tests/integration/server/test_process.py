"""A real `exportd-server` process: registers, runs what it is told, and on SIGTERM reports
draining, drains every task, sends a final report with them STOPPED, deregisters, exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from kazoo.client import KazooClient

from proto import exportd_pb2 as pb
from tasks.cluster import ZkPaths
from tests.integration.server.harness import (
    Coordinator,
    assignment,
    process_settings,
    server_process,
    wait_until,
)

A, B = "job1:events:0", "job1:events:1"


async def test_sigterm_drains_reports_deregisters_and_exits_0(
        zookeeper: str, cluster: str, zk: KazooClient, paths: ZkPaths,
        coordinator: Coordinator, tmp_path: Path) -> None:
    server_id = "proc-server-1"
    node = paths.server(server_id)
    settings = {**process_settings(server_id, zookeeper, cluster, tmp_path),
                "runner_factory": "tests.integration.server.harness:fake_factory"}
    coordinator.desired = [assignment(A, 1), assignment(B, 1)]
    log_path = tmp_path / "server.log"
    async with server_process(settings, log_path) as proc:
        await wait_until(lambda: proc.returncode is None and zk.exists(node) is not None,
                         "registered")
        await wait_until(lambda: coordinator.latest_task_states() == {
            A: pb.TASK_STATE_RUNNING, B: pb.TASK_STATE_RUNNING}, "A and B reported RUNNING")
        reports_before = len(coordinator.reports)
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), 60)
    assert returncode == 0, log_path.read_text()[-3000:]
    after = coordinator.reports[reports_before:]
    assert after and all(r.draining for r in after)
    assert {t.task_id: t.state for t in after[-1].tasks} == {
        A: pb.TASK_STATE_STOPPED, B: pb.TASK_STATE_STOPPED}
    assert zk.exists(node) is None
