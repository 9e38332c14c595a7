"""Registration failures: ZooKeeper unreachable, and an id held by another live server."""

from __future__ import annotations

import pytest

from server.host import ServerHost
from tasks.errors import Conflict, Unavailable
from tests.integration.server.conftest import server_settings
from tests.integration.server.harness import Coordinator, FakeFactory
from tools.infra.ports import free_port


async def test_unreachable_zookeeper_is_unavailable(cluster: str) -> None:
    settings = server_settings(f"127.0.0.1:{free_port()}", cluster, session_timeout=1.0)
    host = ServerHost(settings, FakeFactory())
    with pytest.raises(Unavailable):
        await host.start()


async def test_an_id_held_by_another_live_server_is_a_conflict(
        zookeeper: str, cluster: str, coordinator: Coordinator) -> None:
    first = ServerHost(server_settings(zookeeper, cluster, session_timeout=1.0), FakeFactory())
    await first.start()
    try:
        second = ServerHost(server_settings(zookeeper, cluster, session_timeout=1.0,
                                            id=first.settings.id), FakeFactory())
        with pytest.raises(Conflict):
            await second.start()
        assert first.registration is not None and first.registration.registered
    finally:
        await first.close()
