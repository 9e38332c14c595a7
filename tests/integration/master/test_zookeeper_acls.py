"""ZooKeeper ACLs on a real ZooKeeper: what a process without credentials, or with the servers'
credential, can and cannot do to a cluster a real master laid out; a master refusing open znodes;
`exportd-master --migrate-acls` closing them (docs/SECURITY.md, "ZooKeeper")."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE

from master.acls import OpenAcls
from master.process import Master
from master.settings import MasterSettings
from master.store import StoredJob
from scheduler import plan
from server.registration import Registration
from tasks.cluster import Role, ServerRegistration, ZkPaths, ZooKeeperSettings, is_open
from tests.integration.master.conftest import StartMaster, job_spec, master_settings
from tools.infra.zkauth import session_credentials


def client(zookeeper: str, role: Role | None) -> KazooClient:
    """A started client: anonymous (None), or holding the masters' or servers' credential."""
    auth = session_credentials().auth_data(role) if role is not None else None
    zk = KazooClient(hosts=zookeeper, timeout=5.0, auth_data=auth)
    zk.start(30)
    return zk


@pytest.fixture
def clients() -> Iterator[Callable[[str, Role | None], KazooClient]]:
    started: list[KazooClient] = []

    def make(zookeeper: str, role: Role | None) -> KazooClient:
        zk = client(zookeeper, role)
        started.append(zk)
        return zk

    try:
        yield make
    finally:
        for zk in started:
            zk.stop()
            zk.close()


def refused(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except NoAuthError:
        return True
    return False


async def a_cluster_with_a_job(start_master: StartMaster, topic: str, paths: ZkPaths) -> None:
    """A real master leads and has stored a job through its fenced write."""
    master = await start_master("m1")
    lead = await master.wait_leading(30)
    job = StoredJob(job_spec("j1", topic), 1.0)
    await asyncio.to_thread(lead.term.commit, master.store.job_ops(job, create=True))


async def test_without_credentials_nothing_can_be_read_or_written(
        start_master: StartMaster, topic: str, paths: ZkPaths, zookeeper: str,
        clients: Callable[[str, Role | None], KazooClient]) -> None:
    await a_cluster_with_a_job(start_master, topic, paths)
    anon = clients(zookeeper, None)
    shard = paths.assignment_shard(0)
    # Read nothing: job specs, the leader, the epoch, assignments, the registrations' list.
    for path in (paths.job("j1"), paths.leader, paths.epoch, shard):
        assert refused(anon.get, path), path
    for path in (paths.jobs, paths.servers, paths.assignments, paths.admin_servers):
        assert refused(anon.get_children, path), path
    # Write nothing: no registration, no job, no leader, no epoch bump, no assignment.
    assert refused(anon.create, paths.server("fake"), b"{}", ephemeral=True)
    assert refused(anon.create, paths.job("evil"), b"{}")
    assert refused(anon.create, paths.admin_server("x"), b"{}")
    assert refused(anon.set, paths.leader, b"{}")
    assert refused(anon.delete, paths.leader)
    assert refused(anon.set, paths.epoch, b"1000")
    assert refused(anon.set, shard, b"")
    assert refused(anon.delete, paths.job("j1"))
    assert refused(anon.set_acls, paths.job("j1"), OPEN_ACL_UNSAFE)
    # And nothing exportd made is open.
    master_zk = clients(zookeeper, Role.MASTER)
    for path in (paths.root, paths.job("j1"), paths.leader, paths.epoch, shard, paths.servers):
        acl, _ = master_zk.get_acls(path)
        assert not is_open(acl), (path, acl)


def server_zk_settings(zookeeper: str, cluster: str) -> ZooKeeperSettings:
    return ZooKeeperSettings(hosts=zookeeper, cluster=cluster, session_timeout=4.0,
                             **session_credentials().server())


async def test_a_server_credential_writes_only_its_own_registration(
        start_master: StartMaster, topic: str, paths: ZkPaths, zookeeper: str, cluster: str,
        clients: Callable[[str, Role | None], KazooClient]) -> None:
    await a_cluster_with_a_job(start_master, topic, paths)
    payload = ServerRegistration("srv-1", "default", "127.0.0.1:1", 2.0, 1e8, "v")
    registration = Registration(server_zk_settings(zookeeper, cluster), payload, lambda _: None)
    await registration.start()
    try:
        # Another process holding the servers' credential (another server, or a thief of it).
        other = clients(zookeeper, Role.SERVER)
        mine = paths.server("srv-1")
        assert refused(other.set, mine, b'{"cpu_cores": 512}')
        assert refused(other.delete, mine)
        assert refused(other.set_acls, mine, OPEN_ACL_UNSAFE)
        assert refused(other.get, mine)
        # What it needs, it has: the leader and the epoch, read only.
        other.get(paths.leader)
        other.get(paths.epoch)
        assert refused(other.set, paths.leader, b"{}")
        assert refused(other.delete, paths.leader)
        assert refused(other.set, paths.epoch, b"1000")
        # Nothing of the control state.
        assert refused(other.get, paths.job("j1"))
        assert refused(other.get_children, paths.jobs)
        assert refused(other.create, paths.job("evil"), b"{}")
        assert refused(other.set, paths.assignment_shard(0), b"")
        assert refused(other.create, paths.admin_server("srv-1"), b"{}")
        assert refused(other.get_children, paths.servers)
        # It may CREATE a registration under another name (what mTLS and the leader close: no
        # task goes to a server that never reported on a session whose certificate names it),
        # but not delete it again: the node leaves only with its session.
        other.create(paths.server("squatter"), b"{}", ephemeral=True)
        assert refused(other.delete, paths.server("squatter"))
        # The owner itself refreshes its node (a re-register on the same session).
        await registration.register()
        # The masters read every registration.
        master_zk = clients(zookeeper, Role.MASTER)
        raw, _ = master_zk.get(mine)
        assert ServerRegistration.from_bytes(raw).id == "srv-1"
    finally:
        await registration.stop(deregister=True)
    # Closing the session removed the node: no DELETE permission was needed.
    master_zk = clients(zookeeper, Role.MASTER)
    assert master_zk.exists(paths.server("srv-1")) is None


def old_open_cluster(zookeeper: str, paths: ZkPaths) -> None:
    """What an exportd before ACLs left in ZooKeeper: everything world:anyone."""
    anon = client(zookeeper, None)
    try:
        for path in (paths.jobs, paths.assignments, paths.servers, paths.admin_servers,
                     paths.election):
            anon.ensure_path(path, acl=OPEN_ACL_UNSAFE)
        anon.create(paths.job("old"), b'{"spec": {}}', acl=OPEN_ACL_UNSAFE)
        anon.create(paths.assignment_shard(0), b"", acl=OPEN_ACL_UNSAFE)
        anon.create(paths.epoch, b"3", acl=OPEN_ACL_UNSAFE)
    finally:
        anon.stop()
        anon.close()


def old_settings(zookeeper: str, cluster: str) -> ZooKeeperSettings:
    """A base path of the test's own: an old cluster's base was open too (the shared /exportd
    of this test session is not)."""
    return ZooKeeperSettings(hosts=zookeeper, cluster=cluster, base_path=f"/old-{cluster}",
                             session_timeout=2.0, **session_credentials().master())


def migrate_config(tmp_path: Path, zookeeper: str, cluster: str) -> Path:
    config = tmp_path / "master.yaml"
    config.write_text(yaml.safe_dump({
        "id": "migrator",
        "zookeeper": {"hosts": zookeeper, "cluster": cluster, "session_timeout": "2s",
                      "base_path": f"/old-{cluster}", **session_credentials().master()},
        "api": {"auth": "none"}, "log_format": "console"}))
    return config


@contextlib.asynccontextmanager
async def running_master(settings: MasterSettings) -> AsyncIterator[Master]:
    master = Master(settings, plan)
    try:
        await master.start()
        yield master
    finally:
        await master.stop()


async def test_a_master_refuses_open_znodes_until_migrate_acls(
        zookeeper: str, kafka: str, cluster: str,
        tmp_path: Path, clients: Callable[[str, Role | None], KazooClient]) -> None:
    settings = old_settings(zookeeper, cluster)
    paths = settings.paths()

    def on_old_cluster(master_id: str) -> MasterSettings:
        base = master_settings(zookeeper, kafka, cluster, master_id)
        return base.model_copy(update={"zookeeper": settings})

    old_open_cluster(zookeeper, paths)
    with pytest.raises(OpenAcls, match="--migrate-acls"):
        async with running_master(on_old_cluster("m1")):
            pass
    anon = clients(zookeeper, None)
    anon.get(paths.job("old"))      # still open: the refusal changed nothing
    old_epoch = anon.exists(paths.epoch)

    exe = str(Path(sys.executable).with_name("exportd-master"))
    done = await asyncio.to_thread(
        subprocess.run, [exe, "--config", str(migrate_config(tmp_path, zookeeper, cluster)),
                         "--migrate-acls"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "set exportd's ACLs on" in done.stdout

    for path in (paths.job("old"), paths.epoch, paths.assignment_shard(0)):
        assert refused(anon.get, path), path
    assert refused(anon.create, paths.server("fake"), b"{}", ephemeral=True)
    assert refused(anon.delete, paths.job("old"))
    async with running_master(on_old_cluster("m2")) as master:
        await master.wait_leading(30)
        # The epoch was migrated, not replaced: the new term counts on from the old one's.
        epoch = clients(zookeeper, Role.MASTER).exists(paths.epoch)
        assert epoch.czxid == old_epoch.czxid
        assert master.term is not None and master.term.epoch == old_epoch.version + 1
    # A second run finds nothing left to change.
    done = await asyncio.to_thread(
        subprocess.run, [exe, "--config", str(migrate_config(tmp_path, zookeeper, cluster)),
                         "--migrate-acls"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "on 0 node(s)" in done.stdout, done.stdout + done.stderr
