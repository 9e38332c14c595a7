"""Simulated export servers for the master's integration tests and benchmarks.

A `SimServer` registers its ephemeral `servers/<id>` node, holds one heartbeat stream to the
leader named by the `leader` node, reports every interval the leader asks for, and "runs" the
tasks of the last directive it accepted: a task that leaves the desired set is reported STOPPED
once (the handoff's first half) and then forgotten. It records every directive with the time it
arrived, so tests can check what was assigned where and when. `silent = True` stops its reports
while the stream stays open (a hung server). Many SimServers may share one gRPC channel.
With `tls` (a `tls:` block and the cluster) its own channel is mTLS with that certificate, as a
real server's is; without, plaintext (for a master started with tls.insecure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from master.store import StoredAssignment, StoredJob, encode_job, encode_shard, split_shards
from proto import exportd_pb2 as pb
from proto import exportd_pb2_grpc as pb_grpc
from tasks.cluster import LeaderInfo, Node, Role, ServerRegistration, ZkPaths
from tasks.grpc_tls import channel_credentials, channel_options
from tasks.runner import task_id
from tasks.spec import parse_job_spec
from tasks.tls import TlsSettings
from tools.infra import Infra, start_infra
from tools.infra.zkauth import session_credentials
from tools.pki import DevPki, tls_settings_for, write_dev_pki

BIN = Path(sys.executable).parent


@dataclass
class Received:
    at: float                      # time.monotonic()
    at_unix: float
    epoch: int
    desired: dict[str, int]        # task -> generation
    specs: dict[str, bytes] = field(default_factory=dict)  # task -> job spec, if recorded
    incarnations: dict[str, int] = field(default_factory=dict)  # task -> its job's incarnation


@dataclass
class SimServer:
    id: str
    paths: ZkPaths
    zk: KazooClient
    group: str = "default"
    cpu_cores: float = 4.0
    net_bytes_per_s: float = 100e6
    task_cpu: float = 0.05
    task_bytes: float = 10_000.0
    task_error: str = ""          # every running task's last_error in reports (tests)
    silent: bool = False
    record_specs: bool = False   # keep each directive's specs (tests; benchmarks have 50k tasks)
    channel: grpc.aio.Channel | None = None      # shared channel; else one per connection
    tls: TlsSettings | None = None                # own channel's certificate; None: plaintext
    tls_cluster: str = ""                         # the cluster whose master the leader must be
    # observed
    directives: list[Received] = field(default_factory=list)
    acks: int = 0
    reregisters: int = 0
    refused: int = 0                              # streams ended by the leader with an error
    highest_epoch: int = 0
    last_report_at: float | None = None
    interval: float = 0.5
    ack_latencies: list[float] = field(default_factory=list)
    # simulated tasks
    running: dict[str, int] = field(default_factory=dict)
    stopping: dict[str, int] = field(default_factory=dict)
    stopped_reported_at: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _sent_at: dict[int, float] = field(default_factory=dict)
    _own_channel: grpc.aio.Channel | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    # -- registration ------------------------------------------------------------------------

    def registration(self) -> ServerRegistration:
        return ServerRegistration(self.id, self.group, f"127.0.0.1:{9000}", self.cpu_cores,
                                  self.net_bytes_per_s, "sim")

    def register(self) -> None:
        """Blocking: create the ephemeral registration node."""
        self.zk.ensure_path(self.paths.servers)
        with contextlib.suppress(NodeExistsError):
            self.zk.create(self.paths.server(self.id), self.registration().to_bytes(),
                           ephemeral=True)

    def deregister(self) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.delete(self.paths.server(self.id))

    # -- the session -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._own_channel is not None:
            await self._own_channel.close(None)
            self._own_channel = None

    def _leader(self) -> LeaderInfo | None:
        try:
            raw, _ = self.zk.get(self.paths.leader)
        except NoNodeError:
            return None
        return LeaderInfo.from_bytes(raw)

    async def _run(self) -> None:
        while True:
            leader = await asyncio.to_thread(self._leader)
            if leader is None:
                await asyncio.sleep(0.1)
                continue
            try:
                await self._session(leader)
            except grpc.aio.AioRpcError:
                self.refused += 1
            await asyncio.sleep(0.1)

    async def _session(self, leader: LeaderInfo) -> None:
        channel = self.channel
        if channel is None:
            if self._own_channel is not None:
                await self._own_channel.close(None)
            channel = self._own_channel = sim_channel(leader.grpc, self.tls, self.tls_cluster)
        stub = pb_grpc.CoordinatorStub(channel)
        call = stub.Session(self._reports())
        async for message in call:
            self._handle(message)

    async def _reports(self) -> AsyncIterator[pb.ServerMessage]:
        seq = 0
        while True:
            if not self.silent:
                seq += 1
                self._sent_at[seq] = time.perf_counter()
                self._sent_at.pop(seq - 100, None)
                yield pb.ServerMessage(report=self.report(seq))
                self.last_report_at = time.monotonic()
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    def report_now(self) -> None:
        self._wake.set()

    def report(self, seq: int) -> pb.Report:
        statuses = [pb.TaskStatus(task_id=t, generation=g, state=pb.TASK_STATE_RUNNING,
                                  cpu_seconds_per_s=self.task_cpu, bytes_per_s=self.task_bytes,
                                  records_per_s=10.0, consumer_lag=0, committed_offset=1,
                                  last_error=self.task_error)
                    for t, g in sorted(self.running.items())]
        for t, g in sorted(self.stopping.items()):
            statuses.append(pb.TaskStatus(task_id=t, generation=g, state=pb.TASK_STATE_STOPPED))
            self.stopped_reported_at[t] = time.monotonic()
        self.stopping.clear()      # reported once, then forgotten
        load = self.task_cpu * len(self.running)
        return pb.Report(
            server_id=self.id, group=self.group, address="127.0.0.1:9000",
            capacity=pb.Resources(cpu_cores=self.cpu_cores, net_bytes_per_s=self.net_bytes_per_s),
            usage=pb.Usage(cpu_fraction=min(1.0, load / self.cpu_cores),
                           net_in_bytes_per_s=self.task_bytes * len(self.running)),
            tasks=statuses, seq=seq, highest_epoch_seen=self.highest_epoch, version="sim",
            sent_at_unix=time.time())

    def _handle(self, message: pb.LeaderMessage) -> None:
        if message.epoch < self.highest_epoch:
            return
        self.highest_epoch = message.epoch
        kind = message.WhichOneof("body")
        if kind == "ack":
            self.acks += 1
            sent = self._sent_at.pop(message.ack.report_seq, None)
            if sent is not None:
                self.ack_latencies.append(time.perf_counter() - sent)
            if message.ack.heartbeat_interval_s > 0:
                self.interval = message.ack.heartbeat_interval_s
        elif kind == "reregister":
            self.reregisters += 1
            self.register()
        elif kind == "directive":
            desired = {a.task_id: a.generation for a in message.directive.desired}
            got = message.directive.desired
            specs = {a.task_id: a.spec_json for a in got} if self.record_specs else {}
            self.directives.append(Received(
                time.monotonic(), time.time(), message.epoch, desired, specs,
                {a.task_id: a.incarnation for a in got}))
            for t, g in list(self.running.items()):
                if desired.get(t) != g:
                    self.stopping[t] = g
                    del self.running[t]
            for t, g in desired.items():
                self.running[t] = g
            self.report_now()

    @property
    def desired(self) -> dict[str, int]:
        return self.directives[-1].desired if self.directives else {}


def sim_channel(target: str, tls: TlsSettings | None, cluster: str) -> grpc.aio.Channel:
    """A channel to the leader: mTLS with `tls` (as a server's), else plaintext."""
    if tls is None or tls.insecure:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, channel_credentials(tls),
                                   options=channel_options(cluster))


def sim_tls(pki: DevPki, cluster: str, server_id: str) -> TlsSettings:
    """The `tls:` block of simulated server `server_id` of `cluster`, from `pki`'s CA."""
    return TlsSettings.model_validate(tls_settings_for(pki, "server", server_id,
                                                       cluster=cluster))


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until truthy; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise TimeoutError(what)


class MasterProcess:
    def __init__(self, master_id: str, zookeeper: str, cluster: str, workdir: Path,
                 session_timeout: str = "2s", extra: dict[str, Any] | None = None,
                 pki: DevPki | None = None) -> None:
        """`pki`: the master's certificate from it (mTLS); None: `tls.insecure`."""
        self.id = master_id
        tls: dict[str, Any] = ({"insecure": True} if pki is None else
                               dict(tls_settings_for(pki, "master", master_id, cluster=cluster)))
        config = workdir / f"{master_id}.yaml"
        config.write_text(yaml.safe_dump({
            "id": master_id,
            "zookeeper": {"hosts": zookeeper, "cluster": cluster,
                          "session_timeout": session_timeout, **session_credentials().master()},
            "grpc": {"host": "127.0.0.1", "port": 0},
            "http": {"host": "127.0.0.1", "port": 0},
            # Loopback only, and the benchmarks call no write route.
            "tls": tls, "api": {"auth": "none"}, "log_format": "json", **(extra or {}),
        }))
        self.log = (workdir / f"{master_id}.log").open("ab")
        self.popen = subprocess.Popen([str(BIN / "exportd-master"), "--config", str(config)],
                                      stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self) -> None:
        self.kill()
        self.popen.wait(timeout=30)
        self.log.close()


def bench_client(hosts: str) -> KazooClient:
    """A kazoo client acting as the masters (this process's credentials, tools/infra/zkauth),
    creating masters-only nodes by default; not started."""
    creds = session_credentials()
    return KazooClient(hosts=hosts, timeout=10.0, auth_data=creds.auth_data(Role.MASTER),
                       default_acl=creds.acls.for_node(Node.ROOT))


def seed_cluster(zk: KazooClient, paths: ZkPaths, *, jobs: int, partitions: int,
                 servers: list[str], shards: int = 64) -> dict[str, dict[str, int]]:
    """Blocking: store `jobs` x `partitions` tasks spread round-robin over `servers` at
    generation 1, as a leader would have left them (before any master of this cluster runs).
    Returns server -> {task: generation}."""
    for path in (paths.jobs, paths.assignments, paths.servers, paths.admin_servers):
        zk.ensure_path(path)
    assignments: dict[str, StoredAssignment] = {}
    by_server: dict[str, dict[str, int]] = {s: {} for s in servers}
    n = 0
    for j in range(jobs):
        spec = parse_job_spec({"id": f"job-{j}", "source": {"topic": f"topic-{j}"},
                               "sink": {"type": "file", "directory": "/tmp/bench"}})
        zk.create(paths.job(spec.id), encode_job(StoredJob(spec, time.time())))
        for p in range(partitions):
            tid = task_id(spec.id, spec.source.topic, p)
            server = servers[n % len(servers)]
            n += 1
            assignments[tid] = StoredAssignment(server, 1, None)
            by_server[server][tid] = 1
    for shard, items in split_shards(assignments, shards).items():
        zk.create(paths.assignment_shard(shard), encode_shard(items))
    return by_server



@dataclass
class BenchZk:
    """A benchmark's own ZooKeeper, a fresh cluster root in it, a client and a work folder."""

    infra: Infra
    zk: KazooClient
    paths: ZkPaths
    cluster: str
    workdir: Path
    pki: DevPki    # a throwaway CA in workdir/pki: certificates for the cluster's parties


@contextlib.asynccontextmanager
async def bench_zookeeper(prefix: str) -> AsyncIterator[BenchZk]:
    infra = start_infra(("zookeeper",))
    try:
        zk = bench_client(infra.zookeeper)
        zk.start(30)
        try:
            cluster = f"{prefix}{int(time.time())}"
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
            pki = write_dev_pki(workdir / "pki", cluster=cluster, masters=(), servers=())
            yield BenchZk(infra, zk, ZkPaths.for_cluster(cluster), cluster, workdir, pki)
        finally:
            zk.stop()
            zk.close()
    finally:
        infra.stop()


def print_result(run: Coroutine[Any, Any, dict[str, Any]]) -> None:
    print(json.dumps(asyncio.run(run), indent=2))
