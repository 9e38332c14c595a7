"""Test doubles for the server's integration tests: a Coordinator gRPC service that plays the
leader (records reports, acks, sends directives, writes the `leader` znode like a master), and a
simple in-test TaskRunner. ZooKeeper and gRPC are real; only the task is a double."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from kazoo.client import KazooClient

from master.acls import ensure_layout_nodes
from proto import exportd_pb2 as pb
from proto import exportd_pb2_grpc as pb_grpc
from server.settings import ServerSettings
from tasks.cluster import LeaderInfo, Node, ZkPaths
from tasks.grpc_tls import server_credentials
from tasks.runner import Assignment, RunnerFactory, TaskState, TaskStats
from tasks.spec import FileSink, JobSpec, Source
from tasks.tls import TlsSettings
from tests.pki import tls_block
from tools.infra.zkauth import session_credentials

DEADLINE_S = 45.0
REPO = Path(__file__).resolve().parents[3]


async def wait_until(condition: Callable[[], bool], what: str,
                     timeout: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds or the deadline passes (then fail naming `what`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)


def job_spec(job_id: str = "job1", topic: str = "events") -> JobSpec:
    return JobSpec(id=job_id, source=Source(topic=topic), sink=FileSink(directory="/tmp/unused"))


def assignment(task_id: str, generation: int, spec: JobSpec | None = None,
               incarnation: int = 0) -> pb.TaskAssignment:
    spec = spec or job_spec()
    partition = int(task_id.rsplit(":", 1)[1])
    return pb.TaskAssignment(task_id=task_id, generation=generation, job_id=spec.id,
                             topic=spec.source.topic, partition=partition,
                             spec_json=spec.to_json(), incarnation=incarnation)


# --- the task double ------------------------------------------------------------------------


class FakeRunner:
    def __init__(self, assigned: Assignment, drain_s: float = 0.05) -> None:
        self.assignment = assigned
        self.drain_s = drain_s
        self.state = TaskState.STOPPED
        self.stop_calls: list[bool] = []        # the drain flag of each stop
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    @property
    def task_id(self) -> str:
        return self.assignment.task_id

    @property
    def generation(self) -> int:
        return self.assignment.generation

    async def start(self) -> None:
        self.state = TaskState.RUNNING
        self.started_at = time.monotonic()

    async def stop(self, *, drain: bool = True) -> None:
        self.stop_calls.append(drain)
        if drain:
            self.state = TaskState.DRAINING
            await asyncio.sleep(self.drain_s)   # a drain takes a moment: flush, commit
        self.state = TaskState.STOPPED
        self.stopped_at = time.monotonic()

    def stats(self) -> TaskStats:
        return TaskStats(self.state, records_per_s=10.0, records_total=42, committed_offset=7)


@dataclass
class FakeFactory:
    runners: list[FakeRunner] = field(default_factory=list)
    drain_s: float = 0.05

    def __call__(self, assigned: Assignment) -> FakeRunner:
        runner = FakeRunner(assigned, self.drain_s)
        self.runners.append(runner)
        return runner

    def of(self, task_id: str) -> list[FakeRunner]:
        return [r for r in self.runners if r.task_id == task_id]

    def running(self) -> set[tuple[str, int]]:
        return {(r.task_id, r.generation) for r in self.runners if r.state is TaskState.RUNNING}


def fake_factory(settings: ServerSettings) -> RunnerFactory:
    """`runner_factory` entry for a real `exportd-server` process in tests."""
    return FakeFactory()


# --- the leader double ----------------------------------------------------------------------


def master_tls(cluster: str, master_id: str) -> TlsSettings:
    """A master certificate of `cluster` from the test session's CA (tests/pki.py)."""
    return TlsSettings.model_validate(tls_block(cluster, "master", master_id))


class Coordinator(pb_grpc.CoordinatorServicer):  # type: ignore[misc]
    """Plays the leading master on 127.0.0.1: acks every report (while `acking`), sends the
    desired set at the start of every session and whenever `direct` is called. With `tls` it
    listens with that certificate and requires client certificates (mTLS, as a master does)."""

    def __init__(self, name: str, epoch: int, *, lease_ttl_s: float = 30.0,
                 heartbeat_interval_s: float = 0.2, tls: TlsSettings | None = None) -> None:
        self.name = name
        self.tls = tls
        self.epoch = epoch
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.acking = True
        self.desired: list[pb.TaskAssignment] = []
        self.reports: list[pb.Report] = []
        self.sessions = 0
        self.last_ack_at: float | None = None
        self._queues: list[asyncio.Queue[pb.LeaderMessage | None]] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_CoordinatorServicer_to_server(self, self._server)
        if self.tls is None or self.tls.insecure:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("127.0.0.1:0",
                                                     server_credentials(self.tls))
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def leader_info(self) -> LeaderInfo:
        return LeaderInfo(id=self.name, grpc=self.target, http="", epoch=self.epoch,
                          since_unix=time.time())

    def _directive(self, epoch: int | None, drain: bool) -> pb.LeaderMessage:
        return pb.LeaderMessage(
            epoch=self.epoch if epoch is None else epoch,
            directive=pb.Directive(seq=len(self.reports), desired=self.desired, drain=drain))

    def direct(self, desired: Iterable[pb.TaskAssignment], *, epoch: int | None = None,
               drain: bool = False, remember: bool = True) -> None:
        """Send a directive on every open session. `remember=False`: a one-off (e.g. a stale
        epoch message) that later sessions do not get."""
        desired = list(desired)
        previous = self.desired
        self.desired = desired
        message = self._directive(epoch, drain)
        if not remember:
            self.desired = previous
        self.send(message)

    def send(self, message: pb.LeaderMessage) -> None:
        for queue in self._queues:
            queue.put_nowait(message)

    def end_sessions(self) -> None:
        """End every open stream from the leader's side (as a restarting leader would)."""
        for queue in self._queues:
            queue.put_nowait(None)

    def latest_task_states(self) -> dict[str, int]:
        if not self.reports:
            return {}
        return {t.task_id: t.state for t in self.reports[-1].tasks}

    async def Session(self, request_iterator: AsyncIterator[pb.ServerMessage],
                      context: Any) -> AsyncIterator[pb.LeaderMessage]:
        self.sessions += 1
        queue: asyncio.Queue[pb.LeaderMessage | None] = asyncio.Queue()
        self._queues.append(queue)
        reader = asyncio.ensure_future(self._read(request_iterator, queue))
        try:
            while True:
                message = await queue.get()
                if message is None:
                    return
                yield message
        finally:
            self._queues.remove(queue)
            reader.cancel()

    async def _read(self, request_iterator: AsyncIterator[pb.ServerMessage],
                    queue: asyncio.Queue[pb.LeaderMessage | None]) -> None:
        first = True
        try:
            async for message in request_iterator:
                report = message.report
                self.reports.append(report)
                if self.acking:
                    self.last_ack_at = time.monotonic()
                    queue.put_nowait(pb.LeaderMessage(epoch=self.epoch, ack=pb.Ack(
                        report_seq=report.seq, lease_ttl_s=self.lease_ttl_s,
                        heartbeat_interval_s=self.heartbeat_interval_s)))
                if first:
                    # A leader sends the full desired set on every new session.
                    first = False
                    queue.put_nowait(self._directive(None, False))
        finally:
            queue.put_nowait(None)


def write_leader(zk: KazooClient, paths: ZkPaths, coordinator: Coordinator) -> None:
    """What a master does on winning the election: the layout servers need (with exportd's
    ACLs), the `epoch` znode brought to the coordinator's epoch (servers believe no epoch it
    does not confirm), and the ephemeral `leader` node (re)written. `zk` holds the masters'
    credentials (tests/conftest.py)."""
    acls = session_credentials().acls
    ensure_layout_nodes(zk, paths, acls, (paths.servers,))
    set_epoch(zk, paths, coordinator.epoch)
    data = coordinator.leader_info().to_bytes()
    if zk.exists(paths.leader):
        zk.set(paths.leader, data)
    else:
        zk.create(paths.leader, data, acl=acls.for_node(Node.LEADER), ephemeral=True)


def set_epoch(zk: KazooClient, paths: ZkPaths, epoch: int) -> None:
    """Bump the `epoch` znode until its version (the fencing token) is at least `epoch`."""
    zk.ensure_path(paths.epoch, acl=session_credentials().acls.for_node(Node.EPOCH))
    for _ in range(epoch + 1):
        stat = zk.exists(paths.epoch)
        if stat.version >= epoch:
            return
        zk.set(paths.epoch, str(stat.version + 1).encode(), version=stat.version)


def process_settings(server_id: str, zookeeper: str, cluster: str, tmp: Path) -> dict[str, str]:
    """`--set` values for a server process on this ZooKeeper cluster root."""
    tls = tls_block(cluster, "server", server_id)
    return {"id": server_id, "zookeeper.hosts": zookeeper, "zookeeper.cluster": cluster,
            "zookeeper.session_timeout": "4s", "http.port": "0", "work_dir": str(tmp),
            "capacity.worker_processes": "1", **{f"tls.{k}": v for k, v in tls.items()},
            **{f"zookeeper.{k}": v for k, v in session_credentials().server().items()},
            # Egress (tasks/egress.py): receivers on loopback, files below the test's tmp.
            "egress.http_allow_networks": '["127.0.0.0/8", "::1/128"]',
            "egress.file_root": str(tmp)}


@contextlib.asynccontextmanager
async def server_process(settings: dict[str, str], log_path: Path,
                         environ: dict[str, str] | None = None
                         ) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real `exportd-server` with `--set k=v` for each setting (and `environ` added to its
    environment); killed at the end if it is still running (a test that expects it to exit
    waits for that itself)."""
    args = [str(Path(sys.executable).with_name("exportd-server")), "--set", "log_format=console"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    # PYTHONPATH: `runner_factory` may name a test module.
    env = {**os.environ, **(environ or {}), "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=log, stderr=log,
                                                    cwd=str(REPO))
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# --- reading a real server's results ----------------------------------------------------


def last_status(coordinator: Coordinator, tid: str, proc: asyncio.subprocess.Process,
                log_path: Path) -> pb.TaskStatus | None:
    """The task's status in the server's latest report; the log if the server died."""
    if proc.returncode is not None:
        raise AssertionError(log_path.read_text()[-3000:])
    tasks = {t.task_id: t for t in coordinator.reports[-1].tasks} if coordinator.reports else {}
    return tasks.get(tid)


def exported_ids(out: Path) -> list[int]:
    ids = []
    for path in sorted(p for p in out.rglob("*.ndjson") if p.is_file()):
        ids += [json.loads(line)["id"] for line in path.read_bytes().splitlines() if line]
    return ids
