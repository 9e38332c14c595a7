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
from tasks.tls import TlsSettings
from tests.integration.server.harness import Coordinator, FakeFactory, master_tls, write_leader
from tests.pki import tls_block
from tools.infra.zkauth import session_credentials


def server_settings(zookeeper: str, cluster: str, *, session_timeout: float = 4.0,
                    margin: float = 1.0, **overrides: object) -> ServerSettings:
    server_id = str(overrides.pop("id", None) or f"srv-{uuid.uuid4().hex[:6]}")
    base = ServerSettings(
        id=server_id,
        tls=TlsSettings.model_validate(tls_block(cluster, "server", server_id)),
        zookeeper=ZooKeeperSettings(hosts=zookeeper, cluster=cluster,
                                    session_timeout=session_timeout,
                                    **session_credentials().server()),
        http=HttpSettings(host="127.0.0.1", port=0),
        lease=LeaseSettings(margin=margin, initial_heartbeat_interval=0.2),
        session=SessionSettings(reconnect_min=0.05, reconnect_max=0.5, shutdown_timeout=20.0),
    )
    return base.model_copy(update=overrides)


@pytest.fixture
async def coordinator(zk: KazooClient, paths: ZkPaths,
                      cluster: str) -> AsyncIterator[Coordinator]:
    coord = Coordinator("master-a", epoch=5, tls=master_tls(cluster, "master-a"))
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
