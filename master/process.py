"""`Master`: one master process wired together — ZooKeeper client, gRPC Coordinator service,
HTTP API, election, and the leadership term's reconcile loop.

`start()` opens the listeners (port 0: a free port; the advertised addresses go into the `leader`
node) and starts contending; `stop()` releases leadership FIRST (a standby takes over at once),
then closes streams, listeners and the ZooKeeper session. Usable in-process (tests, benchmarks)
and from `exportd-master` (master/main.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc.aio
from aiohttp import web
from kazoo.client import KazooClient

from master.acls import check_acls
from master.api.app import create_app
from master.api.forward import master_peer_context
from master.api.listener import ApiSite
from master.api.tls import api_server_context
from master.control import MasterControl, StandbyReader
from master.election import Elector, Term
from master.iceberg.service import IcebergCommits
from master.partitions import PartitionSource
from master.reconcile import Leadership, Planner, config_from
from master.session import SessionService
from master.settings import MasterSettings
from master.store import Store
from proto import exportd_pb2_grpc as pb_grpc
from tasks.cluster import Node, Role
from tasks.errors import Unavailable
from tasks.grpc_tls import server_credentials
from tasks.logs import get_logger

log = get_logger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.setblocking(False)
    return sock


class Master:
    def __init__(self, settings: MasterSettings, planner: Planner) -> None:
        settings.tls.require()   # secure by default: no certificates, no master
        self.settings = settings
        self.planner = planner
        zk = settings.zookeeper
        self.paths = zk.paths()
        # Digest auth; what this master creates is masters-only unless the ACL table says
        # more (tasks/cluster.py): ConfigError here when the credentials are missing.
        self.acls = zk.acls(Role.MASTER)
        self.client = KazooClient(**zk.client_options(),
                                  default_acl=self.acls.for_node(Node.ROOT))
        self.store = Store(self.client, self.paths, settings.assignment_shards, self.acls)
        self.partitions = PartitionSource(settings.kafka.bootstrap_servers,
                                          settings.kafka.metadata_timeout,
                                          access=settings.kafka.access())
        self.leadership: Leadership | None = None
        self.sessions = SessionService(
            lambda: self.leadership,
            cluster=None if settings.tls.insecure else settings.zookeeper.cluster)
        self.standby = StandbyReader(self.store, planner, config_from(settings))
        self.control = MasterControl(settings.id, lambda: self.leadership, self.standby,
                                     planner, config_from(settings))
        self.elector: Elector | None = None
        self.grpc_address = ""
        self.http_url = ""
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.to_thread(self.client.start, self.settings.zookeeper.session_timeout * 3)
        # Refuse open znodes (OpenAcls) before writing anything: --migrate-acls closes them.
        await asyncio.to_thread(check_acls, self.client, self.paths)
        await asyncio.to_thread(self.store.ensure_layout)
        await self._start_grpc()
        await self._start_http()
        self.elector = Elector(self.client, self.paths, self.settings.id, self.grpc_address,
                               self.http_url, self.acls)
        self._tasks = [
            asyncio.create_task(self.elector.run(self._lead), name="election"),
            asyncio.create_task(self.standby.run(self.control.is_leader), name="standby"),
        ]
        log.info("master_started", master=self.settings.id, grpc=self.grpc_address,
                 http=self.http_url)

    async def _start_grpc(self) -> None:
        server = grpc.aio.server()
        pb_grpc.add_CoordinatorServicer_to_server(self.sessions, server)
        cfg = self.settings.grpc
        address = f"{cfg.host}:{cfg.port}"
        if self.settings.tls.insecure:
            log.warning("grpc_insecure", detail="tls.insecure: heartbeat sessions are plaintext "
                        "and unauthenticated")
            port = server.add_insecure_port(address)
        else:   # mTLS: servers' certificates from the cluster CA, checked per stream
            port = server.add_secure_port(address, server_credentials(self.settings.tls))
        await server.start()
        self._grpc = server
        self.grpc_address = cfg.advertised(port)

    async def _start_http(self) -> None:
        cfg = self.settings.http
        sock = _bind(cfg.host, cfg.port)
        tls = self.settings.tls
        # The API over TLS with this master's certificate, renewed files served without a
        # restart (no client certificates: callers prove themselves with tokens); a standby
        # forwards only to a verified master.
        serving = None if tls.insecure else api_server_context(tls)
        forward = None if tls.insecure else master_peer_context(
            tls, self.settings.zookeeper.cluster)
        app = create_app(self.control, self.settings.api_settings(), forward_ssl=forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # ApiSite: deadlines for a request's head and the TLS handshake (slowloris)
        await ApiSite(runner, sock, ssl_context=serving,
                      header_timeout=self.settings.api.header_timeout).start()
        self._http = runner
        scheme = "http" if serving is None else "https"
        self.http_url = f"{scheme}://{cfg.advertised(sock.getsockname()[1])}"

    async def _lead(self, term: Term) -> None:
        assert self.elector is not None
        lead = Leadership(term, self.store, self.settings, self.planner, self.partitions,
                          self.elector.step_down)
        self.sessions.attach(lead)
        self.leadership = lead
        self.standby.invalidate()   # a snapshot from before this term is never served again
        # Iceberg jobs' tables are committed by this term only (master/iceberg/service.py).
        commits = asyncio.create_task(
            IcebergCommits(lead, self.settings, lambda: self.leadership).run(),
            name="iceberg-commits")
        try:
            await lead.run()
        finally:
            commits.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await commits
            self.leadership = None
            self.standby.invalidate()   # nor the one from before it: read afresh first
            self.sessions.close_all("leadership ended")

    @property
    def term(self) -> Term | None:
        return self.elector.term if self.elector is not None else None

    async def wait_leading(self, timeout: float) -> Leadership:
        """Until this master leads and has loaded its state (tests, benchmarks)."""
        async with asyncio.timeout(timeout):
            while True:
                lead = self.leadership
                if lead is not None and lead.ready.is_set() and lead.active:
                    return lead
                await asyncio.sleep(0.05)

    def leading(self) -> Leadership:
        lead = self.leadership
        if lead is None:
            raise Unavailable("not leading")
        return lead

    async def stop(self) -> None:
        if self.elector is not None:
            await self.elector.stop()      # hand over first
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.sessions.close_all("master stopping")
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._http is not None:
            await self._http.cleanup()
        await asyncio.to_thread(self._close_zk)
        self.partitions.close()
        log.info("master_stopped", master=self.settings.id)

    def _close_zk(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()
