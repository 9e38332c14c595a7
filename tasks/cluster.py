"""The ZooKeeper layout and the payloads masters and servers exchange through it.

Masters and servers never import each other; both read and write these paths and JSON payloads
(DESIGN.md, "ZooKeeper layout"). Everything lives under a root, default `/exportd/<cluster>`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.settings import Duration, SettingsModel


class ZooKeeperSettings(SettingsModel):
    """Where a process finds the cluster in ZooKeeper; the same block for masters and servers."""

    hosts: str = "127.0.0.1:2181"
    cluster: str = "local"
    base_path: str = "/exportd"
    # How long a crashed process's ephemeral nodes (leadership, registration) outlive it.
    session_timeout: Duration = 10.0

    def paths(self) -> ZkPaths:
        return ZkPaths.for_cluster(self.cluster, self.base_path)


@dataclass(frozen=True, slots=True)
class ZkPaths:
    root: str

    @classmethod
    def for_cluster(cls, cluster: str, base: str = "/exportd") -> ZkPaths:
        return cls(f"{base.rstrip('/')}/{cluster}")

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
    def servers(self) -> str:
        return f"{self.root}/servers"

    def server(self, server_id: str) -> str:
        return f"{self.servers}/{server_id}"

    @property
    def admin_servers(self) -> str:
        return f"{self.root}/admin/servers"

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
