"""A server believes an epoch only once ZooKeeper's `epoch` znode confirms it (real ZooKeeper, a
real ServerHost, the test's leader double): a message claiming a higher epoch on the session is
refused and never remembered, and a `leader` node announcing a new term is followed as soon as
the bump it claims is in the `epoch` znode, even when the node is written before the bump."""

from __future__ import annotations

import asyncio

from kazoo.client import KazooClient

from server.host import ServerHost
from tasks.cluster import ZkPaths
from tests.integration.server.harness import (
    Coordinator,
    FakeFactory,
    assignment,
    master_tls,
    set_epoch,
    wait_until,
    write_leader,
)

A, B = "job1:events:0", "job1:events:1"


async def test_a_higher_unconfirmed_epoch_on_the_session_is_refused_and_not_remembered(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    # The leader (or whoever answers at its address) claims epoch 1000: run B instead of A.
    coordinator.direct([assignment(B, 1)], epoch=1000, remember=False)
    # Then the confirmed epoch 5 adds B; messages on a stream are ordered.
    coordinator.direct([assignment(A, 1), assignment(B, 1)])
    await wait_until(lambda: factory.running() == {(A, 1), (B, 1)}, "B via epoch 5")
    assert factory.of(A)[0].stop_calls == []
    assert host.highest_epoch == 5
    assert host.confirmed_epoch is not None and host.confirmed_epoch.version == 5


async def test_a_new_term_is_followed_once_the_epoch_znode_confirms_it(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory, zk: KazooClient,
        paths: ZkPaths, cluster: str) -> None:
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    second = Coordinator("master-b", epoch=6, tls=master_tls(cluster, "master-b"))
    second.desired = [assignment(A, 1)]
    await second.start()
    try:
        # The `leader` node first, the bump later: not followed until ZooKeeper confirms.
        data = second.leader_info().to_bytes()
        zk.set(paths.leader, data)
        await wait_until(lambda: host._announced is not None and host._announced.epoch == 6,
                         "the leader node seen")
        await asyncio.sleep(0.5)    # time to (wrongly) connect, were it believed
        assert second.sessions == 0
        assert host.session.target == coordinator.target
        set_epoch(zk, paths, 6)
        await wait_until(lambda: host.session.target == second.target and host.ready(),
                         "following the confirmed new leader")
        await wait_until(lambda: host.highest_epoch == 6, "epoch 6 obeyed")
        assert len(factory.of(A)) == 1 and factory.of(A)[0].stop_calls == []
        # The old leader's messages are now stale.
        coordinator.direct([])
        second.direct([assignment(A, 1), assignment(B, 1)])
        await wait_until(lambda: factory.running() == {(A, 1), (B, 1)}, "B via new leader")
        # write_leader (the usual way) works too: the node and the bump in one go.
        write_leader(zk, paths, second)
    finally:
        await second.stop()
