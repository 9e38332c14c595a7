"""The whole cluster, as `make dev` runs it, driven only through exportctl and the HTTP API.

One scenario, in order, because each step builds on the cluster the previous one left: submit a
job and see every task run; drain a server and see its tasks move within their group; kill -9 the
leader and see exportctl answer with the new one; start one more server as an autoscaler would
and see it take tasks; change the job by deleting and submitting it again; then count what
reached S3: every produced record, none twice.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tools.devcluster.__main__ import s3_client
from tools.devcluster.cluster import BIN, LocalCluster, ServerSpec, wait_for
from tools.devcluster.producer import DemoProducer, produce_lines

TOPIC, PARTITIONS, BUCKET, JOB = "e2e-access", 6, "exportd-e2e", "e2e-nginx"
NET = 25_000.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # Servers offer 25 KB/s of network each, so the test's steady 100 records/s (measured ~11
    # KB/s: six tasks of ~1.9 KB/s) is a load the scheduler sees (a new task is estimated at 1
    # KB/s until measured), and the new server is given tasks by rebalancing; a short cool-down
    # lets tasks that moved during the drain move again. At 50 KB/s the server holding all six
    # tasks sat at ~0.23 against the new server's ~0.04 of idle CPU: an imbalance right at the
    # 0.10 threshold, and one run in several never rebalanced.
    local = LocalCluster(
        servers=[ServerSpec("server-1", "default", net_bytes_per_s=NET),
                 ServerSpec("server-2", "default", net_bytes_per_s=NET),
                 ServerSpec("server-3", "heavy", net_bytes_per_s=NET)],
        cluster=f"e2e-{uuid.uuid4().hex[:6]}",
        master_overrides={"scheduler": {"cooldown": "5s", "default_net_estimate": 1000}},
    )
    with local:
        CREDENTIALS.update({k: v for k, v in local.ctl_env().items()
                            if k in ("EXPORTD_TOKEN", "EXPORTD_CA")})
        yield local


# The cluster's token and CA (LocalCluster.ctl_env), as an operator exports them: over TLS.
CREDENTIALS: dict[str, str] = {}


def exportctl(masters: list[str], *args: str,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    flags = [arg for url in masters for arg in ("--master", url)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")},
           **CREDENTIALS}
    return subprocess.run([str(BIN / "exportctl"), *flags, *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=env)


def ctl_json(masters: list[str], *args: str) -> Any:
    result = exportctl(masters, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def job_tasks(masters: list[str]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = ctl_json(masters, "tasks", "--job", JOB)
    return tasks


def all_running(masters: list[str], servers: set[str]) -> bool:
    tasks = job_tasks(masters)
    return len(tasks) == PARTITIONS and all(
        t["state"] == "running" and t["server"] in servers for t in tasks)


def exported_records(endpoint: str) -> list[dict[str, Any]]:
    client = s3_client(endpoint)
    records: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            records += [json.loads(line) for line in gzip.decompress(body).splitlines() if line]
    return records


@pytest.mark.timeout(900)
def test_operator_drives_a_real_cluster(cluster: LocalCluster, tmp_path: Path) -> None:
    endpoints = cluster.endpoints
    admin = AdminClient({"bootstrap.servers": endpoints["kafka"]})
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS,
                                  replication_factor=1)])[TOPIC].result(30)
    s3_client(endpoints["s3"]).create_bucket(Bucket=BUCKET)
    backlog = len(produce_lines(endpoints["kafka"], TOPIC, 1200))
    steady = DemoProducer(endpoints["kafka"], TOPIC, rate=100, max_records=60_000,
                          max_seconds=600, seed=11)
    steady.start()
    try:
        produced = backlog + drive_the_cluster(cluster, tmp_path, steady)
    finally:
        steady.stop()

    # Every record produced is in S3, exactly once.
    def all_exported() -> bool:
        return len(exported_records(endpoints["s3"])) >= produced

    wait_for(all_exported, 120, f"{produced} records in S3", interval=1.0)
    records = exported_records(endpoints["s3"])
    coordinates = [(r["_partition"], r["_offset"]) for r in records]
    assert len(coordinates) == produced
    assert len(set(coordinates)) == produced


def drive_the_cluster(cluster: LocalCluster, tmp_path: Path, steady: DemoProducer) -> int:
    """Submit, drain, fail over, scale out, resubmit; stop the steady producer and return its
    count."""
    masters = cluster.master_urls()
    assert all(url.startswith("https://") for url in masters)

    # The API is TLS with tokens: without the CA, or without the token, exportctl gets nothing.
    saved = dict(CREDENTIALS)
    try:
        CREDENTIALS.pop("EXPORTD_CA")
        refused = exportctl(masters, "leader")
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "certificate is not trusted" in refused.stderr
        CREDENTIALS.update(saved)
        CREDENTIALS.pop("EXPORTD_TOKEN")
        refused = exportctl(masters, "servers")
        assert refused.returncode == 1 and "unauthorized" in refused.stderr, refused.stderr
    finally:
        CREDENTIALS.update(saved)

    # Submit the job from a YAML file, as on-call would.
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({
        "id": JOB, "group": "default",
        "source": {"topic": TOPIC, "start": "earliest"},
        "transform": {"parse": {"format": "nginx"},
                      "select": "{ip: remote_addr, path: path, status: status}",
                      "add_fields": {"source": True}},
        "sink": {"type": "s3", "bucket": BUCKET, "prefix": "e2e"},
        "format": {"type": "ndjson", "compression": "gzip"},
        "rotation": {"max_records": 200, "max_seconds": "2s"},
    }))
    submitted = exportctl(masters, "jobs", "submit", "-f", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    wait_for(lambda: all_running(masters, {"server-1", "server-2"}), 90,
             "every task running in group default")

    # Drain server-1: its tasks move to server-2 (same group), never to server-3 (heavy).
    drained = exportctl(masters, "drain", "server-1", "--wait", "--timeout", "120", timeout=150)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    wait_for(lambda: all_running(masters, {"server-2"}), 90, "every task running on server-2")

    # kill -9 the leader: exportctl (given the dead master first) answers with the new one.
    old = ctl_json(masters, "leader")
    leader = cluster.leader_master()
    assert leader is not None
    leader.proc.kill()
    dead_first = [leader.http, *[m for m in masters if m != leader.http]]
    wait_for(lambda: ctl_json(dead_first, "leader")["epoch"] > old["epoch"], 60,
             "a new leader with a higher epoch")
    assert ctl_json(dead_first, "leader")["id"] != old["id"]
    wait_for(lambda: all_running(dead_first, {"server-2"}), 60, "tasks still running")

    # An autoscaler adds a server: it registers itself and rebalancing gives it tasks.
    added = cluster.start_server(ServerSpec("server-4", "default", 0.25))
    wait_for(lambda: any(s["id"] == "server-4" and s["alive"]
                         for s in ctl_json(dead_first, "servers")), 60, "server-4 registered")
    try:
        wait_for(lambda: any(t["server"] == "server-4" and t["state"] == "running"
                             for t in job_tasks(dead_first)), 120, "server-4 running a task")
    except TimeoutError as exc:
        raise AssertionError(why_not_rebalanced(cluster, dead_first, added.proc.log_tail(40))) \
            from exc

    # Change the job (smaller files): delete it, wait for its tasks to stop, submit it again.
    # The same consumer group goes on from the committed offsets. Its tasks have the same ids
    # and generations from 1 again, on servers that ran the old ones at generation 2.
    deleted = exportctl(dead_first, "jobs", "delete", JOB, "--wait", "--timeout", "90",
                        timeout=120)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    spec = yaml.safe_load(job_file.read_text())
    spec["rotation"]["max_records"] = 150
    job_file.write_text(yaml.safe_dump(spec))
    resubmitted = exportctl(dead_first, "jobs", "submit", "-f", str(job_file))
    assert resubmitted.returncode == 0, resubmitted.stderr
    wait_for(lambda: all_running(dead_first, {"server-2", "server-4"}), 90,
             "every task of the submitted-again job running")
    steady.stop()
    return steady.produced


def why_not_rebalanced(cluster: LocalCluster, masters: list[str], server_log: str) -> str:
    """What the planner saw when a new server got no task: enough to tell a measurement from a
    scheduling bug without rerunning (the run that failed once did not say)."""
    leader = cluster.leader_master()
    parts = ["server-4 got no task within 120 s",
             "exportctl servers:\n" + exportctl(masters, "--json", "servers").stdout,
             "exportctl placement:\n" + exportctl(masters, "placement").stdout,
             f"exportctl explain {JOB}:{TOPIC}:0:\n"
             + exportctl(masters, "explain", f"{JOB}:{TOPIC}:0").stdout,
             "server-4 log tail:\n" + server_log]
    if leader is not None:
        parts.append("leader log tail:\n" + leader.proc.log_tail(40))
    return "\n\n".join(parts)
