"""Kafka → Iceberg on a whole cluster of real processes (two masters, three servers, Kafka, moto
S3, pyiceberg's SQL catalog): the leader commits all tasks' files of a table once per commit
interval, and the table holds every record exactly once while a server and the leader are
killed with SIGKILL and a third server is drained mid-way. Read back with pyiceberg."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tools.devcluster.cluster import (
    ICEBERG_CATALOG,
    LocalCluster,
    ServerSpec,
    http_json,
    wait_for,
)

PARTITIONS = 12
BASE = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCluster]:
    with LocalCluster(masters=2, cluster=f"ice-{uuid.uuid4().hex[:6]}",
                      servers=[ServerSpec(f"server-{i}", "default") for i in (1, 2, 3)],
                      lease_ttl="6s", zk_session_timeout="3s") as c:
        yield c


def _topic(bootstrap: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS,
                                  replication_factor=1)])[name].result(30)
    return name


def _record(i: int) -> bytes:
    when = BASE + dt.timedelta(seconds=i)
    return json.dumps({"id": i, "ts": when.isoformat(), "country": ("de", "fr", "us")[i % 3],
                       "amount": round(i * 0.25, 2)}).encode()


class Feed:
    """Produces records 0..count-1 at `rate` per second on a thread (bounded in count and
    time); `produced` is how many were acknowledged."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                  "enable.idempotence": True})
        self.topic, self.count, self.rate = topic, count, rate
        self.produced = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.count):
            if self._stop.is_set():
                break
            self.producer.produce(self.topic, key=str(i).encode(), value=_record(i))
            ahead = (i + 1) / self.rate - (time.monotonic() - started)
            if ahead > 0:
                self._stop.wait(ahead)   # paced, and stops at once when asked
            self.producer.poll(0)
        assert self.producer.flush(30) == 0
        self.produced = i + 1 if self.count else 0

    def __enter__(self) -> Feed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def done(self) -> bool:
        return not self._thread.is_alive()


def _catalog(local: LocalCluster) -> Any:
    settings = CatalogSettings.model_validate(local.iceberg()["catalogs"][ICEBERG_CATALOG])
    return open_catalog(ICEBERG_CATALOG, settings)


def _ids(local: LocalCluster, table: str) -> list[int]:
    catalog = _catalog(local)
    if not catalog.table_exists(("e2e", table)):
        return []
    rows = catalog.load_table(("e2e", table)).scan(selected_fields=("id",)).to_arrow()
    return [int(v) for v in pc.cast(rows["id"], "int64").to_pylist()]


def _job(job_id: str, topic: str, table: str, interval: str) -> dict[str, Any]:
    return {"id": job_id, "source": {"topic": topic, "start": "earliest"},
            "transform": {"parse": {"format": "json"}},
            "sink": {"type": "iceberg", "catalog": ICEBERG_CATALOG, "namespace": "e2e",
                     "table": table, "commit_interval": interval,
                     "partition_by": [{"field": "ts", "transform": "hour"}],
                     "timestamp_fields": {"ts": "iso8601"}},
            "rotation": {"max_records": 100, "max_seconds": "1s"}}


def _submit(local: LocalCluster, spec: dict[str, Any]) -> None:
    leader = local.leader_url()
    assert leader is not None
    created = http_json(leader + "/api/v1/jobs", "POST", spec, timeout=30)
    assert len(created["tasks"]) == PARTITIONS, created


def test_one_snapshot_per_commit_interval_not_per_file(local: LocalCluster) -> None:
    kafka = local.endpoints["kafka"]
    topic = _topic(kafka, f"ice-snap-{uuid.uuid4().hex[:6]}")
    _submit(local, _job("ice-snapshots", topic, "snapshots", "5s"))
    with Feed(kafka, topic, count=6_000, rate=300) as feed:
        wait_for(feed.done, 60, "the feed")
    wait_for(lambda: len(_ids(local, "snapshots")) == feed.produced, 120,
             "every record in the table", interval=1.0)
    table = _catalog(local).load_table(("e2e", "snapshots"))
    snapshots = table.snapshots()
    files = table.inspect.files().num_rows
    span = (snapshots[-1].timestamp_ms - snapshots[0].timestamp_ms) / 1000
    # 12 tasks cut a file every second each (~20 s of feed): hundreds of files, while the
    # leader commits once per 5 s interval.
    assert files >= 3 * len(snapshots), (files, len(snapshots))
    assert len(snapshots) <= span / 5 + 3, (len(snapshots), span)
    assert sorted(_ids(local, "snapshots")) == list(range(feed.produced))


def test_exactly_once_through_kill9_of_a_server_and_the_leader_and_a_drain(
        local: LocalCluster) -> None:
    kafka = local.endpoints["kafka"]
    topic = _topic(kafka, f"ice-chaos-{uuid.uuid4().hex[:6]}")
    _submit(local, _job("ice-chaos", topic, "chaos", "2s"))
    with Feed(kafka, topic, count=12_000, rate=250) as feed:
        wait_for(lambda: len(_ids(local, "chaos")) > 500, 90, "the first commits", interval=1.0)
        victim = next(s for s in local.server_procs if s.spec.id == "server-1")
        victim.proc.kill()                                      # kill -9 a server
        local.server_procs.remove(victim)
        wait_for(lambda: "server-1" not in local.alive_servers(), 60, "server-1 seen dead")
        local.start_server(victim.spec)                        # it comes back, empty
        leader = local.leader_master()
        assert leader is not None
        leader.proc.kill()                                      # kill -9 the leader
        wait_for(lambda: local.leader_url() not in (None, leader.http), 60, "a new leader")
        new_leader = local.leader_url()
        assert new_leader is not None
        http_json(f"{new_leader}/api/v1/servers/server-3/drain", "POST", {}, timeout=30)
        wait_for(feed.done, 120, "the feed")
    assert feed.produced == 12_000
    wait_for(lambda: len(_ids(local, "chaos")) >= feed.produced, 180,
             "every record in the table", interval=2.0)
    ids = _ids(local, "chaos")
    assert len(ids) == len(set(ids)) == feed.produced, (len(ids), len(set(ids)))
    assert set(ids) == set(range(feed.produced))
