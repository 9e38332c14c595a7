"""ZooKeeper side of a server: the ephemeral `servers/<id>` node and the `leader` watch.

kazoo runs its own threads; its callbacks never block and only hand events to the asyncio loop
(`call_soon_threadsafe`). Blocking kazoo calls run in a worker thread (`asyncio.to_thread`).
When the ZooKeeper session expires, the ephemeral node is gone with it: on the next CONNECTED
state the node is created again. kazoo's DataWatch re-reads `leader` after a reconnect itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from tasks.cluster import LeaderInfo, ServerRegistration, ZooKeeperSettings
from tasks.errors import Conflict, Unavailable
from tasks.logs import get_logger

log = get_logger(__name__)

LeaderCallback = Callable[[LeaderInfo | None], None]
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
                 on_leader: LeaderCallback) -> None:
        self._settings = settings
        self.paths = settings.paths()
        self.payload = payload
        self._on_leader = on_leader
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = KazooClient(hosts=settings.hosts, timeout=settings.session_timeout)
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
                self._client.create(self.path, data, ephemeral=True, makepath=True)
                return
            except NodeExistsError:
                pass
            try:
                _, stat = self._client.get(self.path)
            except NoNodeError:
                continue   # it went away between create and get: try again at once
            owner = stat.ephemeralOwner
            if owner == self._client.client_id[0]:
                self._client.set(self.path, data)
                return
            time.sleep(0.2)
        raise Conflict(f"{self.path} is held by another live ZooKeeper session", owner=owner)

    async def stop(self, *, deregister: bool) -> None:
        """Delete our node (a clean exit tells the leader at once) and close the session."""
        self._stopping = True
        if self._reregistering is not None:
            self._reregistering.cancel()
        await asyncio.to_thread(self._stop_blocking, deregister)
        self.registered = False

    def _stop_blocking(self, deregister: bool) -> None:
        try:
            if deregister and self._client.connected:
                with contextlib.suppress(NoNodeError):
                    self._client.delete(self.path)
        finally:
            self._client.stop()
            self._client.close()

