"""Self-fencing against a real coordinator that stops acknowledging: the server stops every task
(without drain) after lease_ttl - margin without an ack, not before, and runs them again when a
directive follows a renewed lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from proto import exportd_pb2 as pb
from server import metrics
from server.host import ServerHost
from tasks.runner import TaskState
from tests.integration.server.conftest import server_settings
from tests.integration.server.harness import Coordinator, FakeFactory, assignment, wait_until

A, B = "job1:events:0", "job1:events:1"
LEASE_TTL_S = 6.0
MARGIN_S = 2.0
WINDOW_S = LEASE_TTL_S - MARGIN_S


@pytest.fixture
async def leased_host(zookeeper: str, cluster: str, coordinator: Coordinator,
                      factory: FakeFactory) -> AsyncIterator[ServerHost]:
    coordinator.lease_ttl_s = LEASE_TTL_S
    server = ServerHost(server_settings(zookeeper, cluster, margin=MARGIN_S), factory)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def fences() -> float:
    return metrics.REGISTRY.get_sample_value("exportd_server_self_fences_total") or 0.0


async def test_self_fences_after_ttl_minus_margin_and_not_before(
        leased_host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    coordinator.direct([assignment(A, 1), assignment(B, 1)])
    await wait_until(lambda: factory.running() == {(A, 1), (B, 1)}, "A and B running")
    fences_before = fences()

    coordinator.acking = False
    assert coordinator.last_ack_at is not None
    last_ack = coordinator.last_ack_at

    # Clearly before the window ends (a quarter of it), everything still runs.
    await asyncio.sleep(max(last_ack + WINDOW_S / 4 - time.monotonic(), 0))
    assert factory.running() == {(A, 1), (B, 1)}
    assert fences() == fences_before

    await wait_until(lambda: not factory.running(), "self-fenced", timeout=LEASE_TTL_S + 45)
    runners = [factory.of(A)[0], factory.of(B)[0]]
    assert [r.stop_calls for r in runners] == [[False], [False]]   # no drain, no commit
    # Never before the window: the last ack the server got was sent at or after `last_ack`.
    assert all(r.stopped_at is not None and r.stopped_at >= last_ack + WINDOW_S
               for r in runners)
    assert fences() == fences_before + 1
    assert leased_host.lease.remaining(time.monotonic()) == 0.0
    await wait_until(lambda: {t.task_id: t.state for t in coordinator.reports[-1].tasks}
                     .get(A) == 4, "A reported STOPPED")

    # The leader answers again: a new session, a renewed lease, the desired set: tasks restart.
    coordinator.acking = True
    await wait_until(lambda: factory.running() == {(A, 1), (B, 1)}, "A and B running again")
    assert len(factory.runners) == 4
    assert leased_host.task_states() == {A: TaskState.RUNNING, B: TaskState.RUNNING}


async def test_nothing_starts_before_the_first_ack(
        leased_host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    await wait_until(lambda: coordinator.sessions >= 1 and leased_host.ready(), "session")
    coordinator.acking = False
    # Let the lease run out first, so the server holds none.
    await wait_until(lambda: leased_host.lease.renewed_at is None, "lease dropped",
                     timeout=LEASE_TTL_S + 45)
    sessions = coordinator.sessions
    coordinator.direct([assignment(A, 1)])
    # It reconnected after fencing; the directive arrives, reports flow, but no ack: no start.
    await wait_until(lambda: coordinator.sessions > sessions or len(coordinator.reports) > 3,
                     "reports without acks")
    seen = len(coordinator.reports)
    await wait_until(lambda: len(coordinator.reports) >= seen + 3, "three more reports")
    assert factory.runners == []
    coordinator.acking = True
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running after an ack")


async def test_self_fencing_interrupts_a_drain_under_way(
        leased_host: ServerHost, coordinator: Coordinator, factory: FakeFactory) -> None:
    factory.drain_s = 600.0          # a sink that cannot flush
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    coordinator.direct([])           # revoked: the drain starts and hangs
    await wait_until(lambda: factory.of(A)[0].state is TaskState.DRAINING, "A draining")
    coordinator.acking = False
    await wait_until(lambda: factory.of(A)[0].state is TaskState.STOPPED,
                     "A stopped by the fence", timeout=LEASE_TTL_S + 45)
    assert factory.of(A)[0].stop_calls == [True, False]


async def test_workers_hear_every_renewal_and_an_ack_read_after_the_deadline_fences(
        zookeeper: str, cluster: str, coordinator: Coordinator, factory: FakeFactory) -> None:
    """The task workers fence themselves from the deadlines the host passes on (tasks/fence.py).
    A main process resumed past its lease may find an ack already in its socket: that ack must
    fence, not renew — the leader may have given the tasks away meanwhile."""
    coordinator.lease_ttl_s = LEASE_TTL_S
    deadlines: list[float] = []
    skew = [0.0]
    server = ServerHost(server_settings(zookeeper, cluster, margin=MARGIN_S), factory,
                        clock=lambda: time.monotonic() + skew[0], on_lease=deadlines.append)
    await server.start()
    try:
        coordinator.direct([assignment(A, 1)])
        await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
        assert deadlines and deadlines[-1] > time.monotonic()
        renewed_at = server.lease.renewed_at
        assert renewed_at is not None
        assert deadlines[-1] == pytest.approx(renewed_at + WINDOW_S)

        # The process "resumes" past its window with an ack to read: no await in between, so
        # the watchdog cannot fence first.
        skew[0] = WINDOW_S + 1.0
        server._on_ack(pb.Ack(report_seq=0, lease_ttl_s=LEASE_TTL_S))
        assert deadlines[-1] == float("-inf")
        assert server.lease.renewed_at is None
        # The first runner is stopped without drain (the leader, still directing A on the fresh
        # session, may start it again afterwards).
        await wait_until(lambda: factory.of(A)[0].stop_calls == [False], "A stopped by the fence")
    finally:
        await server.close()
