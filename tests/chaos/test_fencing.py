"""Issue 14's acceptance test: exactly-once through stalled, paused and crashed processes.

A real cluster (tools/devcluster: ZooKeeper, Kafka, moto S3, 2 masters, 3 servers in one group,
short leases) exports one 6-partition topic of unique ids, produced at a steady rate, through
three jobs: S3 (through tests/chaos/proxy.py, which can hold a write in flight), files, and Kafka
(read back read_committed). Rotation is by time (2 s), so a rewrite does not cut the same
objects as the run it replaces. The faults, in order:

1. SIGSTOP of one server's main process only, past its lease, then SIGCONT: its workers must
   stop writing by themselves while the successors take over.
2. The proxy holds the next S3 write; the server that sent it is SIGSTOPped whole; once the
   successor has written that partition's object, the held write is released, then SIGCONT:
   the late write must not replace the successor's.
3. kill -9 of the leading master.
4. kill -9 of a server.

Then the producer stops, the exporters catch up, and tests/chaos/audit.py checks every sink
record by record: every id exactly once, and for S3 and files one chain of objects per partition
with no gap and no overlap. Choices (which server) are seeded; every wait has a deadline; every
process is stopped (and continued first) whatever happens.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.chaos import faults
from tests.chaos.audit import Report, audit
from tests.chaos.producer import UniqueIdProducer, read_source
from tests.chaos.proxy import HoldingProxy
from tests.chaos.readback import name_start, read_files, read_kafka, read_s3, s3_client, s3_keys
from tools.devcluster.cluster import LocalCluster, ServerProc, ServerSpec, http_json, wait_for

SEED = 14
TOPIC, OUT_TOPIC, PARTITIONS = "chaos-in", "chaos-out", 6
BUCKET, PREFIX = "exportd-chaos", "chaos"
JOB_S3, JOB_FILES, JOB_KAFKA = "chaos-s3", "chaos-files", "chaos-kafka"
# Records of one chunk in several directories (`k`), exactly-once through chunk claims.
JOB_PARTS = "chaos-parts"
JOBS = [JOB_S3, JOB_FILES, JOB_KAFKA, JOB_PARTS]
RATE = 150.0            # records/s, 25 per partition
LEASE_TTL = 8.0         # the leader's; servers fence themselves MARGIN earlier
MARGIN = 2.0
SERVERS = [f"server-{i}" for i in (1, 2, 3)]


def job(job_id: str, sink: dict[str, Any], select: str = "{id: id}") -> dict[str, Any]:
    return {"id": job_id, "group": "default",
            "source": {"topic": TOPIC, "start": "earliest", "batch_size": 500},
            "transform": {"parse": {"format": "json"}, "select": select,
                          "add_fields": {"source": True}},
            "sink": sink, "format": {"type": "ndjson"},
            "rotation": {"max_records": 2000, "max_seconds": "2s"}}


class Chaos:
    """The run's cluster, proxy and producer, and a log of what was done when."""

    def __init__(self, cluster: LocalCluster, proxy: HoldingProxy, files: Path) -> None:
        self.cluster, self.proxy, self.files = cluster, proxy, files
        self.parts = files.parent / JOB_PARTS
        self.rng = random.Random(SEED)
        self.t0 = time.monotonic()
        self.events: list[str] = []
        self.paused: set[int] = set()   # pids of stopped processes (main or group leader)

    def log(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f}s {what}"
        self.events.append(line)
        print(f"[chaos] {line}", flush=True)

    @property
    def kafka(self) -> str:
        return self.cluster.endpoints["kafka"]

    @property
    def moto(self) -> str:
        return self.cluster.endpoints["s3"]

    def alive_ids(self) -> set[str]:
        return {s.spec.id for s in self.cluster.server_procs if s.proc.alive()}

    def server(self, server_id: str) -> ServerProc:
        return next(s for s in self.cluster.server_procs if s.spec.id == server_id)

    def busiest(self) -> ServerProc:
        """The alive server running the most tasks; ties broken by the seeded generator."""
        counts = faults.task_counts(self.cluster, JOBS)
        alive = sorted(self.alive_ids())
        top = max(counts.get(s, 0) for s in alive)
        return self.server(self.rng.choice([s for s in alive if counts.get(s, 0) == top]))

    def pause(self, server: ServerProc, *, group: bool) -> None:
        server.proc.send_signal(signal.SIGSTOP, group=group)
        self.paused.add(server.proc.pid)

    def resume(self, server: ServerProc) -> None:
        server.proc.send_signal(signal.SIGCONT, group=True)
        self.paused.discard(server.proc.pid)

    def resume_all(self) -> None:
        for server in self.cluster.server_procs:
            if server.proc.pid in self.paused:
                self.resume(server)

    def wait_settled(self, what: str, timeout: float = 90.0) -> None:
        """Every task of every job running on an alive server, every alive server reporting."""
        alive = self.alive_ids()
        self.wait(lambda: self.cluster.alive_servers() >= alive
                  and faults.all_running(self.cluster, JOBS, PARTITIONS, alive),
                  timeout, what)
        self.log(f"settled: {what}")

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """wait_for, failing with where every task that does not run is, and the events."""
        try:
            wait_for(check, timeout, what, interval=0.5)
        except TimeoutError as exc:
            stuck = [f"{t['id']} on {t['server']} gen {t['generation']}: {t['state']} "
                     f"{t.get('last_error') or t.get('pending_reason') or ''}".rstrip()
                     for job_id in JOBS for t in faults.tasks_of(self.cluster, job_id)
                     if t["state"] != "running"]
            raise AssertionError("\n".join([str(exc), "tasks not running:", *stuck,
                                            "events:", *self.events])) from exc

    def wait_elapsed(self, since: float, seconds: float) -> None:
        wait_for(lambda: time.monotonic() - since >= seconds, seconds + 5,
                 f"{seconds:.0f}s past", interval=0.2)


def setup_data(chaos: Chaos) -> None:
    admin = AdminClient({"bootstrap.servers": chaos.kafka})
    futures = admin.create_topics([NewTopic(t, num_partitions=PARTITIONS, replication_factor=1)
                                   for t in (TOPIC, OUT_TOPIC)])
    for future in futures.values():
        future.result(30)
    s3_client(chaos.moto).create_bucket(Bucket=BUCKET)


def submit_jobs(chaos: Chaos) -> None:
    leader = chaos.cluster.leader_url()
    assert leader is not None
    specs = [job(JOB_S3, {"type": "s3", "bucket": BUCKET, "prefix": PREFIX}),
             job(JOB_FILES, {"type": "file", "directory": str(chaos.files)}),
             job(JOB_KAFKA, {"type": "kafka", "topic": OUT_TOPIC}),
             job(JOB_PARTS, {"type": "file", "directory": str(chaos.parts),
                             "path": "{topic}/k={field:k}"}, select="{id: id, k: k}")]
    for spec in specs:
        http_json(leader + "/api/v1/jobs", method="POST", body=spec)
    chaos.wait_settled("every task of the four jobs running")


def fault_stop_main_process(chaos: Chaos) -> None:
    """(1) SIGSTOP of one server's main process only, past its lease, then SIGCONT."""
    victim = chaos.busiest()
    others = chaos.alive_ids() - {victim.spec.id}
    chaos.log(f"fault 1: SIGSTOP of {victim.spec.id}'s main process {victim.proc.pid} only")
    stopped = time.monotonic()
    chaos.pause(victim, group=False)
    chaos.wait(lambda: faults.all_running(chaos.cluster, JOBS, PARTITIONS, others),
               LEASE_TTL + 60, "the stopped server's tasks running elsewhere")
    chaos.log("fault 1: its tasks run on the others")
    # Past the lease by some seconds: the old workers, were they not fenced, would overlap the
    # successors for that long.
    chaos.wait_elapsed(stopped, LEASE_TTL + 4)
    chaos.resume(victim)
    chaos.log(f"fault 1: SIGCONT of {victim.spec.id}")
    chaos.wait_settled("after fault 1")


def fault_hold_write_and_stop_group(chaos: Chaos) -> None:
    """(2) Hold an S3 write, stop its sender whole, let the successor write, release, resume."""
    chaos.proxy.arm()
    held = chaos.proxy.wait_held(60)
    parsed = name_start(held.key)
    assert parsed is not None, held
    partition, start = parsed
    sender = faults.sender_of(chaos.cluster, held.peer_port, chaos.proxy.port)
    if sender is None:   # its connection gone from psutil's view: ask where the task runs
        server_id = faults.server_of_task(chaos.cluster, f"{JOB_S3}:{TOPIC}:{partition}")
        assert server_id is not None, f"no server found for the held write {held}"
        sender = chaos.server(server_id)
    prefix = f"{PREFIX}/{TOPIC}/partition={partition}/"
    before = s3_keys(chaos.moto, BUCKET, prefix)
    chaos.pause(sender, group=True)
    chaos.log(f"fault 2: holding {held.method} {held.key} from {sender.spec.id}; "
              f"SIGSTOP of its whole process group")

    def successor_wrote() -> bool:
        """A write of this partition from `start` on went through the proxy after the held one
        (its sender is stopped: another server sent it) and S3 holds it."""
        sent = {unquote(urlsplit(target).path).split("/", 2)[-1]
                for _, _, _, target in chaos.proxy.writes_since(held.held_at)}
        now = s3_keys(chaos.moto, BUCKET, prefix)
        return any((name_start(key) or (0, -1))[1] >= start and before.get(key) != etag
                   and key in sent for key, etag in now.items())

    chaos.wait(successor_wrote, LEASE_TTL + 60, f"a successor's object for partition {partition}")
    chaos.log(f"fault 2: the successor wrote partition {partition} from offset >= {start}; "
              f"releasing the held write")
    chaos.proxy.release()
    answer = chaos.proxy.wait_answered(30)
    chaos.log(f"fault 2: S3 answered the held write: {answer}")
    chaos.resume(sender)
    chaos.log(f"fault 2: SIGCONT of {sender.spec.id}")
    chaos.wait_settled("after fault 2")


def fault_kill_leader(chaos: Chaos) -> None:
    """(3) kill -9 of the leading master."""
    url = chaos.cluster.leader_url()
    assert url is not None
    old = http_json(url + "/api/v1/leader")
    leader = chaos.cluster.leader_master()
    assert leader is not None
    chaos.log(f"fault 3: kill -9 of the leader {leader.id} (epoch {old.get('epoch')})")
    leader.proc.kill()

    def new_leader() -> bool:
        url = chaos.cluster.leader_url()
        return url is not None and http_json(url + "/api/v1/leader")["epoch"] > old["epoch"]

    wait_for(new_leader, 60, "a new leader with a higher epoch", interval=0.5)
    chaos.wait_settled("after fault 3")


def fault_kill_server(chaos: Chaos) -> None:
    """(4) kill -9 of a server (its main process and its workers)."""
    victim = chaos.busiest()
    chaos.log(f"fault 4: kill -9 of {victim.spec.id}")
    victim.proc.kill()
    chaos.wait_settled("after fault 4", timeout=LEASE_TTL + 90)


def audit_partitioned(chaos: Chaos, ids: dict[tuple[int, int], str],
                      bounds: dict[int, tuple[int, int]]) -> Report:
    """The partitioned job: each id once among its directories' files, and its chunks (one
    claim each, holding the chunk's end) chained from each partition's first offset to its end."""
    records, pieces = read_files(chaos.parts)
    claims = [piece for piece in pieces if piece.name.startswith("_exportd/claims/")]
    return audit("files-partitioned", ids, bounds, records, claims)


def audit_all(chaos: Chaos) -> list[Report]:
    source = read_source(chaos.kafka, TOPIC, PARTITIONS)
    reports = [audit("s3", source.ids, source.bounds, *read_s3(chaos.moto, BUCKET, PREFIX)),
               audit("files", source.ids, source.bounds, *read_files(chaos.files)),
               audit_partitioned(chaos, source.ids, source.bounds)]
    try:
        kafka = read_kafka(chaos.kafka, OUT_TOPIC, PARTITIONS)
        reports.append(audit("kafka", source.ids, source.bounds, kafka))
    except TimeoutError as exc:   # e.g. a transaction left open
        reports.append(Report("kafka", len(source.ids), 0, 0, {}, [], [], [str(exc)]))
    return reports


def run(chaos: Chaos, producer: UniqueIdProducer) -> list[Report]:
    setup_data(chaos)
    producer.start()
    submit_jobs(chaos)
    groups = [f"exportd-{j}" for j in JOBS]
    wait_for(lambda: all(min(faults.committed_offsets(chaos.kafka, g, TOPIC, PARTITIONS)
                             .values()) > 0 for g in groups), 90, "every job exporting",
             interval=0.5)
    chaos.log("every job exporting")
    steps: list[Callable[[Chaos], None]] = [
        fault_stop_main_process, fault_hold_write_and_stop_group, fault_kill_leader,
        fault_kill_server]
    for step in steps:
        step(chaos)
    producer.stop()
    chaos.log(f"producer stopped: {producer.sent} sent, {len(producer.acked)} acknowledged, "
              f"{len(producer.errors)} delivery errors")
    ends = {p: high for p, (_, high) in read_source(chaos.kafka, TOPIC, PARTITIONS)
            .bounds.items()}
    try:
        wait_for(lambda: faults.caught_up(chaos.kafka, groups, TOPIC, ends), 120,
                 "every job committed to the end", interval=1.0)
        chaos.log("every job committed to the end")
    except TimeoutError as exc:   # the audit below says what is missing
        chaos.log(f"{exc}")
    return audit_all(chaos)


@pytest.mark.timeout(540)
def test_every_id_once_through_stalls_pauses_and_crashes() -> None:
    # Only the data objects' writes are held, not the sink's probe under <prefix>/.exportd/.
    proxy = HoldingProxy(path_prefix=f"/{BUCKET}/{PREFIX}/{TOPIC}/")
    cluster = LocalCluster(
        masters=2, servers=[ServerSpec(s, "default") for s in SERVERS],
        cluster=f"chaos-{uuid.uuid4().hex[:6]}", lease_ttl=f"{LEASE_TTL:.0f}s",
        zk_session_timeout="3s",
        server_overrides={"lease": {"margin": f"{MARGIN:.0f}s"},
                          "session": {"reconnect_max": "1s", "restart_backoff": "1s"}},
        server_s3_endpoint=proxy.start)
    # LocalCluster's egress rules allow file sinks below its work directory's files/.
    files = cluster.workdir / "files" / JOB_FILES
    with contextlib.ExitStack() as stack:
        stack.callback(proxy.stop)
        stack.enter_context(cluster)
        chaos = Chaos(cluster, proxy, files)
        stack.callback(chaos.resume_all)          # before the cluster stops (LIFO)
        stack.callback(proxy.release)             # a write left held, so shutdowns are quick
        producer = UniqueIdProducer(chaos.kafka, TOPIC, PARTITIONS, RATE, SEED)
        stack.callback(producer.stop)
        reports = run(chaos, producer)
        text = "\n".join([*(r.summary() for r in reports), "events:", *chaos.events])
        print(text)
        assert all(r.ok for r in reports), text
