"""exportd's ZooKeeper client over TLS, against a real ZooKeeper that has a secure client port
only (tools/infra `ZooKeeperTls`: certificate from the session CA, client certificates required),
through the path masters and servers use (`ZooKeeperSettings.client_options`, tasks/zk_tls.py).

- A real master and a real server (in-process) log in over TLS with their digest credentials:
  the master leads, the server registers and holds a heartbeat session with it. Every byte went
  over TLS: ZooKeeper has no plaintext port here.
- Refused: plaintext to the secure port, no client certificate, a client certificate of another
  CA, a ZooKeeper whose certificate is not from `ca_file` (even when the system store trusts its
  CA), a host name the certificate does not carry.
- The ACLs hold over TLS: a certificate from the cluster CA alone (ZooKeeper gives it an x509
  identity) reads and writes nothing of exportd's; the servers' credential cannot touch `leader`
  or another registration.
(docs/SECURITY.md, "ZooKeeper".)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from master.process import Master
from scheduler import plan
from server.host import ServerHost
from tasks.cluster import Role, ZooKeeperSettings, is_open
from tests.integration.master.conftest import master_settings, until
from tests.integration.server.conftest import server_settings
from tests.integration.server.harness import FakeFactory
from tests.pki import session_pki, tls_block
from tools.infra.process import ManagedProcess
from tools.infra.servers import ZooKeeperTls, start_zookeeper
from tools.infra.zkauth import session_credentials
from tools.pki import write_dev_pki

NO_KAFKA = "127.0.0.1:9"   # the master never reaches Kafka here: no job is created
REFUSED_WITHIN_S = 3.0


@dataclass(frozen=True)
class SecureZooKeeper:
    endpoint: str
    port: int


@pytest.fixture(scope="module")
def secure_zookeeper() -> Iterator[SecureZooKeeper]:
    """A ZooKeeper on a secure client port only, its certificate from the session CA (SAN IP
    127.0.0.1 and DNS localhost, tools/pki.py); stopped at the end, even on failure."""
    files = tls_block("test", "zookeeper", "zk")
    workdir = Path(tempfile.mkdtemp(prefix="exportd-zk-tls-"))
    proc: ManagedProcess | None = None
    try:
        proc, endpoint = start_zookeeper(workdir, tls=ZooKeeperTls(
            Path(files["ca_file"]), Path(files["cert_file"]), Path(files["key_file"])))
        yield SecureZooKeeper(endpoint, int(endpoint.rsplit(":", 1)[1]))
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def zk_settings(hosts: str, cluster: str, role: Role | None, party: str | None,
                **overrides: Any) -> ZooKeeperSettings:
    """The `zookeeper` block of a process: `role`'s digest credential (None: no credential),
    TLS with `party`'s certificate from the session CA (None: no TLS at all)."""
    block: dict[str, Any] = {"hosts": hosts, "cluster": cluster, "session_timeout": 4.0}
    if role is not None:
        block.update(session_credentials().block(role))
    if party is not None:
        block.update(tls_block(cluster, *party.split("/")))
    return ZooKeeperSettings.model_validate({**block, **overrides})


@pytest.fixture
def clients() -> Iterator[Callable[[ZooKeeperSettings], KazooClient]]:
    started: list[KazooClient] = []

    def make(settings: ZooKeeperSettings) -> KazooClient:
        zk = KazooClient(**settings.client_options())
        started.append(zk)
        zk.start(30)
        return zk

    try:
        yield make
    finally:
        for zk in started:
            zk.stop()
            zk.close()


def connects(settings: ZooKeeperSettings) -> bool:
    """Whether exportd's client gets a ZooKeeper session within REFUSED_WITHIN_S."""
    zk = KazooClient(**settings.client_options())
    try:
        zk.start(REFUSED_WITHIN_S)
        return True
    except zk.handler.timeout_exception:
        return False
    finally:
        zk.stop()
        zk.close()


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except NoAuthError:
        return True
    return False


async def test_a_master_and_a_server_run_over_tls_and_the_acls_hold(
        secure_zookeeper: SecureZooKeeper, cluster: str,
        clients: Callable[[ZooKeeperSettings], KazooClient]) -> None:
    hosts = secure_zookeeper.endpoint
    master = Master(master_settings(hosts, NO_KAFKA, cluster, "m1").model_copy(update={
        "zookeeper": zk_settings(hosts, cluster, Role.MASTER, "master/m1")}), plan)
    host = ServerHost(server_settings(hosts, cluster, id="srv-1").model_copy(update={
        "zookeeper": zk_settings(hosts, cluster, Role.SERVER, "server/srv-1")}), FakeFactory())
    try:
        await master.start()
        lead = await master.wait_leading(30)
        await host.start()
        await until(lambda: host.ready() and host.session.target == master.grpc_address, 30,
                    "the server in session with the leader it found over TLS")
        assert host.highest_epoch == lead.term.epoch
        paths = master.paths

        # A certificate from the cluster CA and no digest credential: TLS is not a login.
        cert_only = clients(zk_settings(hosts, cluster, None, "server/srv-1"))
        for path in (paths.leader, paths.epoch, paths.server("srv-1")):
            assert refused(cert_only.get, path), path
        for path in (paths.jobs, paths.servers, paths.assignments):
            assert refused(cert_only.get_children, path), path
        assert refused(cert_only.set, paths.leader, b"{}")
        assert refused(cert_only.create, paths.server("fake"), b"{}", ephemeral=True)
        assert refused(cert_only.create, paths.job("evil"), b"{}")

        # The servers' credential over TLS: leader and epoch read only, no other registration.
        other = clients(zk_settings(hosts, cluster, Role.SERVER, "server/srv-2"))
        other.get(paths.leader)
        assert refused(other.set, paths.leader, b"{}")
        assert refused(other.set, paths.epoch, b"1000")
        assert refused(other.get, paths.server("srv-1"))
        assert refused(other.delete, paths.server("srv-1"))
        assert refused(other.get_children, paths.jobs)

        # The masters' credential reads the registration, and nothing exportd made is open.
        masters = clients(zk_settings(hosts, cluster, Role.MASTER, "master/m2"))
        masters.get(paths.server("srv-1"))
        for path in (paths.root, paths.leader, paths.epoch, paths.servers,
                     paths.server("srv-1")):
            acl, _ = masters.get_acls(path)
            assert not is_open(acl), (path, acl)
    finally:
        await host.close()
        await master.stop()


@pytest.fixture(scope="module")
def other_ca() -> Iterator[Path]:
    """A second CA with a server certificate of its own (an outsider's PKI)."""
    directory = Path(tempfile.mkdtemp(prefix="exportd-other-ca-"))
    try:
        write_dev_pki(directory, cluster="outsider", masters=(), servers=("srv-1",))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_exportd_refuses_anything_but_tls_to_a_zookeeper_from_its_ca(
        secure_zookeeper: SecureZooKeeper, cluster: str, other_ca: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = secure_zookeeper.endpoint

    def server(**overrides: Any) -> ZooKeeperSettings:
        return zk_settings(hosts, cluster, Role.SERVER, "server/srv-1", **overrides)

    assert connects(server())   # the control: the same settings, nothing taken away
    # Plaintext to the secure port (no ca_file: exportd speaks plaintext).
    assert not connects(zk_settings(hosts, cluster, Role.SERVER, None))
    # TLS without a client certificate: ZooKeeper requires one (ssl.clientAuth=need).
    assert not connects(server(cert_file="", key_file=""))
    # A client certificate from another CA: ZooKeeper refuses it.
    assert not connects(server(cert_file=str(other_ca / "server-srv-1.pem"),
                               key_file=str(other_ca / "server-srv-1.key")))
    # ZooKeeper's certificate is not from ca_file: refused, even though the system store (here
    # SSL_CERT_FILE) trusts the CA that signed it. kazoo's own use_ssl loaded the system CAs too.
    monkeypatch.setenv("SSL_CERT_FILE", str(session_pki().ca_file))
    assert not connects(server(ca_file=str(other_ca / "ca.pem")))
    monkeypatch.delenv("SSL_CERT_FILE")
    # A host name the certificate does not carry (it names 127.0.0.1 and localhost; "127.1" is
    # the control's address written as a name, so only the name differs).
    other_name = f"127.1:{secure_zookeeper.port}"
    assert not connects(zk_settings(other_name, cluster, Role.SERVER, "server/srv-1"))
