"""A forged `leader` znode, written with the masters' own ZooKeeper credential (the strongest
case), pointing at a listener of the test's that holds a master certificate of the cluster and
claims epoch 1000: real servers (in-process ServerHosts, in-test runners) neither follow it nor
get stuck afterwards. They keep their tasks under the real leader, no partition runs on two
servers at any moment, and once the node is restored a real failover to the standby is followed
with no restart (docs/SECURITY.md, "ZooKeeper"; server/reconcile.py, choose_leader)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kazoo.client import KazooClient

from server.host import ServerHost
from tasks.cluster import LeaderInfo, ZkPaths
from tasks.runner import TaskState, task_id
from tests.integration.master.conftest import PARTITIONS, StartMaster, job_spec, until
from tests.integration.server.conftest import server_settings
from tests.integration.server.harness import Coordinator, FakeFactory, assignment, master_tls

FORGED_EPOCH = 1000
WINDOW_S = 6.0      # longer than the servers' lease (4 s): a lost lease would show


@dataclass
class Server:
    host: ServerHost
    factory: FakeFactory

    def running(self) -> set[str]:
        return {r.task_id for r in self.factory.runners if r.state is TaskState.RUNNING}


@contextlib.asynccontextmanager
async def servers(zookeeper: str, cluster: str, count: int) -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    try:
        for i in range(count):
            factory = FakeFactory()
            host = ServerHost(server_settings(zookeeper, cluster, id=f"srv-{i}"), factory)
            started.append(Server(host, factory))
            await host.start()
        yield started
    finally:
        for server in reversed(started):
            await server.host.close()


class Watch:
    """Samples every server's running tasks until stopped: any task running on two servers at
    the same moment is recorded."""

    def __init__(self, fleet: list[Server]) -> None:
        self.fleet = fleet
        self.doubles: list[tuple[float, str]] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            seen: dict[str, str] = {}
            for server in self.fleet:
                for task in server.running():
                    if task in seen:
                        self.doubles.append((time.monotonic(), task))
                    seen[task] = server.host.settings.id
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def forge(zk: KazooClient, paths: ZkPaths, listener: Coordinator) -> bytes:
    """Rewrite `leader` as an attacker holding the masters' credential would; returns what was
    there, to restore it."""
    real, _ = zk.get(paths.leader)
    forged = LeaderInfo(id="forger", grpc=listener.target, http="https://127.0.0.1:1",
                        epoch=FORGED_EPOCH, since_unix=time.time())
    zk.set(paths.leader, forged.to_bytes())
    return bytes(real)


async def test_a_forged_leader_node_neither_takes_servers_over_nor_leaves_them_stuck(
        start_master: StartMaster, zookeeper: str, cluster: str, topic: str, paths: ZkPaths,
        zk: KazooClient) -> None:
    m1 = await start_master("m1")
    real = (await m1.wait_leading(30)).term.epoch
    m2 = await start_master("m2")          # a standby, for the failover after the forgery
    tasks = {task_id("forged", topic, p) for p in range(PARTITIONS)}
    # The attacker's listener: a master certificate of this very cluster (so only the epoch
    # check stands in the way), every task desired on every server that connects.
    listener = Coordinator("forger", epoch=FORGED_EPOCH, tls=master_tls(cluster, "forger"))
    listener.desired = [assignment(t, 1) for t in sorted(tasks)]
    await listener.start()
    try:
        async with servers(zookeeper, cluster, 2) as fleet:
            await until(lambda: all(s.host.ready() for s in fleet), 30, "servers in session")
            await m1.control.create_job(job_spec("forged", topic))
            await until(lambda: set().union(*(s.running() for s in fleet)) == tasks, 30,
                        "every task running")
            before = {s.host.settings.id: s.running() for s in fleet}
            runners = sum(len(s.factory.runners) for s in fleet)
            watch = Watch(fleet)
            try:
                restore = await asyncio.to_thread(forge, zk, paths, listener)
                deadline = time.monotonic() + WINDOW_S
                while time.monotonic() < deadline:
                    for server in fleet:
                        assert server.host.session.target == m1.grpc_address
                        assert server.host.highest_epoch == real
                    await asyncio.sleep(0.1)
                # Nobody obeyed the listener, nothing moved, nothing restarted.
                assert listener.sessions == 0
                assert {s.host.settings.id: s.running() for s in fleet} == before
                assert sum(len(s.factory.runners) for s in fleet) == runners
                assert all(s.host.lease.held(time.monotonic()) for s in fleet)

                # Restore the node; then a real failover: the servers follow the standby's
                # higher epoch at once, with no restart (a remembered 1000 would ignore it).
                await asyncio.to_thread(zk.set, paths.leader, restore)
                await m1.stop()
                lead2 = await m2.wait_leading(30)
                await until(lambda: all(s.host.highest_epoch == lead2.term.epoch
                                        and s.host.session.target == m2.grpc_address
                                        and s.host.ready() for s in fleet), 30,
                            "servers following the new leader")
                assert lead2.term.epoch > real
                await until(lambda: set().union(*(s.running() for s in fleet)) == tasks, 30,
                            "every task running under the new leader")
            finally:
                await watch.stop()
            assert watch.doubles == [], f"tasks ran on two servers: {watch.doubles[:5]}"
    finally:
        await listener.stop()
