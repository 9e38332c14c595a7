"""The heartbeat session: one bidirectional gRPC stream to the current leader, kept alive.

`SessionLoop.run` connects to the leader named by the `leader` znode, sends a report at once and
then every heartbeat interval (or sooner when the host asks), and hands every message it reads
to the host. The stream is dropped and opened again when the leader changes (at once), when the
host asks (Reregister, self-fencing), or when it breaks (after a back-off with full jitter, so a
thousand servers do not reconnect to a new leader in the same instant).

With TLS (the default) the channel presents this server's certificate and accepts only a leader
whose certificate comes from the cluster CA and carries the master name of this cluster
(tasks/grpc_tls.py): a listener with a server's certificate, or one from another CA, fails the
handshake and the session is retried with back-off, never believed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Protocol

import grpc
import grpc.aio

from proto import exportd_pb2 as pb
from proto import exportd_pb2_grpc as pb_grpc
from server import metrics
from server.settings import SessionSettings
from tasks.cluster import LeaderInfo
from tasks.grpc_tls import channel_credentials, channel_options
from tasks.logs import get_logger
from tasks.tls import TlsSettings, master_tls_name

log = get_logger(__name__)


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Full jitter: uniform in [low, min(high, low * 2**attempt)]."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return rng.uniform(low, max(ceiling, low))


def tls_hint(details: str, cluster: str) -> dict[str, str]:
    """What a TLS failure of the session means, for the log line (docs/OPERATIONS.md)."""
    if "Hostname Verification" in details or "not in peer certificate" in details:
        return {"hint": f"the listener's certificate is not a master of cluster {cluster!r} "
                        f"(no DNS name {master_tls_name(cluster)})"}
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return {"hint": "the listener's certificate is not from the CA in tls.ca_file"}
    return {}


class SessionHost(Protocol):
    """What the session needs from the server host."""

    def build_report(self, seq: int) -> pb.Report: ...

    def handle(self, message: pb.LeaderMessage) -> None: ...

    def session_started(self) -> None: ...

    @property
    def heartbeat_interval(self) -> float: ...


class SessionLoop:
    def __init__(self, host: SessionHost, settings: SessionSettings, *, tls: TlsSettings,
                 cluster: str) -> None:
        self._host = host
        self._tls = tls
        self._cluster = cluster
        self._settings = settings
        self._rng = random.Random()
        self._leader: LeaderInfo | None = None
        self._wake = asyncio.Event()          # leader changed or reconnect requested
        self._report_now = asyncio.Event()
        self._stopping = False
        self._backoff_next = False
        self.connected = False                # a stream is open and the leader answered on it
        self.target: str | None = None

    @property
    def leader(self) -> LeaderInfo | None:
        return self._leader

    def set_leader(self, info: LeaderInfo | None) -> None:
        """From the `leader` watch. A new address (or epoch) means a new session."""
        old = self._leader
        self._leader = info
        if info is not None and (old is None or (old.grpc, old.epoch) != (info.grpc, info.epoch)):
            log.info("leader_changed", leader=info.id, grpc=info.grpc, epoch=info.epoch)
            self._wake.set()

    def reconnect(self, *, backoff: bool = False) -> None:
        """Drop the stream and open another: at once, or after the back-off (a Reregister: if
        the leader still does not know us, we must not hammer it in a tight loop)."""
        self._backoff_next = self._backoff_next or backoff
        self._wake.set()

    def report_now(self) -> None:
        self._report_now.set()

    def mark_answered(self) -> None:
        self.connected = True

    async def run(self) -> None:
        """Until `stop()`: keep one session with the current leader."""
        attempt = 0
        while not self._stopping:
            leader = self._leader
            if leader is None:
                self._wake.clear()
                await self._wait_wake(self._settings.reconnect_max)
                continue
            self._wake.clear()
            outcome = await self._one_session(leader.grpc)
            if self._stopping:
                break
            if outcome == "answered":
                attempt = 0
            if self._wake.is_set() and not self._backoff_next:
                # Leader change or a requested reconnect: go at once.
                metrics.SESSION_RECONNECTS.labels(reason="requested").inc()
                continue
            metrics.SESSION_RECONNECTS.labels(
                reason="reregister" if self._backoff_next else "broken").inc()
            self._backoff_next = False
            self._wake.clear()
            delay = backoff_delay(attempt, self._settings.reconnect_min,
                                  self._settings.reconnect_max, self._rng)
            attempt += 1
            await self._wait_wake(delay)

    async def _wait_wake(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _one_session(self, target: str) -> str:
        """Run one stream until it ends or a wake-up; returns "answered" if the leader answered."""
        self.target = target
        self.connected = False
        answered = False
        async with self._channel(target) as channel:
            call = pb_grpc.CoordinatorStub(channel).Session()
            self._host.session_started()
            writer = asyncio.ensure_future(self._write(call))
            reader = asyncio.ensure_future(self._read(call))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({writer, reader, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (writer, reader, waker):
                    task.cancel()
                call.cancel()
                results = await asyncio.gather(writer, reader, waker, return_exceptions=True)
                answered = self.connected
                self.connected = False
            for result in results:
                if isinstance(result, grpc.aio.AioRpcError):
                    log.warning("session_broken", target=target, code=result.code().name,
                                details=result.details(),
                                **tls_hint(result.details() or "", self._cluster))
                elif isinstance(result, Exception) and not isinstance(
                        result, asyncio.CancelledError):
                    log.error("session_failed", target=target, error=repr(result))
        return "answered" if answered else "unanswered"

    def _channel(self, target: str) -> grpc.aio.Channel:
        if self._tls.insecure:
            return grpc.aio.insecure_channel(target)
        # Files read per session: a renewed certificate is used from the next session on.
        return grpc.aio.secure_channel(target, channel_credentials(self._tls),
                                       options=channel_options(self._cluster))

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        seq = 0
        while True:
            seq += 1
            self._report_now.clear()
            report = self._host.build_report(seq)
            await call.write(pb.ServerMessage(report=report))
            metrics.REPORTS_SENT.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), self._host.heartbeat_interval)

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        async for message in call:
            self._host.handle(message)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
