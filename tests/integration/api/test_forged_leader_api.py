"""A standby never forwards a token to an address whose certificate is not a master's: two real
masters over TLS (real ZooKeeper, certificates from the session CA); the `leader` znode is
rewritten (with master credentials, the strongest case) to name a listener of the test's own
with a valid *server* certificate of the same cluster and CA. The standby's writes get a 503 and
its reads its own view; the listener records no byte; once the znode is restored the standby
forwards to the real leader again, without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kazoo.client import KazooClient

from master.api.settings import ApiSettings
from tasks.cluster import LeaderInfo, ZkPaths
from tasks.tls import TlsSettings, server_ssl_context
from tests.integration.master.conftest import StartMaster, api_session
from tests.pki import tls_block
from tests.unit.api.recorder import recording_listener

API = {"read_tokens": ["r-token"], "admin_tokens": ["a-token"]}
ADMIN = {"Authorization": "Bearer a-token"}


async def until_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def _leader_seen_by(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url + "/api/v1/leader", headers=ADMIN) as r:
        return (await r.json()).get("http") if r.status == 200 else None


async def test_a_standby_sends_nothing_to_a_forged_leader_address(
        start_master: StartMaster, zk: KazooClient, paths: ZkPaths, cluster: str,
        topic: str) -> None:
    m1 = await start_master("m1", api=ApiSettings.model_validate({**API, "master_id": "m1"}))
    await m1.wait_leading(60)
    m2 = await start_master("m2", api=ApiSettings.model_validate({**API, "master_id": "m2"}))
    job = {"id": "forged", "source": {"topic": topic},
           "sink": {"type": "file", "directory": "/tmp/exportd-test"}}
    forger_tls = TlsSettings.model_validate(tls_block(cluster, "server", "evil"))
    async with api_session() as http, \
            recording_listener(server_ssl_context(forger_tls, client_certs=False)) as forger:
        async def standby_sees(url: str) -> bool:
            return bool(await _leader_seen_by(http, m2.http_url) == url)

        await until_async(lambda: standby_sees(m1.http_url), 30, "the standby knows m1")
        raw, _ = zk.get(paths.leader)
        real = LeaderInfo.from_bytes(raw)
        zk.set(paths.leader, dataclasses.replace(real, http=forger.url).to_bytes())
        await until_async(lambda: standby_sees(forger.url), 30, "the standby reads the forgery")

        async with http.post(m2.http_url + "/api/v1/jobs", json=job, headers=ADMIN) as r:
            assert r.status == 503, await r.text()
        async with http.get(m2.http_url + "/api/v1/jobs", headers=ADMIN) as r:
            assert r.status == 200 and r.headers["X-Exportd-View"] == "zookeeper"
        assert forger.data == b""
        assert m1.control.list_jobs() == []

        # Restored: the standby forwards to the real leader again, no restart.
        zk.set(paths.leader, real.to_bytes())
        await until_async(lambda: standby_sees(m1.http_url), 30, "the standby reads m1 again")
        async with http.post(m2.http_url + "/api/v1/jobs", json=job, headers=ADMIN) as r:
            assert r.status == 201, await r.text()
        assert forger.data == b""
    assert [j.spec.id for j in m1.control.list_jobs()] == ["forged"]

