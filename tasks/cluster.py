"""The ZooKeeper layout, who may do what in it, and the payloads masters and servers exchange.

Masters and servers never import each other; both read and write these paths and JSON payloads
(DESIGN.md, "ZooKeeper layout"). Everything lives under a root, default `/exportd/<cluster>`.

Who may do what is data: `ACL_TABLE` names, for each kind of znode (`Node`), the permissions of
each role; `ZkAcls.for_node` turns a row into kazoo ACLs with the cluster's digest identities,
and every create passes it (docs/SECURITY.md, "ZooKeeper"). `node_of` says which row a concrete
path belongs to, so a check or a migration walks the tree with the same table. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential

from tasks.errors import ConfigError
from tasks.settings import Duration, SettingsModel
from tasks.zk_tls import TlsHandler, ZkTls


class ZooKeeperSettings(SettingsModel):
    """Where a process finds the cluster in ZooKeeper and how it proves who it is there; the
    same block for masters and servers."""

    hosts: str = "127.0.0.1:2181"
    cluster: str = "local"
    base_path: str = "/exportd"
    # How long a crashed process's ephemeral nodes (leadership, registration) outlive it.
    session_timeout: Duration = 10.0
    # This process's digest credential: the masters' on a master, the servers' on a server.
    username: str = ""
    password: str = ""
    # The OTHER role's digest identity ("user:base64(sha1(user:password))", see
    # docs/SECURITY.md), named in the ACLs this process creates: a master grants `server_digest`
    # READ on leader/epoch and CREATE on servers/; a server grants `master_digest` READ on its
    # registration. A process's own role's identity is computed from its credential; its own
    # role's digest setting, if given, adds identities (a rotation: old and new). Several
    # identities: comma-separated.
    master_digest: str = ""
    server_digest: str = ""
    # TLS to ZooKeeper's secure client port (tasks/zk_tls.py); empty ca_file: plaintext.
    # ca_file: the CA that signed ZooKeeper's certificate (trusted alone, no system CAs);
    # cert_file + key_file: this process's client certificate (ZooKeeper's ssl.clientAuth).
    # The host names in `hosts` must be in ZooKeeper's certificate (as ZooKeeper's own
    # clients check by default).
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def paths(self) -> ZkPaths:
        return ZkPaths.for_cluster(self.cluster, self.base_path)

    def acls(self, role: Role) -> ZkAcls:
        """The ACL identities of a process of `role` (MASTER or SERVER); ConfigError naming
        what is missing. exportd never runs with an open ZooKeeper."""
        missing = [name for name in ("username", "password") if not getattr(self, name)]
        other = "server_digest" if role is Role.MASTER else "master_digest"
        if not getattr(self, other):
            missing.append(other)
        if missing:
            raise ConfigError(
                "ZooKeeper authentication is required: set "
                + ", ".join(f"zookeeper.{name}" for name in missing)
                + " (docs/SECURITY.md, \"ZooKeeper\")")
        own = str(make_digest_acl_credential(self.username, self.password))
        if role is Role.MASTER:
            return ZkAcls(master=_ids(own, self.master_digest), server=_ids(self.server_digest))
        return ZkAcls(master=_ids(self.master_digest), server=_ids(own, self.server_digest))

    def client_options(self) -> dict[str, Any]:
        """KazooClient keyword arguments: hosts, timeout, this process's digest credential and
        TLS. Never logged: it holds the password."""
        options: dict[str, Any] = {"hosts": self.hosts, "timeout": self.session_timeout}
        if self.username:
            options["auth_data"] = [("digest", f"{self.username}:{self.password}")]
        tls = self.tls()
        if tls is not None:
            # kazoo's use_ssl on (its reads handle TLS); the handler makes the connection.
            options.update(use_ssl=True, handler=TlsHandler(tls))
        return options

    def tls(self) -> ZkTls | None:
        """The TLS files, or None for plaintext; ConfigError for a half-configured block (a
        certificate without its key, or files without ca_file: never plaintext by mistake)."""
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("zookeeper.cert_file and zookeeper.key_file go together "
                              "(a client certificate and its key)")
        if not self.ca_file:
            if self.cert_file:
                raise ConfigError("zookeeper.cert_file needs zookeeper.ca_file (TLS to "
                                  "ZooKeeper's secure port, docs/SECURITY.md \"ZooKeeper\")")
            return None
        return ZkTls(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)


def _ids(*lists: str) -> str:
    """Digest identities, comma-separated, each once, in order."""
    out: list[str] = []
    for item in ",".join(lists).split(","):
        if item.strip() and item.strip() not in out:
            out.append(item.strip())
    return ",".join(out)


# -- who may do what (the one ACL table) ---------------------------------------------------------

class Role(Enum):
    MASTER = "master"
    SERVER = "server"
    # The one server session that created a registration (its own per-process digest).
    OWNER = "owner"


class Node(Enum):
    BASE = "base"                  # /exportd (shared by the clusters under it)
    ROOT = "root"                  # /exportd/<cluster>
    ELECTION = "election"
    CONTENDER = "contender"        # election/<lock node>
    LEADER = "leader"
    EPOCH = "epoch"
    JOBS = "jobs"
    JOB = "job"
    ASSIGNMENTS = "assignments"
    SHARD = "shard"
    STORIES = "stories"
    STORY = "story"                # stories/<shard>
    SERVERS = "servers"
    REGISTRATION = "registration"  # servers/<id>
    ADMIN = "admin"
    ADMIN_SERVERS = "admin_servers"
    ADMIN_SERVER = "admin_server"


P = Permissions
_MASTERS_ONLY = ((Role.MASTER, P.ALL),)
# Anyone not named has nothing: there is no world:anyone entry anywhere. ZooKeeper checks a
# delete against the PARENT's DELETE permission, never the child's own ACL: servers get no
# DELETE on servers/ (it would let one delete any registration); a server's node goes away
# with its session (close or expiry), which no ACL governs.
ACL_TABLE: Mapping[Node, tuple[tuple[Role, int], ...]] = {
    Node.BASE: _MASTERS_ONLY,
    Node.ROOT: _MASTERS_ONLY,
    Node.ELECTION: _MASTERS_ONLY,
    Node.CONTENDER: _MASTERS_ONLY,
    Node.LEADER: ((Role.MASTER, P.ALL), (Role.SERVER, P.READ)),
    Node.EPOCH: ((Role.MASTER, P.ALL), (Role.SERVER, P.READ)),
    Node.JOBS: _MASTERS_ONLY,
    Node.JOB: _MASTERS_ONLY,
    Node.ASSIGNMENTS: _MASTERS_ONLY,
    Node.SHARD: _MASTERS_ONLY,
    Node.STORIES: _MASTERS_ONLY,
    Node.STORY: _MASTERS_ONLY,
    Node.SERVERS: ((Role.MASTER, P.ALL), (Role.SERVER, P.CREATE)),
    Node.REGISTRATION: ((Role.MASTER, P.READ), (Role.OWNER, P.ALL)),
    Node.ADMIN: _MASTERS_ONLY,
    Node.ADMIN_SERVERS: _MASTERS_ONLY,
    Node.ADMIN_SERVER: _MASTERS_ONLY,
}

_CHILD_OF = {Node.ELECTION: Node.CONTENDER, Node.JOBS: Node.JOB, Node.ASSIGNMENTS: Node.SHARD,
             Node.STORIES: Node.STORY,
             Node.SERVERS: Node.REGISTRATION, Node.ADMIN_SERVERS: Node.ADMIN_SERVER}


def node_of(paths: ZkPaths, path: str) -> Node | None:
    """Which row of ACL_TABLE `path` belongs to; None for a path exportd does not own."""
    fixed = {paths.base: Node.BASE, paths.root: Node.ROOT, paths.election: Node.ELECTION,
             paths.leader: Node.LEADER, paths.epoch: Node.EPOCH, paths.jobs: Node.JOBS,
             paths.assignments: Node.ASSIGNMENTS, paths.stories: Node.STORIES,
             paths.servers: Node.SERVERS,
             paths.admin: Node.ADMIN, paths.admin_servers: Node.ADMIN_SERVERS}
    if path in fixed:
        return fixed[path]
    parent, _, name = path.rpartition("/")
    kind = fixed.get(parent)
    return _CHILD_OF.get(kind) if kind is not None and name else None


def is_open(acl: list[ACL] | tuple[ACL, ...]) -> bool:
    """Does this ACL give anything to a process that proves nothing (world:anyone, or an ip
    entry, which any process on that address passes)?"""
    return any(entry.id.scheme in {"world", "ip"} and entry.perms for entry in acl)


@dataclass(frozen=True, slots=True)
class ZkAcls:
    """The cluster's digest identities (each role's: comma-separated, e.g. an old and a new one
    during a rotation), and ACL_TABLE's rows as kazoo ACLs."""

    master: str
    server: str

    def for_node(self, node: Node, owner: str | None = None) -> list[ACL]:
        """The ACL a znode of kind `node` is created with. `owner`: the creating server's own
        digest identity (registrations); without it that entry is left out (a master
        creating or migrating a registration: the node then belongs to no server)."""
        ids = {Role.MASTER: self.master, Role.SERVER: self.server, Role.OWNER: owner or ""}
        return [ACL(perms, Id("digest", ident)) for role, perms in ACL_TABLE[node]
                for ident in ids[role].split(",") if ident]

    def for_path(self, paths: ZkPaths, path: str) -> list[ACL]:
        node = node_of(paths, path)
        return self.for_node(node) if node is not None else self.for_node(Node.ROOT)


@dataclass(frozen=True, slots=True)
class ZkPaths:
    root: str

    @classmethod
    def for_cluster(cls, cluster: str, base: str = "/exportd") -> ZkPaths:
        return cls(f"{base.rstrip('/')}/{cluster}")

    @property
    def base(self) -> str:
        return self.root.rpartition("/")[0] or "/"

    @property
    def election(self) -> str:
        return f"{self.root}/election"

    @property
    def leader(self) -> str:
        return f"{self.root}/leader"

    @property
    def epoch(self) -> str:
        return f"{self.root}/epoch"

    @property
    def jobs(self) -> str:
        return f"{self.root}/jobs"

    def job(self, job_id: str) -> str:
        return f"{self.jobs}/{job_id}"

    @property
    def assignments(self) -> str:
        return f"{self.root}/assignments"

    def assignment_shard(self, shard: int) -> str:
        return f"{self.assignments}/{shard:04d}"

    @property
    def stories(self) -> str:
        """Tasks' recent history, sharded like the assignments (master/story.py)."""
        return f"{self.root}/stories"

    def story_shard(self, shard: int) -> str:
        return f"{self.stories}/{shard:04d}"

    @property
    def servers(self) -> str:
        return f"{self.root}/servers"

    def server(self, server_id: str) -> str:
        return f"{self.servers}/{server_id}"

    @property
    def admin(self) -> str:
        return f"{self.root}/admin"

    @property
    def admin_servers(self) -> str:
        return f"{self.admin}/servers"

    def admin_server(self, server_id: str) -> str:
        return f"{self.admin_servers}/{server_id}"


def _dump(obj: Any) -> bytes:
    return json.dumps(asdict(obj), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The ephemeral `leader` node: who leads, where to reach it, and its fencing epoch."""

    id: str
    grpc: str          # host:port of the Coordinator service
    http: str          # base URL of the HTTP API, e.g. http://127.0.0.1:8080
    epoch: int
    since_unix: float

    def to_bytes(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> LeaderInfo:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class ServerRegistration:
    """A server's ephemeral `servers/<id>` node."""

    id: str
    group: str
    address: str       # host:port of the server's HTTP endpoint (/metrics, /healthz)
    cpu_cores: float
    net_bytes_per_s: float
    version: str
    labels: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return _dump(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> ServerRegistration:
        return cls(**json.loads(raw))
