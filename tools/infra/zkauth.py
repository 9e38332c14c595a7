"""Throwaway ZooKeeper credentials for `make dev` and the tests: one digest user for the masters,
one for the servers, random passwords.

Digest authentication needs nothing in ZooKeeper's own configuration (the local launcher's
zoo.cfg stays as it is): a client adds `digest user:password` to its session and the ACLs exportd
creates name `digest:user:base64(sha1(user:password))` (tasks/cluster.py). `master()` and
`server()` are the `zookeeper` settings block each role needs.

`python -m tools.infra.zkauth secret NAME` prints a Kubernetes Secret with a fresh pair, in the
layout the Helm chart reads (`zookeeper.auth.existingSecret`): pipe it to `kubectl apply -f -`.
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass
from functools import cache

from kazoo.security import make_digest_acl_credential

from tasks.cluster import Role, ZkAcls


@dataclass(frozen=True, slots=True)
class ZkCredentials:
    master_password: str
    server_password: str
    master_user: str = "exportd-master"
    server_user: str = "exportd-server"

    @classmethod
    def generate(cls) -> ZkCredentials:
        return cls(secrets.token_urlsafe(18), secrets.token_urlsafe(18))

    @property
    def master_digest(self) -> str:
        return str(make_digest_acl_credential(self.master_user, self.master_password))

    @property
    def server_digest(self) -> str:
        return str(make_digest_acl_credential(self.server_user, self.server_password))

    def master(self) -> dict[str, str]:
        """A master's `zookeeper` settings block (auth part)."""
        return {"username": self.master_user, "password": self.master_password,
                "server_digest": self.server_digest}

    def server(self) -> dict[str, str]:
        """A server's `zookeeper` settings block (auth part)."""
        return {"username": self.server_user, "password": self.server_password,
                "master_digest": self.master_digest}

    def block(self, role: Role) -> dict[str, str]:
        return self.master() if role is Role.MASTER else self.server()

    def auth_data(self, role: Role) -> list[tuple[str, str]]:
        """KazooClient(auth_data=...) of a client acting as `role`."""
        if role is Role.MASTER:
            return [("digest", f"{self.master_user}:{self.master_password}")]
        return [("digest", f"{self.server_user}:{self.server_password}")]

    @property
    def acls(self) -> ZkAcls:
        return ZkAcls(master=self.master_digest, server=self.server_digest)


@cache
def session_credentials() -> ZkCredentials:
    """One random set per process (a test session, a `make dev` run)."""
    return ZkCredentials.generate()


def kubernetes_secret(name: str, credentials: ZkCredentials) -> dict[str, object]:
    """The Secret the chart's `zookeeper.auth` reads: both roles' passwords and digests (the
    chart hands each pod only its own role's password and the other role's digest)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "exportd"}},
        "stringData": secret_data(credentials),
    }


def secret_data(credentials: ZkCredentials) -> dict[str, str]:
    """The Secret's keys (the chart's default key names) and values."""
    return {"master-password": credentials.master_password,
            "server-password": credentials.server_password,
            "master-digest": credentials.master_digest,
            "server-digest": credentials.server_digest}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "secret":
        print("usage: python -m tools.infra.zkauth secret NAME", file=sys.stderr)
        return 2
    # JSON is YAML: kubectl apply reads it as it is.
    print(json.dumps(kubernetes_secret(argv[1], ZkCredentials.generate()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
