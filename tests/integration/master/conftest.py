"""Fixtures for the master's integration tests: a fresh cluster root in the real ZooKeeper, a
Kafka topic, in-process masters (each with its own kazoo session) and simulated servers
(tools/bench/master_sim.py). Everything a test starts is stopped at the end, even on failure."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from kazoo.client import KazooClient

from master.api.settings import ApiSettings
from master.process import Master
from master.settings import KafkaSettings, MasterSettings
from scheduler import plan
from tasks.cluster import ZkPaths, ZooKeeperSettings
from tasks.egress import EgressSettings
from tasks.entrypoint import ListenSettings
from tasks.spec import JobSpec, parse_job_spec
from tasks.tls import TlsSettings
from tests.pki import session_pki, tls_block
from tools.bench.master_sim import SimServer
from tools.infra.zkauth import session_credentials

PARTITIONS = 4


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def topic(kafka: str) -> str:
    name = f"master-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(timeout=60)
    return name


def master_settings(zookeeper: str, kafka: str, cluster: str, master_id: str,
                    **overrides: Any) -> MasterSettings:
    base = MasterSettings(
        id=master_id,
        zookeeper=ZooKeeperSettings(hosts=zookeeper, cluster=cluster, session_timeout=2.0,
                                    **session_credentials().master()),
        grpc=ListenSettings(host="127.0.0.1", port=0),
        http=ListenSettings(host="127.0.0.1", port=0),
        kafka=KafkaSettings(bootstrap_servers=kafka, partition_check_interval=1.0),
        lease_ttl=4.0, min_heartbeat_interval=0.2, reconcile_interval=0.2,
        log_format="console",
        egress=EgressSettings(file_root="/tmp"),   # the jobs' /tmp/exportd-test
        tls=TlsSettings.model_validate(tls_block(cluster, "master", master_id)),
        # Loopback only: these tests call the API without tokens (tests/integration/api adds them).
        api=ApiSettings(auth="none"),
    )
    return base.model_copy(update=overrides)


def api_session() -> aiohttp.ClientSession:
    """A client of the masters' API (https with the session CA's certificates)."""
    context = ssl.create_default_context(cafile=str(session_pki().ca_file))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


StartMaster = Callable[..., Awaitable[Master]]


@pytest.fixture
async def start_master(zookeeper: str, kafka: str, cluster: str) -> AsyncIterator[StartMaster]:
    started: list[Master] = []

    async def start(master_id: str, **overrides: Any) -> Master:
        master = Master(master_settings(zookeeper, kafka, cluster, master_id, **overrides), plan)
        started.append(master)
        await master.start()
        return master

    try:
        yield start
    finally:
        for master in reversed(started):
            await master.stop()


StartSim = Callable[..., Awaitable[SimServer]]


@pytest.fixture
async def start_sim(zk: KazooClient, paths: ZkPaths, cluster: str) -> AsyncIterator[StartSim]:
    sims: list[SimServer] = []

    async def start(server_id: str, **kw: Any) -> SimServer:
        if "channel" not in kw:   # its own mTLS channel with server_id's certificate
            kw.setdefault("tls", TlsSettings.model_validate(
                tls_block(cluster, "server", server_id)))
            kw.setdefault("tls_cluster", cluster)
        sim = SimServer(server_id, paths, zk, **kw)
        await asyncio.to_thread(sim.register)
        sims.append(sim)
        sim.start()
        return sim

    try:
        yield start
    finally:
        for sim in sims:
            await sim.stop()


def job_spec(job_id: str, topic: str, **extra: Any) -> JobSpec:
    return parse_job_spec({
        "id": job_id, "source": {"topic": topic},
        "sink": {"type": "file", "directory": "/tmp/exportd-test"}, **extra})
