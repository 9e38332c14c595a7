"""Leader election and fencing: kazoo's Lock recipe, the epoch token, and fenced transactions.

A master contends for the lock under `ZkPaths.election`. The winner bumps the `epoch` node (a
`set` with the version it read); the node's NEW version is the fencing token of its term. It then
writes the ephemeral `leader` node and runs the `lead` coroutine until the term ends.

Every write the leader makes goes through `Term.commit`: ONE ZooKeeper transaction that starts with
`check(epoch, version=token)`. A new leader's bump changes the version, so the write of a deposed
leader fails as a whole (`tasks.errors.Fenced`) instead of corrupting state.

The session state listener runs on kazoo's thread and never blocks: SUSPENDED pauses the term (no
directives, no writes; a maybe-lost session is never acted on), CONNECTED with the same session
resumes it, LOST (or CONNECTED with another session) ends it; the master then contends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    CancelledError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.recipe.lock import Lock

from master import metrics
from tasks.cluster import LeaderInfo, Node, ZkAcls, ZkPaths
from tasks.errors import Conflict, ExportdError, Fenced, NotFound, Unavailable
from tasks.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Create:
    path: str
    data: bytes
    ephemeral: bool = False


@dataclass(frozen=True, slots=True)
class SetData:
    path: str
    data: bytes
    version: int = -1


@dataclass(frozen=True, slots=True)
class Delete:
    path: str
    version: int = -1


Op = Create | SetData | Delete


def _op_error(op: Op, result: Exception) -> ExportdError:
    if isinstance(result, NodeExistsError):
        return Conflict(f"{op.path} already exists", path=op.path)
    if isinstance(result, NoNodeError):
        return NotFound(f"{op.path} does not exist", path=op.path)
    if isinstance(result, BadVersionError):
        return Conflict(f"{op.path} changed concurrently", path=op.path)
    return Unavailable(f"ZooKeeper refused the write of {op.path}: {result!r}", path=op.path)


class Term:
    """One leadership term: the fencing token and the session it was won on."""

    def __init__(self, client: KazooClient, paths: ZkPaths, token: int, info: LeaderInfo,
                 acls: ZkAcls | None = None) -> None:
        self.client = client
        self.paths = paths
        # Every node this term creates gets its ACL from the table; None: the client's default.
        self.acls = acls
        self.token = token
        self.info = info
        self.session_id: int | None = client.client_id[0] if client.client_id else None
        self.started = time.monotonic()
        # Written from kazoo's thread, read anywhere: plain booleans are atomic enough.
        self.suspended = False
        self.lost = False
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.on_change: Callable[[], None] = lambda: None

    @property
    def epoch(self) -> int:
        return self.token

    @property
    def active(self) -> bool:
        """May this term act (write, send directives) right now?"""
        return not self.lost and not self.suspended

    def _notify(self) -> None:
        self._loop.call_soon_threadsafe(self.on_change)

    def end(self) -> None:
        """Thread-safe: the term is over (session lost, step-down, stop)."""
        self.lost = True
        self._loop.call_soon_threadsafe(self.ended.set)
        self._notify()

    def commit(self, ops: Sequence[Op]) -> None:
        """Blocking: apply `ops` atomically, only while `token` is still the epoch's version.

        Raises Fenced when a newer leader bumped the epoch, Unavailable when ZooKeeper cannot be
        reached (the outcome is then unknown: the caller steps down and reloads), and Conflict or
        NotFound for an op that does not fit the stored state."""
        txn = self.client.transaction()
        txn.check(self.paths.epoch, self.token)
        for op in ops:
            if isinstance(op, Create):
                acl = self.acls.for_path(self.paths, op.path) if self.acls is not None else None
                txn.create(op.path, op.data, acl=acl, ephemeral=op.ephemeral)
            elif isinstance(op, SetData):
                txn.set_data(op.path, op.data, version=op.version)
            else:
                txn.delete(op.path, version=op.version)
        try:
            results = txn.commit()
        except KazooException as exc:
            raise Unavailable(f"ZooKeeper write failed: {exc!r}") from exc
        check = results[0]
        if isinstance(check, BadVersionError | NoNodeError):
            metrics.FENCED_WRITES.inc()
            log.warning("fenced_write", epoch=self.token, ops=len(ops))
            raise Fenced(f"epoch {self.token} is no longer current: another master leads",
                         epoch=self.token)
        for op, result in zip(ops, results[1:], strict=True):
            if isinstance(result, Exception) and not isinstance(result, RolledBackError):
                raise _op_error(op, result)


def bump_epoch(client: KazooClient, paths: ZkPaths, acls: ZkAcls | None = None) -> int:
    """Blocking: increment the epoch counter with a versioned set; return the new version."""
    client.ensure_path(paths.epoch, acl=acls.for_node(Node.EPOCH) if acls is not None else None)
    for _ in range(10):   # only a concurrent bump (which the lock excludes) makes this retry
        data, stat = client.get(paths.epoch)
        counter = int(data or b"0") + 1
        try:
            new = client.set(paths.epoch, str(counter).encode(), version=stat.version)
        except BadVersionError:
            continue
        return int(new.version)
    raise Unavailable("could not bump the epoch: it keeps changing")


def _write_leader(term: Term) -> None:
    ops: list[Op] = []
    stat = term.client.exists(term.paths.leader)
    if stat is not None:
        # A predecessor that released the lock but not its node; its session may still live.
        ops.append(Delete(term.paths.leader, stat.version))
    ops.append(Create(term.paths.leader, term.info.to_bytes(), ephemeral=True))
    term.commit(ops)


class Elector:
    """Contend, win, lead, and contend again, until `stop()`."""

    def __init__(self, client: KazooClient, paths: ZkPaths, master_id: str,
                 grpc_address: str, http_url: str, acls: ZkAcls | None = None) -> None:
        self.client = client
        self.paths = paths
        self.acls = acls
        self.master_id = master_id
        self.grpc_address = grpc_address
        self.http_url = http_url
        self.term: Term | None = None
        self._lock: Lock | None = None
        self._stopping = threading.Event()
        self._stopped = asyncio.Event()
        client.add_listener(self._on_state)

    # -- kazoo thread --------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        """Never blocks: it only flips flags and schedules a wake-up on the event loop."""
        term = self.term
        if state == KazooState.SUSPENDED:
            metrics.LEADERSHIP_SUSPENDED.set(1)
            if term is not None:
                term.suspended = True
                term._notify()
        elif state == KazooState.LOST:
            metrics.LEADERSHIP_SUSPENDED.set(0)
            if term is not None:
                term.end()
        else:   # CONNECTED
            metrics.LEADERSHIP_SUSPENDED.set(0)
            if term is None:
                return
            same = bool(self.client.client_id) and self.client.client_id[0] == term.session_id
            if same:
                term.suspended = False
                term._notify()
            else:
                term.end()

    # -- event loop ----------------------------------------------------------------------------

    async def run(self, lead: Callable[[Term], Coroutine[Any, Any, None]]) -> None:
        try:
            while not self._stopping.is_set():
                if not await self._acquire():
                    continue
                try:
                    term = await self._take_office()
                except (ExportdError, KazooException) as exc:
                    log.warning("take_office_failed", error=str(exc))
                    await self._resign()
                    await asyncio.sleep(0.5)
                    continue
                await self._serve(term, lead)
        finally:
            self._stopped.set()

    async def _acquire(self) -> bool:
        lock = Lock(self.client, self.paths.election, identifier=self.master_id)
        self._lock = lock
        try:
            got = bool(await asyncio.to_thread(lock.acquire))
        except CancelledError:
            return False
        except KazooException as exc:
            log.warning("election_retry", error=repr(exc))
            await asyncio.sleep(0.5)
            return False
        if got and self._stopping.is_set():
            await self._resign()
            return False
        return got

    async def _take_office(self) -> Term:
        token = await asyncio.to_thread(bump_epoch, self.client, self.paths, self.acls)
        info = LeaderInfo(id=self.master_id, grpc=self.grpc_address, http=self.http_url,
                          epoch=token, since_unix=time.time())
        term = Term(self.client, self.paths, token, info, self.acls)
        self.term = term
        await asyncio.to_thread(_write_leader, term)
        metrics.EPOCH.set(token)
        log.info("leadership_won", master=self.master_id, epoch=token)
        return term

    async def _serve(self, term: Term, lead: Callable[[Term], Coroutine[Any, Any, None]]) -> None:
        metrics.IS_LEADER.set(1)
        task = asyncio.create_task(lead(term), name="lead")
        ended = asyncio.create_task(term.ended.wait())
        try:
            await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            metrics.IS_LEADER.set(0)
            if not task.done():
                task.cancel()
            ended.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("leading_failed", error=repr(task.exception()))
            term.end()
            self.term = None
            log.info("leadership_ended", master=self.master_id, epoch=term.token,
                     lost=term.lost)
            await self._resign()

    async def _resign(self) -> None:
        """Release the lock and delete our `leader` node (if this session still owns it)."""
        lock, self._lock = self._lock, None

        def release() -> None:
            with contextlib.suppress(KazooException):
                stat = self.client.exists(self.paths.leader)
                if stat is not None and stat.ephemeralOwner == (self.client.client_id or (0,))[0]:
                    self.client.delete(self.paths.leader, version=stat.version)
            if lock is not None:
                with contextlib.suppress(KazooException):
                    lock.release()

        if self.client.connected:
            await asyncio.to_thread(release)

    def step_down(self) -> None:
        """End the current term (e.g. after a write of unknown outcome); contend again."""
        if self.term is not None:
            self.term.end()

    async def stop(self) -> None:
        """Leave at once: end the term, release the lock, stop contending."""
        self._stopping.set()
        if self.term is not None:
            self.term.end()
        lock = self._lock
        if lock is not None:
            lock.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), 10.0)
        await self._resign()


def current_leader(client: KazooClient, paths: ZkPaths) -> LeaderInfo | None:
    """Blocking: the `leader` node's payload, or None."""
    try:
        raw, _ = client.get(paths.leader)
    except NoNodeError:
        return None
    return LeaderInfo.from_bytes(raw)
