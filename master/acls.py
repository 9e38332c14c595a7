"""ZooKeeper ACLs on a master: the start-up check, `--migrate-acls`, and the layout's creation.

The ACLs themselves are data (tasks/cluster.py, `ACL_TABLE`); this module only reads and writes
them. At start-up a master walks every znode under its cluster's root (and the base above it):

- any node open to a process that proves nothing (`is_open`: world:anyone, ip) makes it refuse
  to start (`OpenAcls`), naming a few, unless the operator runs `exportd-master --migrate-acls`
  once, which sets the table's ACL on every such node and exits;
- `--migrate-acls` also rewrites nodes whose ACL differs from the table (a rotated credential's
  old digest), except registrations that are already closed: their owner's identity is known
  only to the server that created them, and they go away with its session.

The walk is breadth-first with the calls of one level in flight together (pipelined, so 10k
nodes take a fraction of a second), bounded by MAX_NODES.
"""

from __future__ import annotations

from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.security import ACL

from tasks.cluster import Node, ZkAcls, ZkPaths, is_open, node_of
from tasks.errors import ConfigError
from tasks.logs import get_logger

log = get_logger(__name__)

MAX_NODES = 1_000_000
SHOWN = 5


class OpenAcls(ConfigError):
    """exportd znodes that anyone may read or write: a master will not run on them."""


@dataclass(frozen=True, slots=True)
class Found:
    path: str
    acl: tuple[ACL, ...]
    version: int          # the node's ACL version (stat.aversion), for a versioned set_acls


def walk(client: KazooClient, paths: ZkPaths) -> list[Found]:
    """Blocking: every node from the base path down (missing ones skipped), with its ACL."""
    found: list[Found] = []
    level = [paths.base, paths.root] if paths.base != "/" else [paths.root]
    seen = 0
    while level and seen < MAX_NODES:
        seen += len(level)
        acls = [(path, client.get_acls_async(path)) for path in level]
        kids = [(path, client.get_children_async(path)) for path in level if path != paths.base]
        for path, pending in acls:
            try:
                acl, stat = pending.get()
            except NoNodeError:
                continue
            found.append(Found(path, tuple(acl), stat.aversion))
        level = []
        for path, pending in kids:
            try:
                names = pending.get()
            except NoNodeError:
                continue
            level.extend(f"{path}/{name}" for name in sorted(names))
    if level:
        log.warning("acl_walk_truncated", max_nodes=MAX_NODES)
    return found


def check_acls(client: KazooClient, paths: ZkPaths) -> None:
    """Blocking: raise OpenAcls when any exportd node is open (a master's start-up)."""
    opened = [f.path for f in walk(client, paths) if is_open(f.acl)]
    if opened:
        raise OpenAcls(
            f"{len(opened)} ZooKeeper node(s) under {paths.root} are open to anyone "
            f"(e.g. {', '.join(opened[:SHOWN])}): a master will not run on them. Run "
            "`exportd-master --migrate-acls` once to set exportd's ACLs on them "
            "(docs/SECURITY.md, \"ZooKeeper\")", open=len(opened))


def migrate_acls(client: KazooClient, paths: ZkPaths, acls: ZkAcls) -> list[str]:
    """Blocking: set the table's ACL on every node whose ACL differs from it (see the module
    docstring for registrations); returns the paths changed."""
    changed: list[str] = []
    for found in walk(client, paths):
        node = node_of(paths, found.path)
        want = acls.for_node(node) if node is not None else acls.for_node(Node.ROOT)
        if set(found.acl) == set(want):
            continue
        if node is Node.REGISTRATION and not is_open(found.acl):
            continue
        try:
            client.set_acls(found.path, want, version=found.version)
        except NoNodeError:
            continue    # an ephemeral node that went away meanwhile
        changed.append(found.path)
        log.info("acl_migrated", path=found.path, node=node.value if node else "other")
    return changed


def ensure_layout_nodes(client: KazooClient, paths: ZkPaths, acls: ZkAcls,
                        nodes: tuple[str, ...]) -> None:
    """Blocking: create each missing node (parents first) with its table ACL."""
    for path in (paths.base, paths.root, *nodes):
        if path == "/":
            continue
        client.ensure_path(path, acl=acls.for_path(paths, path))
