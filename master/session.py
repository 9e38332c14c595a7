"""The gRPC Coordinator service: one bidirectional heartbeat stream per export server.

Every Report updates the live view and is answered with an Ack (epoch, lease, heartbeat interval
from the cluster's budget). A Directive (epoch + the server's FULL desired set) goes out when the
stream opens and whenever that set changed and was persisted. A server without a `servers/<id>`
node gets Reregister instead of an Ack. A master that does not lead, or whose leadership is
suspended, refuses or closes streams with UNAVAILABLE: servers then find the leader again.

With TLS (the default), a stream speaks for server X only when the client certificate names
server X of this cluster (tasks.tls.may_open_session); any other stream is refused with
PERMISSION_DENIED before it is acked, sent a directive or allowed to replace X's stream, and a
stream never changes the server it speaks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio

from master import metrics
from master.reconcile import Leadership
from master.state import LiveState
from master.wire_errors import abort_with
from proto import exportd_pb2 as pb
from proto import exportd_pb2_grpc as pb_grpc
from tasks.errors import Forbidden, Unavailable
from tasks.grpc_tls import peer_identities_of
from tasks.logs import get_logger
from tasks.tls import Identity, may_open_session

log = get_logger(__name__)

# Messages waiting for a slow server; beyond this the stream is closed (it reconnects).
QUEUE_LIMIT = 256
_CLOSE = object()
Fingerprint = tuple[tuple[str, int, int, int, int], ...]


class Connection:
    def __init__(self, peer: list[Identity] | None = None) -> None:
        # The identities of the client certificate; None: TLS is off (tls.insecure).
        self.peer = peer
        self.denied = ""
        self.server_id: str | None = None
        self.queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_LIMIT)
        self.directive_seq = 0
        self.sent: Fingerprint | None = None
        self.close_reason = ""

    def send(self, message: pb.LeaderMessage) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close("the server does not read its stream")

    def close(self, reason: str) -> None:
        self.close_reason = reason
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSE)

    def deny(self, reason: str) -> None:
        """Refuse the stream: nothing more is sent on it but PERMISSION_DENIED."""
        self.denied = reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE)


def directive_message(state: LiveState, server_id: str, epoch: int,
                      seq: int) -> tuple[pb.LeaderMessage, Fingerprint]:
    """The server's whole desired set; the fingerprint (task, generation, incarnation, spec
    hash) says whether it differs from the last one sent."""
    desired: list[pb.TaskAssignment] = []
    for rec in state.desired(server_id):
        spec, job = state.job_json.get(rec.job), state.jobs.get(rec.job)
        if spec is None or job is None:
            continue   # job deleted: about to be revoked
        desired.append(pb.TaskAssignment(task_id=rec.id, generation=rec.generation,
                                         job_id=rec.job, topic=rec.topic,
                                         partition=rec.partition, spec_json=spec,
                                         incarnation=job.incarnation,
                                         job_tasks=state.job_tasks.get(rec.job, 0)))
    fingerprint = tuple((a.task_id, a.generation, a.incarnation, hash(a.spec_json), a.job_tasks)
                        for a in desired)
    message = pb.LeaderMessage(epoch=epoch, directive=pb.Directive(seq=seq, desired=desired))
    return message, fingerprint


class SessionService(pb_grpc.CoordinatorServicer):  # type: ignore[misc]
    def __init__(self, leadership: Callable[[], Leadership | None], *,
                 cluster: str | None = None) -> None:
        """`cluster`: check client certificates' identities against it; None: TLS is off."""
        self._leadership = leadership
        self._cluster = cluster
        self._conns: dict[str, Connection] = {}

    # -- called by the reconcile loop --------------------------------------------------------

    def attach(self, lead: Leadership) -> None:
        lead.push_directives = lambda servers: self.push(lead, servers)

    def push(self, lead: Leadership, servers: set[str]) -> None:
        for sid in servers:
            conn = self._conns.get(sid)
            if conn is not None:
                self._send_directive(lead, conn, force=False)

    def close_all(self, reason: str) -> None:
        for conn in list(self._conns.values()):
            conn.close(reason)
        self._conns.clear()

    def _send_directive(self, lead: Leadership, conn: Connection, *, force: bool) -> None:
        state = lead.state
        if state is None or conn.server_id is None or not lead.term.active:
            return   # never direct on a maybe-lost session
        message, fingerprint = directive_message(state, conn.server_id, lead.term.epoch,
                                                 conn.directive_seq + 1)
        if not force and fingerprint == conn.sent:
            return
        conn.directive_seq += 1
        conn.sent = fingerprint
        conn.send(message)

    # -- the stream ----------------------------------------------------------------------------

    def _current(self) -> Leadership:
        lead = self._leadership()
        if lead is None or not lead.active:
            raise Unavailable("this master does not lead (or its leadership is suspended)")
        return lead

    async def Session(
        self, request_iterator: AsyncIterator[pb.ServerMessage],
        context: grpc.aio.ServicerContext[pb.ServerMessage, pb.LeaderMessage],
    ) -> AsyncIterator[pb.LeaderMessage]:
        try:
            lead = self._current()
        except Unavailable as exc:
            await abort_with(context, exc)
            return
        conn = Connection(peer_identities_of(context) if self._cluster is not None else None)
        reader = asyncio.create_task(self._read(lead, conn, request_iterator))
        ended = asyncio.create_task(lead.term.ended.wait())
        try:
            while True:
                getter = asyncio.create_task(conn.queue.get())
                await asyncio.wait({getter, reader, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if ended.done():
                        conn.close_reason = "leadership ended"
                    break
                item = getter.result()
                if item is _CLOSE:
                    break
                assert isinstance(item, pb.LeaderMessage)
                yield item
        finally:
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.warning("session_read_failed", server=conn.server_id,
                            error=repr(reader.exception()))
            reader.cancel()
            ended.cancel()
            if conn.server_id is not None and self._conns.get(conn.server_id) is conn:
                del self._conns[conn.server_id]
        if conn.denied:
            await abort_with(context, Forbidden(conn.denied))
        if conn.close_reason:
            await abort_with(context, Unavailable(conn.close_reason))

    async def _read(self, lead: Leadership, conn: Connection,
                    requests: AsyncIterator[pb.ServerMessage]) -> None:
        async for message in requests:
            if message.WhichOneof("body") != "report":
                continue
            if not lead.active:
                conn.close("leadership is suspended")
                return
            await self._on_report(lead, conn, message.report)
            if conn.denied:
                return

    @staticmethod
    def _deny(conn: Connection, claimed: str, reason: str) -> None:
        log.warning("session_refused", claimed=claimed, reason=reason,
                    peer=[f"{i.cluster}/{i.role}/{i.id}" for i in conn.peer or []])
        metrics.SESSIONS_REFUSED.inc()
        conn.deny(reason)

    async def _on_report(self, lead: Leadership, conn: Connection, report: pb.Report) -> None:
        received = time.perf_counter()
        metrics.HEARTBEATS.inc()
        sid = report.server_id
        first = conn.server_id is None
        if not first and sid != conn.server_id:
            self._deny(conn, sid, f"a stream of server {conn.server_id!r} reported as {sid!r}")
            return
        if first and conn.peer is not None and not may_open_session(
                conn.peer, cluster=self._cluster or "", server_id=sid):
            self._deny(conn, sid, f"the client certificate does not name server {sid!r} of "
                                  "this cluster")
            return
        if first:
            if not sid or not await lead.known_server(sid):
                conn.send(pb.LeaderMessage(epoch=lead.term.epoch, reregister=pb.Reregister(
                    reason=f"no registration for server {sid!r}")))
                return
            conn.server_id = sid
            old = self._conns.get(sid)
            if old is not None:
                old.close("a newer stream from the same server")
            self._conns[sid] = conn
            log.info("session_opened", server=sid, epoch=lead.term.epoch)
        state = lead.state
        if state is None or not lead.term.active:
            conn.close("leadership is suspended")
            return
        before = len(state.push) + len(state.dirty_shards)
        joined = sid not in state.servers or not state.servers[sid].reported
        state.ingest_report(report, time.monotonic(), time.time())
        conn.send(pb.LeaderMessage(epoch=lead.term.epoch, ack=pb.Ack(
            report_seq=report.seq, lease_ttl_s=lead.settings.lease_ttl,
            heartbeat_interval_s=lead.heartbeat_interval())))
        metrics.REPORT_ACK_SECONDS.observe(time.perf_counter() - received)
        if first and sid not in state.push:
            # The set we send must be persisted: a set changed in this round goes out after
            # the round's write instead.
            self._send_directive(lead, conn, force=True)
        if joined or len(state.push) + len(state.dirty_shards) != before:
            lead.kick()
