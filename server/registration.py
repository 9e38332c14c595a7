"""ZooKeeper side of a server: the ephemeral `servers/<id>` node, the `leader` and `epoch`
watches, and the re-read of `epoch` that confirms a leader's claim.

kazoo runs its own threads; its callbacks never block and only hand events to the asyncio loop
(`call_soon_threadsafe`). Blocking kazoo calls run in a worker thread (`asyncio.to_thread`).
When the ZooKeeper session expires, the ephemeral node is gone with it: on the next CONNECTED
state the node is created again. kazoo's DataWatch re-reads `leader` after a reconnect itself.

The session authenticates twice (digest): as the servers' role (READ on leader/epoch, CREATE on
servers/) and as this process alone, with a credential made up at start and never stored, which
the registration's ACL names (tasks/cluster.py, Node.REGISTRATION): no other server can change
it. Nobody but a master may delete it: the node goes away with this session (closed at stop, or
expired), which no ACL governs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NoAuthError, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat
from kazoo.security import make_digest_acl_credential

from server.reconcile import EpochRead
from tasks.cluster import LeaderInfo, Node, Role, ServerRegistration, ZooKeeperSettings
from tasks.errors import Conflict, Unavailable
from tasks.logs import get_logger

log = get_logger(__name__)

LeaderCallback = Callable[[LeaderInfo | None], None]
EpochCallback = Callable[[EpochRead | None], None]
# Waiting out a previous incarnation's node: bounded by time (2 session timeouts) and count.
REGISTER_ATTEMPTS = 1000


def parse_leader(raw: bytes | None) -> LeaderInfo | None:
    """The `leader` node's payload, or None when there is no leader or it cannot be read."""
    if not raw:
        return None
    try:
        return LeaderInfo.from_bytes(raw)
    except (ValueError, TypeError) as exc:
        log.warning("leader_payload_unreadable", error=str(exc))
        return None


class Registration:
    def __init__(self, settings: ZooKeeperSettings, payload: ServerRegistration,
                 on_leader: LeaderCallback, on_epoch: EpochCallback | None = None) -> None:
        self._settings = settings
        self.paths = settings.paths()
        self.payload = payload
        self._on_leader = on_leader
        self._on_epoch = on_epoch
        self._loop: asyncio.AbstractEventLoop | None = None
        acls = settings.acls(Role.SERVER)     # ConfigError without credentials
        # This process's own identity: a credential made up now, known to nobody else.
        user = "owner-" + payload.id.replace(":", "_")
        password = secrets.token_urlsafe(24)
        self._acl = acls.for_node(Node.REGISTRATION, make_digest_acl_credential(user, password))
        options = settings.client_options()
        options["auth_data"] = [*options.get("auth_data", []), ("digest", f"{user}:{password}")]
        self._client = KazooClient(**options, default_acl=self._acl)
        self._lost = False
        self._stopping = False
        self._reregistering: asyncio.Task[None] | None = None
        self.registered = False

    @property
    def path(self) -> str:
        return self.paths.server(self.payload.id)

    async def start(self) -> None:
        """Connect, register, and start watching `leader`."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._client.start, self._settings.session_timeout * 3)
            self._client.add_listener(self._on_state)
            await self.register()
        except BaseException as exc:
            # Never leave kazoo's threads retrying behind a server that failed to start.
            await asyncio.to_thread(self._stop_blocking, False)
            if isinstance(exc, Conflict) or not isinstance(exc, Exception):
                raise
            # kazoo raises its own timeout and connection classes.
            raise Unavailable(f"cannot register in ZooKeeper at {self._settings.hosts}: "
                              f"{exc!r}") from exc
        self._client.DataWatch(self.paths.leader, self._on_leader_data)
        self._client.DataWatch(self.paths.epoch, self._on_epoch_data)

    def _on_state(self, state: str) -> None:
        # kazoo's thread: record and hand over, never block.
        if self._stopping:
            return
        if state == KazooState.LOST:
            self._lost = True
            self.registered = False
            log.warning("zookeeper_session_lost")
        elif state == KazooState.CONNECTED and self._lost:
            self._lost = False
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.register_soon)

    def register_soon(self) -> None:
        """(Re)create the node in the background; used after a session expiry or a Reregister."""
        if self._stopping or (self._reregistering and not self._reregistering.done()):
            return
        self._reregistering = asyncio.ensure_future(self._register_logged())

    async def _register_logged(self) -> None:
        try:
            await self.register()
        except (Conflict, Unavailable, KazooException) as exc:
            log.error("reregister_failed", error=str(exc))

    def _on_leader_data(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        info = parse_leader(data)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_leader, info)

    def _on_epoch_data(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        read = EpochRead(stat.czxid, stat.version) if stat is not None else None
        if self._on_epoch is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_epoch, read)

    async def read_epoch(self) -> EpochRead | None:
        """The `epoch` znode now: `sync` first, so a lagging ZooKeeper server catches up with
        the leader's bump before we read. None when it is missing or cannot be read."""
        def blocking() -> EpochRead | None:
            self._client.sync(self.paths.epoch)
            stat = self._client.exists(self.paths.epoch)
            return EpochRead(stat.czxid, stat.version) if stat is not None else None
        try:
            return await asyncio.to_thread(blocking)
        except KazooException as exc:
            log.warning("epoch_read_failed", error=repr(exc))
            return None

    async def register(self) -> None:
        """Create the ephemeral node; if it is ours already (same session), refresh it. A node
        held by another live session (same id on another process) is waited out for a while:
        it may be our own previous incarnation whose session has not expired yet."""
        await asyncio.to_thread(self._register_blocking)
        self.registered = True
        log.info("registered", path=self.path)

    def _register_blocking(self) -> None:
        data = self.payload.to_bytes()
        deadline = time.monotonic() + 2 * self._settings.session_timeout + 1.0
        owner = 0
        for _ in range(REGISTER_ATTEMPTS):
            if time.monotonic() > deadline:
                break
            try:
                # No makepath: servers/ is the masters' to create (servers may only CREATE in it).
                self._client.create(self.path, data, acl=self._acl, ephemeral=True)
                return
            except NodeExistsError:
                pass
            except NoNodeError:
                # servers/ is the masters' to create: wait for one (servers and masters of a
                # new cluster start together), within the deadline.
                owner = -1
                time.sleep(0.2)
                continue
            try:
                stat = self._client.exists(self.path)
            except NoAuthError:
                # Another session's node, created with ITS owner's ACL: not ours to read.
                owner = 0
                time.sleep(0.2)
                continue
            if stat is None:
                continue   # it went away between create and exists: try again at once
            owner = stat.ephemeralOwner
            if owner == self._client.client_id[0]:
                self._client.set(self.path, data)
                return
            time.sleep(0.2)
        if owner == -1:
            raise Unavailable(f"{self.paths.servers} does not exist: no master has prepared "
                              "this cluster in ZooKeeper yet")
        raise Conflict(f"{self.path} is held by another live ZooKeeper session", owner=owner)

    async def stop(self, *, deregister: bool) -> None:
        """Close the session: ZooKeeper deletes our ephemeral node with it at once (a clean exit
        tells the leader at once). `deregister` is kept for callers: closing always does it."""
        self._stopping = True
        if self._reregistering is not None:
            self._reregistering.cancel()
        await asyncio.to_thread(self._stop_blocking, deregister)
        self.registered = False

    def _stop_blocking(self, deregister: bool) -> None:
        # No explicit delete: servers have no DELETE on servers/ (it would let any server delete
        # any registration); closing the session removes the ephemeral node.
        self._client.stop()
        self._client.close()

