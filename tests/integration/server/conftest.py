"""Fixtures for the server's integration tests: a ZooKeeper client on a fresh cluster root, a
test Coordinator (leader double) announced in the `leader` node, and a running ServerHost with
in-test task runners. Each is stopped at the end even when the test fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from kazoo.client import KazooClient

from server.host import ServerHost
from server.settings import (
    HttpSettings,
    LeaseSettings,
    ServerSettings,
    SessionSettings,
)
from tasks.cluster import ZkPaths, ZooKeeperSettings
from tests.integration.server.harness import Coordinator, FakeFactory, write_leader


def server_settings(zookeeper: str, cluster: str, *, session_timeout: float = 4.0,
                    margin: float = 1.0, **overrides: object) -> ServerSettings:
    base = ServerSettings(
        id=f"srv-{uuid.uuid4().hex[:6]}",
        zookeeper=ZooKeeperSettings(hosts=zookeeper, cluster=cluster,
                                    session_timeout=session_timeout),
        http=HttpSettings(host="127.0.0.1", port=0),
        lease=LeaseSettings(margin=margin, initial_heartbeat_interval=0.2),
        session=SessionSettings(reconnect_min=0.05, reconnect_max=0.5, shutdown_timeout=20.0),
    )
    return base.model_copy(update=overrides)


@pytest.fixture
async def coordinator(zk: KazooClient, paths: ZkPaths) -> AsyncIterator[Coordinator]:
    coord = Coordinator("master-a", epoch=5)
    await coord.start()
    try:
        write_leader(zk, paths, coord)
        yield coord
    finally:
        await coord.stop()


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
async def host(zookeeper: str, cluster: str, coordinator: Coordinator,
               factory: FakeFactory) -> AsyncIterator[ServerHost]:
    server = ServerHost(server_settings(zookeeper, cluster), factory)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
