"""tasks.cluster: the one ACL table, which row a path belongs to, and the credentials check."""

from __future__ import annotations

import pytest
from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential

from tasks.cluster import (
    ACL_TABLE,
    Node,
    Role,
    ZkAcls,
    ZkPaths,
    ZooKeeperSettings,
    is_open,
    node_of,
)
from tasks.errors import ConfigError
from tasks.zk_tls import ZkTls

PATHS = ZkPaths.for_cluster("c")
ACLS = ZkAcls(master="m:hash", server="s:hash")


@pytest.mark.parametrize(("path", "node"), [
    ("/exportd", Node.BASE), ("/exportd/c", Node.ROOT), ("/exportd/c/election", Node.ELECTION),
    ("/exportd/c/election/_c_x-lock-0000000001", Node.CONTENDER),
    ("/exportd/c/leader", Node.LEADER), ("/exportd/c/epoch", Node.EPOCH),
    ("/exportd/c/jobs", Node.JOBS), ("/exportd/c/jobs/j1", Node.JOB),
    ("/exportd/c/assignments/0003", Node.SHARD), ("/exportd/c/servers", Node.SERVERS),
    ("/exportd/c/servers/s1", Node.REGISTRATION), ("/exportd/c/admin", Node.ADMIN),
    ("/exportd/c/admin/servers", Node.ADMIN_SERVERS),
    ("/exportd/c/admin/servers/s1", Node.ADMIN_SERVER),
    ("/exportd/c/leader/x", None), ("/exportd/other", None), ("/elsewhere", None),
])
def test_node_of(path: str, node: Node | None) -> None:
    assert node_of(PATHS, path) is node


def test_every_node_has_a_row_and_nobody_unnamed_gets_anything() -> None:
    assert set(ACL_TABLE) == set(Node)
    for node in Node:
        acl = ACLS.for_node(node, owner="o:hash")
        assert acl and not is_open(acl)
        assert {entry.id.scheme for entry in acl} == {"digest"}


def test_servers_read_leader_and_epoch_and_only_create_in_servers() -> None:
    def perms(node: Node, ident: str) -> int:
        return sum(a.perms for a in ACLS.for_node(node, owner="o:hash") if a.id.id == ident)

    assert perms(Node.LEADER, "s:hash") == perms(Node.EPOCH, "s:hash") == Permissions.READ
    # CREATE but no DELETE on servers/: ZooKeeper checks a delete against the parent, so a
    # server with DELETE there could delete any registration.
    assert perms(Node.SERVERS, "s:hash") == Permissions.CREATE
    for node in (Node.JOBS, Node.JOB, Node.ASSIGNMENTS, Node.SHARD, Node.ADMIN_SERVER,
                 Node.ELECTION, Node.ROOT):
        assert perms(node, "s:hash") == 0
        assert perms(node, "m:hash") == Permissions.ALL
    # A registration: its creating session everything, the masters read, other servers nothing.
    assert perms(Node.REGISTRATION, "o:hash") == Permissions.ALL
    assert perms(Node.REGISTRATION, "m:hash") == Permissions.READ
    assert perms(Node.REGISTRATION, "s:hash") == 0
    # Without an owner (a master migrating it) the entry is left out, never opened.
    assert ACLS.for_node(Node.REGISTRATION) == [ACL(Permissions.READ, Id("digest", "m:hash"))]


def test_is_open() -> None:
    assert is_open([ACL(Permissions.ALL, Id("world", "anyone"))])
    assert is_open([ACL(Permissions.READ, Id("ip", "10.0.0.1"))])
    assert not is_open([ACL(Permissions.ALL, Id("digest", "m:hash"))])


def test_credentials_are_required_and_the_own_digest_is_computed() -> None:
    with pytest.raises(ConfigError, match=r"zookeeper\.username, zookeeper\.password, "
                                          r"zookeeper\.server_digest"):
        ZooKeeperSettings().acls(Role.MASTER)
    with pytest.raises(ConfigError, match=r"zookeeper\.master_digest"):
        ZooKeeperSettings(username="u", password="p").acls(Role.SERVER)
    master = ZooKeeperSettings(username="m", password="pw", server_digest="s:x")
    assert master.acls(Role.MASTER) == ZkAcls(make_digest_acl_credential("m", "pw"), "s:x")
    server = ZooKeeperSettings(username="s", password="pw", master_digest="m:x")
    assert server.acls(Role.SERVER) == ZkAcls("m:x", make_digest_acl_credential("s", "pw"))
    assert server.client_options()["auth_data"] == [("digest", "s:pw")]
    assert "use_ssl" not in server.client_options()
    tls = ZooKeeperSettings(ca_file="/ca.pem").client_options()
    assert tls["use_ssl"] and tls["handler"].tls == ZkTls(ca_file="/ca.pem")


def test_zookeeper_tls_is_all_or_nothing() -> None:
    both = ZooKeeperSettings(ca_file="/ca", cert_file="/c", key_file="/k")
    assert both.tls() == ZkTls("/ca", "/c", "/k")
    assert ZooKeeperSettings().tls() is None
    # Never plaintext by mistake: client files without a CA, or a certificate without its key.
    with pytest.raises(ConfigError, match=r"zookeeper\.cert_file needs zookeeper\.ca_file"):
        ZooKeeperSettings(cert_file="/c", key_file="/k").client_options()
    for half in (ZooKeeperSettings(ca_file="/ca", cert_file="/c"),
                 ZooKeeperSettings(ca_file="/ca", key_file="/k")):
        with pytest.raises(ConfigError, match=r"go together"):
            half.client_options()


def test_a_rotation_names_old_and_new_identities() -> None:
    master = ZooKeeperSettings(username="m", password="new", master_digest="m:old",
                               server_digest="s:old, s:new")
    acls = master.acls(Role.MASTER)
    new = make_digest_acl_credential("m", "new")
    assert acls == ZkAcls(f"{new},m:old", "s:old,s:new")
    leader = {(a.id.id, a.perms) for a in acls.for_node(Node.LEADER)}
    assert leader == {(new, Permissions.ALL), ("m:old", Permissions.ALL),
                      ("s:old", Permissions.READ), ("s:new", Permissions.READ)}
