"""A real ServerHost against real ZooKeeper and a test Coordinator over real gRPC: registration,
reports at the leader's interval, directives, stale epochs and generations, leader change."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import aiohttp
from kazoo.client import KazooClient

from proto import exportd_pb2 as pb
from server.host import ServerHost
from tasks.cluster import ServerRegistration, ZkPaths
from tasks.runner import TaskState
from tests.integration.server.harness import (
    Coordinator,
    FakeFactory,
    assignment,
    master_tls,
    wait_until,
    write_leader,
)

A, B, C = "job1:events:0", "job1:events:1", "job1:events:2"


async def test_registers_its_ephemeral_node(host: ServerHost, zk: KazooClient,
                                            paths: ZkPaths) -> None:
    raw, stat = zk.get(paths.server(host.settings.id))
    registration = ServerRegistration.from_bytes(raw)
    assert stat.ephemeralOwner != 0
    assert registration.id == host.settings.id
    assert registration.address == host.address
    assert registration.cpu_cores >= 1
    assert registration.group == "default"


async def test_reports_at_the_leaders_interval(host: ServerHost,
                                               coordinator: Coordinator) -> None:
    await wait_until(lambda: len(coordinator.reports) >= 8, "8 reports")
    reports = list(coordinator.reports)
    assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    first = reports[0]
    assert first.server_id == host.settings.id
    assert first.capacity.cpu_cores >= 1
    assert first.capacity.net_bytes_per_s == 125_000_000
    assert first.usage.memory_total_bytes > first.usage.memory_rss_bytes > 0
    assert 0.0 <= first.usage.cpu_fraction <= 1.0
    assert first.highest_epoch_seen == 0        # sent before the leader said anything
    assert reports[-1].highest_epoch_seen == 5
    assert not first.draining
    # With no tasks nothing asks for an early report: after the first ack (interval 0.2 s) the
    # reports are never closer together than the interval (a lower bound, not a timing race).
    gaps = [b.sent_at_unix - a.sent_at_unix for a, b in pairwise(reports[1:])]
    assert min(gaps) >= 0.15
    assert host.heartbeat_interval == 0.2


async def test_health_ready_and_metrics(host: ServerHost) -> None:
    await wait_until(host.ready, "ready")
    async with aiohttp.ClientSession(f"http://{host.address}") as http:
        async with http.get("/healthz") as resp:
            assert resp.status == 200
        async with http.get("/readyz") as resp:
            assert resp.status == 200
        async with http.get("/metrics") as resp:
            body = await resp.text()
    assert "exportd_server_lease_remaining_seconds" in body
    assert "exportd_server_reports_total" in body


async def test_directive_starts_tasks_and_revocation_drains(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 1), assignment(B, 1)])
    await wait_until(lambda: factory.running() == {(A, 1), (B, 1)}, "A and B running")
    await wait_until(lambda: coordinator.latest_task_states() == {
        A: pb.TASK_STATE_RUNNING, B: pb.TASK_STATE_RUNNING}, "A and B reported RUNNING")

    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "B stopped")
    assert factory.of(B)[0].stop_calls == [True]     # a handoff: drained
    assert factory.of(A)[0].stop_calls == []
    await wait_until(lambda: any(
        t.task_id == B and t.state == pb.TASK_STATE_STOPPED
        for r in coordinator.reports for t in r.tasks), "B reported STOPPED")
    # Once the leader acknowledged STOPPED, the entry goes.
    await wait_until(lambda: set(coordinator.latest_task_states()) == {A}, "B forgotten")


async def test_stale_epoch_is_ignored(host: ServerHost, coordinator: Coordinator,
                                      factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    # A deposed leader (epoch 4 < 5) says: run nothing.
    coordinator.direct([], epoch=4, remember=False)
    # Then the real leader adds C; messages on a stream are ordered, so once C runs the stale
    # directive has been handled.
    coordinator.direct([assignment(A, 1), assignment(C, 1)])
    await wait_until(lambda: factory.running() == {(A, 1), (C, 1)}, "C running")
    assert factory.of(A)[0].stop_calls == []
    assert len(factory.of(A)) == 1
    assert host.highest_epoch == 5


async def test_stale_generation_is_refused(host: ServerHost, coordinator: Coordinator,
                                           factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 2)])
    await wait_until(lambda: factory.running() == {(A, 2)}, "A@2 running")
    coordinator.direct([])
    await wait_until(lambda: not factory.running(), "A@2 revoked")
    coordinator.direct([assignment(A, 1), assignment(C, 1)])
    await wait_until(lambda: factory.running() == {(C, 1)}, "C running")
    assert [r.generation for r in factory.of(A)] == [2]   # generation 1 never built
    # The same generation again is not stale (e.g. given back after a revoke).
    coordinator.direct([assignment(A, 2)])
    await wait_until(lambda: factory.running() == {(A, 2)}, "A@2 running again")


async def test_a_resubmitted_job_starts_again_from_generation_1(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    """A job deleted and submitted again keeps its task ids, and its tasks count generations
    from 1 again: a server that ran the old ones at generation 2 must not refuse them."""
    coordinator.direct([assignment(A, 2, incarnation=1000)])
    await wait_until(lambda: factory.running() == {(A, 2)}, "A@2 running")
    coordinator.direct([])
    await wait_until(lambda: not factory.running(), "A@2 revoked (the job deleted)")
    coordinator.direct([assignment(A, 1, incarnation=2000)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "the new job's A@1 running")
    # Within the new incarnation, generations are checked as before.
    coordinator.direct([assignment(A, 2, incarnation=2000)])
    await wait_until(lambda: factory.running() == {(A, 2)}, "A@2 of the new job running")
    coordinator.direct([assignment(A, 1, incarnation=2000)])
    coordinator.direct([assignment(A, 2, incarnation=2000), assignment(C, 1)])
    await wait_until(lambda: factory.running() == {(A, 2), (C, 1)}, "C running")
    assert [r.generation for r in factory.of(A)] == [2, 1, 2]   # the stale 1 never built


async def test_directive_drain_stops_everything_gracefully(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 1), assignment(B, 1)])
    await wait_until(lambda: len(factory.running()) == 2, "A and B running")
    coordinator.direct([assignment(A, 1), assignment(B, 1)], drain=True)
    await wait_until(lambda: not factory.running(), "all drained")
    assert all(r.stop_calls == [True] for r in factory.runners)


async def test_leader_change_reconnects_and_tasks_keep_running(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory, zk: KazooClient,
        paths: ZkPaths, cluster: str) -> None:
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    second = Coordinator("master-b", epoch=6, tls=master_tls(cluster, "master-b"))
    second.desired = [assignment(A, 1)]
    await second.start()
    try:
        write_leader(zk, paths, second)
        await wait_until(lambda: len(second.reports) >= 3, "reports at the new leader")
        await wait_until(lambda: host.highest_epoch == 6, "epoch 6 seen")
        assert host.session.target == second.target
        # Same runner throughout: a failover does not restart tasks.
        assert len(factory.of(A)) == 1 and factory.of(A)[0].stop_calls == []
        # The old leader's messages are now stale.
        before = len(factory.runners)
        coordinator.direct([])
        second.direct([assignment(A, 1), assignment(C, 1)])
        await wait_until(lambda: factory.running() == {(A, 1), (C, 1)}, "C via new leader")
        assert len(factory.runners) == before + 1
    finally:
        await second.stop()


def answered_session(coordinator: Coordinator, host: ServerHost, number: int
                     ) -> Callable[[], bool]:
    return lambda: coordinator.sessions >= number and host.ready()


async def test_broken_stream_reconnects_and_tasks_keep_running(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    for sessions in (2, 3):
        coordinator.end_sessions()
        await wait_until(answered_session(coordinator, host, sessions),
                         f"session {sessions} answered")
    assert len(factory.runners) == 1 and factory.runners[0].stop_calls == []


async def test_reregister_recreates_the_node(host: ServerHost, coordinator: Coordinator,
                                             zk: KazooClient, paths: ZkPaths) -> None:
    path = paths.server(host.settings.id)
    await wait_until(lambda: coordinator.sessions == 1 and host.ready(), "first session")
    zk.delete(path)      # as if the node were lost; the leader notices and says so
    coordinator.send(pb.LeaderMessage(epoch=5, reregister=pb.Reregister(reason="unknown")))
    await wait_until(lambda: zk.exists(path) is not None, "node re-created")
    await wait_until(lambda: coordinator.sessions >= 2, "new session")


async def test_node_comes_back_after_session_expiry(host: ServerHost, zookeeper: str,
                                                    zk: KazooClient, paths: ZkPaths) -> None:
    path = paths.server(host.settings.id)
    assert host.registration is not None
    _, stat = zk.get(path)
    old_owner = stat.ephemeralOwner
    # Expire the server's ZooKeeper session: join it from a second client and close that.
    session_id, password = host.registration._client.client_id
    intruder = KazooClient(hosts=zookeeper, client_id=(session_id, password), timeout=5.0)
    intruder.start(timeout=30)
    intruder.stop()
    intruder.close()

    def recreated() -> bool:
        found = zk.exists(path)
        return found is not None and found.ephemeralOwner != old_owner

    await wait_until(recreated, "node re-created by a new session")
    assert host.task_states() == {} or all(
        s is not TaskState.FAILED for s in host.task_states().values())


async def test_shutdown_drains_reports_and_deregisters(
        host: ServerHost, coordinator: Coordinator, factory: FakeFactory, zk: KazooClient,
        paths: ZkPaths) -> None:
    coordinator.direct([assignment(A, 1), assignment(B, 1)])
    await wait_until(lambda: len(factory.running()) == 2, "A and B running")
    await host.shutdown()
    assert [r.stop_calls for r in factory.runners] == [[True], [True]]
    final = coordinator.reports[-1]
    assert final.draining
    assert {t.task_id: t.state for t in final.tasks} == {
        A: pb.TASK_STATE_STOPPED, B: pb.TASK_STATE_STOPPED}
    assert zk.exists(paths.server(host.settings.id)) is None
