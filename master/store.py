"""The control state in ZooKeeper: jobs, packed assignments, admin flags, server registrations.

Layout (under `ZkPaths.root`):

- `jobs/<id>`: JSON `{"spec": <JobSpec>, "created_unix": t}`; the spec's `state` says running or
  paused.
- `assignments/<shard>`: zlib-compressed JSON
  `{task_id: [server|null, generation, draining_on|null]}` for the tasks whose crc32(id) falls
  in that shard. The shard count is fixed when the first leader creates the nodes (later
  leaders use what exists), so 100k tasks take 64 nodes of ~20 KB.
- `admin/servers/<id>`: JSON `{"cordoned": b, "draining": b, "drain_started_tasks": n,
  "drain_session": s}`; `drain_session` is the ZooKeeper session that owned the server's
  registration when the drain began (0: unknown), so a drain ends once another process registers.
- `servers/<id>`: ephemeral `ServerRegistration`, written by servers; only read here.
- `stories/<shard>`: zlib JSON `{task: {"since": t, "events": [[at, kind, reason, server, gen]]}}`,
  the tasks' recent history for the next leader (master/story.py), bounded per task and per node.

Reads are plain blocking kazoo calls (run them in a thread); writes are returned as ops for the
leader's fenced transaction (`Term.commit`), never written directly.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from master.acls import ensure_layout_nodes
from master.api.ports import TaskEvent
from master.election import Create, Delete, Op, SetData
from tasks.cluster import ServerRegistration, ZkAcls, ZkPaths
from tasks.errors import ValidationError
from tasks.logs import get_logger
from tasks.spec import STORED, JobSpec

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredJob:
    spec: JobSpec
    created_unix: float

    @property
    def incarnation(self) -> int:
        """Which creation of this job id (TaskAssignment.incarnation): its creation time in ms.
        Servers compare generations only within one incarnation, and only for equality of
        incarnations, so a leader's clock need not agree with the last one's."""
        return int(self.created_unix * 1000)


@dataclass(frozen=True, slots=True)
class StoredAssignment:
    """Where a task should run (`server`), at which generation, and where it may still be
    draining after a revoke (`draining_on`): the next leader must wait for that server too."""

    server: str | None
    generation: int
    draining_on: str | None = None


@dataclass(frozen=True, slots=True)
class AdminFlags:
    cordoned: bool = False
    draining: bool = False
    drain_started_tasks: int = 0
    # The session id owning `servers/<id>` when the drain began: the drain is of that process
    # (decisions.drain_over). 0: not known (the server was not registered, or an older master).
    drain_session: int = 0


@dataclass(frozen=True, slots=True)
class StoredStory:
    """A task's story as persisted: since when it runs where it runs, its latest events."""

    since_unix: float | None
    events: tuple[TaskEvent, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    jobs: dict[str, StoredJob]
    assignments: dict[str, StoredAssignment]
    admin: dict[str, AdminFlags]
    servers: dict[str, ServerRegistration]
    shards: int
    stories: dict[str, StoredStory] = field(default_factory=dict)


# -- codecs (pure) -------------------------------------------------------------------------------

def shard_of(task_id: str, shards: int) -> int:
    return zlib.crc32(task_id.encode()) % shards


def encode_job(job: StoredJob) -> bytes:
    body = {"spec": json.loads(job.spec.to_json()), "created_unix": job.created_unix}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_job(raw: bytes) -> StoredJob:
    body = json.loads(raw)
    # STORED: checks added after the job was stored do not make it vanish (tasks/spec.py)
    return StoredJob(JobSpec.model_validate(body["spec"], context=STORED),
                     float(body.get("created_unix", 0.0)))


def encode_shard(items: Mapping[str, StoredAssignment]) -> bytes:
    body = {t: [a.server, a.generation, a.draining_on] for t, a in sorted(items.items())}
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def decode_shard(raw: bytes) -> dict[str, StoredAssignment]:
    if not raw:
        return {}
    body: dict[str, list[Any]] = json.loads(zlib.decompress(raw))
    return {t: StoredAssignment(v[0], int(v[1]), v[2] if len(v) > 2 else None)
            for t, v in body.items()}


def encode_admin(flags: AdminFlags) -> bytes:
    return json.dumps({"cordoned": flags.cordoned, "draining": flags.draining,
                       "drain_started_tasks": flags.drain_started_tasks,
                       "drain_session": flags.drain_session}).encode()


def decode_admin(raw: bytes) -> AdminFlags:
    body = json.loads(raw or b"{}")
    return AdminFlags(bool(body.get("cordoned")), bool(body.get("draining")),
                      int(body.get("drain_started_tasks", 0)), int(body.get("drain_session", 0)))


# Story bounds: events per task, characters per reason, compressed bytes per node (64 nodes:
# 8 MB at most in ZooKeeper, whatever the cluster's size), bytes per write transaction
# (ZooKeeper refuses a request over jute.maxbuffer, 1 MB by default).
STORY_EVENTS = 16
REASON_CHARS = 240
STORY_NODE_BYTES = 128 * 1024
STORY_TXN_BYTES = 512 * 1024


def _story_body(items: Mapping[str, StoredStory], keep: int, reason_chars: int) -> bytes:
    body = {t: {"since": st.since_unix,
                "events": [[e.at_unix, e.kind, e.reason[:reason_chars], e.server, e.generation]
                           for e in (st.events[-keep:] if keep else ())]}
            for t, st in sorted(items.items())}
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def encode_stories(items: Mapping[str, StoredStory], limit: int = STORY_NODE_BYTES) -> bytes:
    """One story node, at most `limit` bytes: when the tasks' last STORY_EVENTS events do not
    fit, each task keeps fewer (halving, down to its newest), then shorter reasons, then only
    `since`."""
    keep = STORY_EVENTS
    while True:
        raw = _story_body(items, keep, REASON_CHARS)
        if len(raw) <= limit or keep == 1:
            break
        keep //= 2
    for chars, events in ((60, 1), (0, 0)):
        if len(raw) <= limit:
            break
        raw = _story_body(items, events, chars)
    return raw


def decode_stories(raw: bytes) -> dict[str, StoredStory]:
    if not raw:
        return {}
    body: dict[str, dict[str, Any]] = json.loads(zlib.decompress(raw))
    out: dict[str, StoredStory] = {}
    for task, st in body.items():
        since = st.get("since")
        events = tuple(TaskEvent(float(e[0]), str(e[1]), str(e[2]), e[3],
                                 None if e[4] is None else int(e[4]))
                       for e in st.get("events") or ())
        out[task] = StoredStory(None if since is None else float(since), events)
    return out


def split_shards(assignments: Mapping[str, StoredAssignment],
                 shards: int) -> dict[int, dict[str, StoredAssignment]]:
    out: dict[int, dict[str, StoredAssignment]] = {i: {} for i in range(shards)}
    for task, a in assignments.items():
        out[shard_of(task, shards)][task] = a
    return out


# -- ZooKeeper access ----------------------------------------------------------------------------

class Store:
    """Blocking reads of the control state and the ops that change it."""

    def __init__(self, client: KazooClient, paths: ZkPaths, shards: int,
                 acls: ZkAcls | None = None) -> None:
        self.client = client
        self.paths = paths
        self.shards = shards
        # The table's ACLs for what ensure_layout creates; None: the client's default ACL.
        self.acls = acls

    def _ensure(self, *nodes: str) -> None:
        if self.acls is None:
            for path in nodes:
                self.client.ensure_path(path)
        else:
            ensure_layout_nodes(self.client, self.paths, self.acls, nodes)

    def ensure_layout(self) -> None:
        """Structural nodes (idempotent, the same for every master, so not fenced), each
        created with its ACL from the table (tasks/cluster.py)."""
        self._ensure(self.paths.jobs, self.paths.assignments, self.paths.servers,
                     self.paths.admin, self.paths.admin_servers, self.paths.election,
                     self.paths.stories)
        existing = self.client.get_children(self.paths.assignments)
        if existing:
            self.shards = len(existing)
        else:
            self._ensure(*(self.paths.assignment_shard(shard) for shard in range(self.shards)))
        # Clusters made before stories existed get their nodes here too.
        if len(self.client.get_children(self.paths.stories)) != self.shards:
            self._ensure(*(self.paths.story_shard(shard) for shard in range(self.shards)))

    def _children(self, path: str) -> list[str]:
        try:
            return sorted(self.client.get_children(path))
        except NoNodeError:
            return []

    def _get(self, path: str) -> bytes | None:
        try:
            raw, _ = self.client.get(path)
        except NoNodeError:
            return None
        return bytes(raw)

    def _load(self, path: str, decode: Callable[[bytes], T], what: str) -> T | None:
        """One node decoded; None when it is missing or unreadable (logged, never fatal:
        one bad node must not stop a leader from loading the rest)."""
        raw = self._get(path)
        if raw is None:
            return None
        try:
            return decode(raw)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            log.error("stored_node_unreadable", kind=what, path=path, error=str(exc))
            return None

    def _load_all(self, folder: str, decode: Callable[[bytes], T], what: str) -> dict[str, T]:
        out: dict[str, T] = {}
        for name in self._children(folder):
            value = self._load(f"{folder}/{name}", decode, what)
            if value is not None:
                out[name] = value
        return out

    def load_jobs(self) -> dict[str, StoredJob]:
        return self._load_all(self.paths.jobs, decode_job, "job")

    def load_assignments(self) -> dict[str, StoredAssignment]:
        out: dict[str, StoredAssignment] = {}
        for shard in self._load_all(self.paths.assignments, decode_shard, "shard").values():
            out.update(shard)
        return out

    def load_admin(self) -> dict[str, AdminFlags]:
        return self._load_all(self.paths.admin_servers, decode_admin, "admin")

    def load_servers(self) -> dict[str, ServerRegistration]:
        return self._load_all(self.paths.servers, ServerRegistration.from_bytes, "server")

    def load_server(self, server_id: str) -> ServerRegistration | None:
        return self._load(self.paths.server(server_id), ServerRegistration.from_bytes, "server")

    def registration_owner(self, server_id: str) -> int | None:
        """The ZooKeeper session that owns `servers/<id>` (one per server process), or None
        when the server is not registered."""
        stat = self.client.exists(self.paths.server(server_id))
        return int(stat.ephemeralOwner) if stat is not None else None

    def load_servers_named(self, names: list[str]) -> list[ServerRegistration | None]:
        return [self.load_server(n) for n in names]

    def load_stories(self) -> dict[str, StoredStory]:
        out: dict[str, StoredStory] = {}
        for shard in self._load_all(self.paths.stories, decode_stories, "story").values():
            out.update(shard)
        return out

    def snapshot(self) -> Snapshot:
        return Snapshot(self.load_jobs(), self.load_assignments(), self.load_admin(),
                        self.load_servers(), self.shards, self.load_stories())

    # -- ops for the fenced transaction --------------------------------------------------------

    def job_ops(self, job: StoredJob, *, create: bool) -> list[Op]:
        path = self.paths.job(job.spec.id)
        return [Create(path, encode_job(job)) if create else SetData(path, encode_job(job))]

    def delete_job_ops(self, job_id: str) -> list[Op]:
        return [Delete(self.paths.job(job_id))]

    def shard_ops(self, contents: Mapping[int, Mapping[str, StoredAssignment]]) -> list[Op]:
        """Rewrite each shard in `contents` with its whole new content."""
        return [SetData(self.paths.assignment_shard(i), encode_shard(items))
                for i, items in sorted(contents.items())]

    def story_ops(self, contents: Mapping[int, Mapping[str, StoredStory]]) -> list[list[Op]]:
        """Rewrite each story shard in `contents`; the ops in batches of at most
        STORY_TXN_BYTES, one fenced transaction each. Blocking (compression): run in a thread."""
        batches: list[list[Op]] = [[]]
        size = 0
        for i, items in sorted(contents.items()):
            data = encode_stories(items)
            if batches[-1] and size + len(data) > STORY_TXN_BYTES:
                batches.append([])
                size = 0
            path = self.paths.story_shard(i)
            batches[-1].append(SetData(path, data) if self.client.exists(path) is not None
                               else Create(path, data))
            size += len(data)
        return [b for b in batches if b]

    def admin_ops(self, server_id: str, flags: AdminFlags) -> list[Op]:
        path = self.paths.admin_server(server_id)
        data = encode_admin(flags)
        if self.client.exists(path) is None:
            return [Create(path, data)]
        return [SetData(path, data)]
