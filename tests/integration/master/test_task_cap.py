"""A server's task cap on a real master, real ZooKeeper and real `exportd-server` processes
(issue 17): a server started with `max_tasks=2` gets 2 of a 4-partition job's tasks, the other 2
wait with a reason that names the cap, the group's advice asks for a server and `exportctl
servers` shows 2/2; a second server with room takes the rest."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from master.api.ports import TaskFilter
from master.process import Master
from tests.integration.master.conftest import PARTITIONS, StartMaster, job_spec, until
from tests.integration.master.test_drain_lifecycle import ctl
from tests.integration.server.harness import process_settings, server_process

DEADLINE = 60.0
REASON = "every schedulable server of group default is at its task cap (2)"


@contextlib.asynccontextmanager
async def server(server_id: str, zookeeper: str, cluster: str,
                 tmp: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    settings = {**process_settings(server_id, zookeeper, cluster, tmp / server_id),
                "runner_factory": "tests.integration.server.harness:fake_factory",
                "lease.initial_heartbeat_interval": "0.2", "max_tasks": "2"}
    (tmp / server_id).mkdir(exist_ok=True)
    async with server_process(settings, tmp / f"{server_id}.log") as proc:
        yield proc


def running_on(master: Master) -> Counter[str | None]:
    return Counter(t.server for t in master.control.list_tasks(TaskFilter(job="capped"))
                   if t.state == "running")


async def test_tasks_beyond_the_cap_wait_then_go_to_a_new_server(
        start_master: StartMaster, zookeeper: str, cluster: str, topic: str,
        tmp_path: Path) -> None:
    m1 = await start_master("m1")
    await m1.wait_leading(30)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(server("s1", zookeeper, cluster, tmp_path))
        await until(lambda: any(s.id == "s1" and s.last_report_unix and s.max_tasks == 2
                                for s in m1.control.list_servers()), DEADLINE, "s1 reporting")
        await m1.control.create_job(job_spec("capped", topic))
        await until(lambda: running_on(m1) == {"s1": 2}, DEADLINE, "2 tasks running on s1")
        tasks = m1.control.list_tasks(TaskFilter(job="capped"))
        pending = [t for t in tasks if t.state == "pending"]
        assert len(pending) == PARTITIONS - 2, [(t.id, t.state) for t in tasks]
        assert all(t.pending_reason == REASON for t in pending), [t.pending_reason
                                                                  for t in pending]
        code, out, err = await ctl(m1, "servers")
        assert code == 0, err
        (row,) = [line for line in out.splitlines() if line.startswith("s1 ")]
        assert " 2/2 " in row, out

        await stack.enter_async_context(server("s2", zookeeper, cluster, tmp_path))
        await until(lambda: running_on(m1) == {"s1": 2, "s2": 2}, DEADLINE,
                    "the other 2 running on s2")
