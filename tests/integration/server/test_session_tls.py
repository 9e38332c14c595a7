"""mTLS on the heartbeat session, the server's side, with real certificates and real gRPC: a
server talks only to a leader whose certificate is a master of its cluster from its CA. A
listener named in the `leader` node with a server's certificate, a master certificate of
another cluster or one from another CA never sees a report and cannot direct anything; once the
real leader is named again the server carries on without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from kazoo.client import KazooClient

from server import metrics
from server.host import ServerHost
from tasks.cluster import ZkPaths
from tasks.tls import TlsSettings
from tests.integration.server.harness import (
    Coordinator,
    FakeFactory,
    assignment,
    wait_until,
    write_leader,
)
from tests.pki import session_pki, tls_block
from tools.pki import tls_settings_for, write_dev_pki

A, B = "job1:events:0", "job1:events:1"


def _broken() -> float:
    return float(metrics.SESSION_RECONNECTS.labels(reason="broken")._value.get())


def _rogue_tls(kind: str, cluster: str, tmp_path: Path) -> TlsSettings:
    if kind == "a server's certificate":
        block = tls_block(cluster, "server", "srv-evil")
    elif kind == "a master of another cluster":
        block = tls_settings_for(session_pki(), "master", "m-evil", cluster=f"{cluster}x")
    else:   # a master certificate of this cluster, from another CA
        other = write_dev_pki(tmp_path / "other-ca", cluster=cluster, masters=["m-evil"],
                              servers=())
        block = tls_settings_for(other, "master", "m-evil")
    return TlsSettings.model_validate(block)


@pytest.mark.parametrize("kind", ["a server's certificate", "a master of another cluster",
                                  "another CA"])
async def test_a_listener_that_is_not_a_master_of_the_cluster_is_never_obeyed(
        kind: str, host: ServerHost, coordinator: Coordinator, factory: FakeFactory,
        zk: KazooClient, paths: ZkPaths, cluster: str, tmp_path: Path) -> None:
    coordinator.direct([assignment(A, 1)])
    await wait_until(lambda: factory.running() == {(A, 1)}, "A running")
    rogue = Coordinator("m-evil", epoch=coordinator.epoch + 1,
                        tls=_rogue_tls(kind, cluster, tmp_path))
    rogue.desired = [assignment(B, 1)]
    await rogue.start()
    try:
        broken = _broken()
        write_leader(zk, paths, rogue)
        await wait_until(lambda: host.session.target == rogue.target, "server tries the rogue")
        await wait_until(lambda: _broken() >= broken + 3, "three failed sessions with it")
        assert rogue.sessions == 0 and rogue.reports == []
        assert host.highest_epoch == coordinator.epoch
        assert factory.running() == {(A, 1)}
        # The real leader named again: the same task carries on, nothing restarted. In a new
        # term: write_leader bumped the epoch znode for the rogue, and servers follow only the
        # epoch ZooKeeper confirms (an older one's node is not followed).
        reports = len(coordinator.reports)
        coordinator.epoch = rogue.epoch + 1
        write_leader(zk, paths, coordinator)
        await wait_until(lambda: len(coordinator.reports) >= reports + 3, "reports again")
        assert factory.running() == {(A, 1)} and len(factory.of(A)) == 1
        assert rogue.reports == []
    finally:
        await rogue.stop()
