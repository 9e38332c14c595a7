"""What on-call sees is true (issue 16, failures 2 and 7), on a whole cluster of real processes.

- A job writing to a bucket that does not exist is `stalled` with the S3 error, its lag is every
  record produced (nothing committed), while its neighbour on a good bucket runs with lag 0.
- During a Kafka outage tasks are not `running` with lag 0 and no error: they are stalled with
  "broker unreachable since …", and run again once the broker is back.
- A leader SIGSTOPped past its ZooKeeper session and resumed never answers GET /api/v1/tasks with
  its old view: 503 (or the new leader's view) until it has read afresh.
- With ZooKeeper unreachable, masters answer at once with a 503 that says so, not a hang.

The tests share one cluster and run in file order; the last one stops ZooKeeper for a while.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tools.devcluster.__main__ import s3_client
from tools.devcluster.cluster import LocalCluster, MasterProc, ServerSpec, http_json, wait_for
from tools.infra.process import ManagedProcess

N = 300


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCluster]:
    with LocalCluster(servers=[ServerSpec("server-1", "default")],
                      cluster=f"truth-{uuid.uuid4().hex[:6]}", zk_session_timeout="3s") as c:
        yield c


def produce(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, value=json.dumps({"id": i}).encode(), partition=0)
    assert producer.flush(30) == 0


def new_topic(bootstrap: str) -> str:
    name = f"truth-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})   # alive until the result is in
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    return name


def leader(local: LocalCluster) -> str:
    url = local.leader_url()
    assert url is not None, "no leader"
    return url


def submit(local: LocalCluster, job_id: str, topic: str, bucket: str) -> str:
    spec = {"id": job_id, "source": {"topic": topic},
            "sink": {"type": "s3", "bucket": bucket}, "rotation": {"max_seconds": 1}}
    http_json(leader(local) + "/api/v1/jobs", "POST", spec, timeout=30)
    return f"{job_id}:{topic}:0"


def task(local: LocalCluster, task_id: str) -> dict[str, Any]:
    view: dict[str, Any] = http_json(f"{leader(local)}/api/v1/tasks/{task_id}")
    return view


def status(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(HTTP status, JSON body) of a GET; raises on a timeout."""
    try:
        return 200, http_json(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_a_task_that_cannot_deliver_is_stalled_with_its_error_and_true_lag(
        local: LocalCluster) -> None:
    kafka, s3 = local.endpoints["kafka"], local.endpoints["s3"]
    topic = new_topic(kafka)
    produce(kafka, topic, N)
    good_bucket = f"good-{uuid.uuid4().hex[:8]}"
    s3_client(s3).create_bucket(Bucket=good_bucket)
    good = submit(local, "good", topic, good_bucket)
    bad = submit(local, "bad", topic, f"missing-{uuid.uuid4().hex[:8]}")

    def settled() -> bool:
        g, b = task(local, good), task(local, bad)
        return bool(g["state"] == "running" and g["consumer_lag"] == 0
                    and g["committed_offset"] == N and b["state"] == "stalled")

    try:
        wait_for(settled, 90, "good running at lag 0, bad stalled", interval=1.0)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: good {task(local, good)}, bad {task(local, bad)}") from exc
    g, b = task(local, good), task(local, bad)
    assert (g["stalled_reason"], g["records_total"], g["exported_total"]) == ("", N, N)
    assert g["last_commit_age_s"] >= 0
    assert b["committed_offset"] == 0 and b["consumer_lag"] == N, b
    assert "NoSuchBucket" in b["last_error"] and "NoSuchBucket" in b["stalled_reason"], b
    assert "no commit for" in b["stalled_reason"]
    assert b["freshness_s"] > 10, b
    # The list shows the same, and a state filter finds it.
    stalled = http_json(f"{leader(local)}/api/v1/tasks?state=stalled")
    assert [t["id"] for t in stalled] == [bad]
    # The server's metrics say so too.
    text = _metrics(local.server_procs[0].http)
    assert f'exportd_task_stalled{{export_job="bad",task="{bad}"}} 1.0' in text
    assert f'exportd_task_stalled{{export_job="good",task="{good}"}} 0.0' in text
    # A paused job's stopped task reports no rate and no stall.
    http_json(f"{leader(local)}/api/v1/jobs/bad/pause", "POST", timeout=30)
    # Its drain cannot deliver either: it ends at the pipeline's drain timeout (60 s).
    wait_for(lambda: task(local, bad)["state"] == "stopped", 150, "bad stopped", interval=0.5)
    b = task(local, bad)
    assert (b["records_per_s"], b["stalled_reason"]) == (0.0, ""), b


def _metrics(base: str) -> str:
    import urllib.request
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_a_broker_outage_is_an_error_not_lag_zero(local: LocalCluster) -> None:
    assert local.infra is not None
    kafka = local.endpoints["kafka"]
    topic = new_topic(kafka)
    produce(kafka, topic, 50)
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    s3_client(local.endpoints["s3"]).create_bucket(Bucket=bucket)
    tid = submit(local, "outage", topic, bucket)
    wait_for(lambda: (t := task(local, tid))["state"] == "running"
             and t["consumer_lag"] == 0 and t["committed_offset"] == 50,
             90, "the task caught up", interval=0.5)
    old = local.infra.processes["kafka"]
    old.stop(grace=20)
    try:
        def unreachable() -> bool:
            t = task(local, tid)
            return bool(t["state"] == "stalled"
                        and "broker unreachable since" in t["last_error"])

        try:
            wait_for(unreachable, 60, "the task stalled on the unreachable broker", interval=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {task(local, tid)}") from exc
        t = task(local, tid)
        assert t["consumer_lag"] == -1 and "broker unreachable" in t["stalled_reason"], t
    finally:
        local.infra.processes["kafka"] = ManagedProcess("kafka", old.argv, old.log_path)
    wait_for(lambda: (t := task(local, tid))["state"] == "running" and t["consumer_lag"] == 0
             and not t["stalled_reason"], 120, "the task running again", interval=1.0)


def _masters(local: LocalCluster) -> tuple[MasterProc, MasterProc]:
    url = leader(local)
    lead = next(m for m in local.master_procs if m.http == url)
    other = next(m for m in local.master_procs if m.http != url)
    return lead, other


def test_a_leader_resumed_after_its_session_expired_never_serves_its_old_view(
        local: LocalCluster) -> None:
    old, new = _masters(local)
    truth = sorted(t["id"] for t in http_json(new.http + "/api/v1/tasks"))
    assert truth, "the earlier tests left tasks"
    old.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: status(new.http + "/api/v1/leader")[1].get("id") == new.id, 60,
                 "the other master leading", interval=0.5)
        wait_for(lambda: status(new.http + "/api/v1/tasks")[0] == 200, 60,
                 "the new leader serving tasks", interval=0.5)
        truth = sorted(t["id"] for t in http_json(new.http + "/api/v1/tasks"))
    finally:
        old.proc.send_signal(signal.SIGCONT)
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        started = time.monotonic()
        code, body = status(old.http + "/api/v1/tasks", timeout=3)
        assert time.monotonic() - started < 3
        if code == 200:
            assert sorted(t["id"] for t in body) == truth, (seen, body)
        else:
            assert code == 503, (code, body)
        seen.append((code, len(body) if code == 200 else 0))
        time.sleep(0.1)
    assert seen[-1][0] == 200, seen   # and it reads afresh soon


def test_a_master_cut_off_from_zookeeper_answers_503_at_once(local: LocalCluster) -> None:
    assert local.infra is not None
    zk = local.infra.processes["zookeeper"]
    lead, standby = _masters(local)
    zk.send_signal(signal.SIGSTOP)
    try:
        # kazoo notices within about 2/3 of the session timeout (3 s).
        def both_503() -> bool:
            return all(status(m.http + "/api/v1/tasks", timeout=3)[0] == 503
                       for m in (lead, standby))
        wait_for(both_503, 15, "both masters answering 503", interval=0.2)
        for m in (lead, standby):
            started = time.monotonic()
            code, body = status(m.http + "/api/v1/tasks", timeout=3)
            assert code == 503 and time.monotonic() - started < 1.0, (code, body)
            assert "zookeeper" in json.dumps(body).lower(), body
    finally:
        zk.send_signal(signal.SIGCONT)
    wait_for(lambda: local.leader_url() is not None
             and status(leader(local) + "/api/v1/tasks")[0] == 200, 90,
             "a leader serving tasks again", interval=0.5)
