"""A standby forwards writes and reads of the cluster to the leader, and answers reads from its
own view when no leader answers: two real apps on loopback, over TLS with certificates from a
throwaway CA. And whom it forwards to: only a peer whose certificate names a master of this
cluster; a forged leader address (a listener of the test's own, recording every byte it gets)
with a server's certificate, another cluster's master certificate or another CA's receives
nothing, neither the token nor the body."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from master.api.app import create_app
from master.api.forward import FORWARDED_BY, FORWARDED_TO, VIEW, master_peer_context
from master.api.settings import ApiSettings
from tasks.tls import TlsSettings, server_ssl_context
from tests.unit.api.conftest import JOB
from tests.unit.api.fake_control import FakeControl, free_port, serve
from tests.unit.api.recorder import recording_listener
from tools.pki import DevPki, tls_settings_for, write_dev_pki

CLUSTER = "c1"


def _settings(master_id: str) -> ApiSettings:
    return ApiSettings.model_validate({"master_id": master_id, "read_tokens": ["r-token"],
                                   "admin_tokens": ["a-token"]})

ADMIN = {"Authorization": "Bearer a-token"}


def _tls(pki: DevPki, role: str, ident: str, cluster: str = CLUSTER) -> TlsSettings:
    return TlsSettings.model_validate(tls_settings_for(pki, role, ident, cluster=cluster))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return write_dev_pki(tmp_path_factory.mktemp("pki"), cluster=CLUSTER,
                         masters=["m1", "m2"], servers=["s1"])


@dataclass
class Pair:
    leader: FakeControl
    standby: FakeControl
    leader_url: str
    standby_url: str
    http: aiohttp.ClientSession


def _serving(pki: DevPki, ident: str) -> ssl.SSLContext:
    return server_ssl_context(_tls(pki, "master", ident), client_certs=False)


@pytest.fixture
async def pair(pki: DevPki) -> AsyncIterator[Pair]:
    leader = FakeControl(leads=True, master_id="m1")
    standby = FakeControl(leads=False, master_id="m2")
    forward = master_peer_context(_tls(pki, "master", "m2"), CLUSTER)
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    async with serve(create_app(leader, _settings("m1")), _serving(pki, "m1")) as leader_url:
        standby.leader_http = leader_url
        async with serve(create_app(standby, _settings("m2"), forward_ssl=forward),
                         _serving(pki, "m2")) as url, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as http:
            yield Pair(leader, standby, leader_url, url, http)


async def test_write_on_standby_is_done_by_leader(pair: Pair) -> None:
    async with pair.http.post(pair.standby_url + "/api/v1/jobs", json=JOB, headers=ADMIN) as r:
        assert r.status == 201, await r.text()
        assert r.headers[FORWARDED_TO] == pair.leader_url
        assert (await r.json())["job"]["spec"]["id"] == "orders"
    assert set(pair.leader.jobs) == {"orders"}
    assert pair.standby.jobs == {}
    # Errors come back as the leader gave them.
    async with pair.http.post(pair.standby_url + "/api/v1/jobs/ghost/pause",
                              headers=ADMIN) as r:
        assert r.status == 404
        assert (await r.json())["error"] == "not_found"


async def test_reads_on_standby_come_from_the_leader(pair: Pair) -> None:
    await pair.http.post(pair.leader_url + "/api/v1/jobs", json=JOB, headers=ADMIN)
    async with pair.http.get(pair.standby_url + "/api/v1/jobs", headers=ADMIN) as r:
        assert r.status == 200
        assert r.headers[FORWARDED_TO] == pair.leader_url
        assert [j["spec"]["id"] for j in await r.json()] == ["orders"]   # the leader's state
    async with pair.http.get(pair.standby_url + "/api/v1/tasks?job=orders",
                             headers=ADMIN) as r:
        assert r.status == 200 and len(await r.json()) == len(pair.leader.tasks)
    # Errors come back as the leader gave them.
    async with pair.http.get(pair.standby_url + "/api/v1/jobs/ghost", headers=ADMIN) as r:
        assert r.status == 404
    # Who leads, and the process's own endpoints, are the standby's to answer.
    async with pair.http.get(pair.standby_url + "/api/v1/leader", headers=ADMIN) as r:
        assert FORWARDED_TO not in r.headers
        assert (await r.json())["this_master_leads"] is False
    async with pair.http.get(pair.standby_url + "/healthz") as r:
        assert r.status == 200 and FORWARDED_TO not in r.headers and VIEW not in r.headers
    assert pair.leader.writes == 1


@pytest.mark.parametrize("why", ["no leader", "leader unreachable", "already forwarded"])
async def test_reads_fall_back_to_the_standby_view(pair: Pair, why: str) -> None:
    await pair.http.post(pair.leader_url + "/api/v1/jobs", json=JOB, headers=ADMIN)
    headers = dict(ADMIN)
    if why == "no leader":
        pair.standby.has_leader = False
    elif why == "leader unreachable":
        pair.standby.leader_http = f"https://127.0.0.1:{free_port()}"
    else:
        headers[FORWARDED_BY] = "m9"
    async with pair.http.get(pair.standby_url + "/api/v1/jobs", headers=headers) as r:
        assert r.status == 200
        assert r.headers[VIEW] == "zookeeper" and FORWARDED_TO not in r.headers
        assert await r.json() == []  # the fake standby has its own (empty) state


async def test_standby_checks_auth_and_size_before_forwarding(pair: Pair) -> None:
    async with pair.http.post(pair.standby_url + "/api/v1/jobs", json=JOB,
                              headers={"Authorization": "Bearer r-token"}) as r:
        assert r.status == 403
    big = {**JOB, "id": "x" * (300 * 1024)}
    async with pair.http.post(pair.standby_url + "/api/v1/jobs", json=big, headers=ADMIN) as r:
        assert r.status == 413
    assert pair.leader.writes == 0


async def test_no_leader_is_503(pair: Pair) -> None:
    pair.standby.has_leader = False
    async with pair.http.post(pair.standby_url + "/api/v1/jobs", json=JOB, headers=ADMIN) as r:
        assert r.status == 503
        assert "no leader" in (await r.json())["message"]


async def test_unreachable_leader_is_503(pair: Pair) -> None:
    pair.standby.leader_http = f"https://127.0.0.1:{free_port()}"
    async with pair.http.post(pair.standby_url + "/api/v1/servers/srv-a/cordon",
                              headers=ADMIN) as r:
        assert r.status == 503
        assert "did not answer" in (await r.json())["message"]


async def test_forwarded_write_is_not_forwarded_again(pair: Pair) -> None:
    headers = {**ADMIN, FORWARDED_BY: "m9"}
    async with pair.http.post(pair.standby_url + "/api/v1/servers/srv-a/cordon",
                              headers=headers) as r:
        assert r.status == 503
        assert "does not lead" in (await r.json())["message"]
    assert pair.leader.writes == 0


def _forger(pki: DevPki, tmp_path: Path, who: str) -> ssl.SSLContext:
    if who == "another CA's master":
        other = write_dev_pki(tmp_path / "other", cluster=CLUSTER, masters=["m1"], servers=[])
        return server_ssl_context(_tls(other, "master", "m1"), client_certs=False)
    if who == "a server":
        return server_ssl_context(_tls(pki, "server", "s1"), client_certs=False)
    if who == "another cluster's master":
        return server_ssl_context(_tls(pki, "master", "m1", cluster="c2"), client_certs=False)
    return _serving(pki, "m1")   # a real master of the cluster: the control case


FORGERS = ["a server", "another cluster's master", "another CA's master"]


@pytest.mark.parametrize("who", FORGERS)
async def test_a_forged_leader_address_gets_no_token_and_no_body(
        pair: Pair, pki: DevPki, tmp_path: Path, who: str) -> None:
    async with recording_listener(_forger(pki, tmp_path, who)) as forged:
        # The leader znode (leader_http) names the forger's listener; even as http://.
        for url in (forged.url, forged.url.replace("https://", "http://")):
            pair.standby.leader_http = url
            async with pair.http.post(pair.standby_url + "/api/v1/jobs", json=JOB,
                                      headers=ADMIN) as r:
                assert r.status == 503, await r.text()
                assert "did not answer" in (await r.json())["message"]
            async with pair.http.get(pair.standby_url + "/api/v1/jobs", headers=ADMIN) as r:
                assert r.status == 200 and r.headers[VIEW] == "zookeeper"
        assert forged.data == b""
    assert pair.leader.writes == 0


async def test_the_recording_listener_does_record_a_real_master(
        pair: Pair, pki: DevPki, tmp_path: Path) -> None:
    """The control case of the test above: with a master's certificate the same listener gets
    the request, token and body (so an empty recording there means nothing was sent)."""
    async with recording_listener(_forger(pki, tmp_path, "a master")) as real:
        pair.standby.leader_http = real.url.replace("https://", "")
        async with pair.http.post(pair.standby_url + "/api/v1/jobs", json=JOB,
                                  headers=ADMIN) as r:
            assert r.status == 201, await r.text()
    assert b"Authorization: Bearer a-token" in real.data and b'"orders"' in real.data


async def test_without_tls_a_token_is_never_forwarded(pki: DevPki) -> None:
    leader = FakeControl(leads=True, master_id="m1")
    standby = FakeControl(leads=False, master_id="m2")
    async with recording_listener(_serving(pki, "m1")) as listener:
        standby.leader_http = listener.url.replace("https://", "http://")
        async with serve(create_app(standby, _settings("m2"))) as url, \
                aiohttp.ClientSession() as http, \
                http.post(url + "/api/v1/jobs", json=JOB, headers=ADMIN) as r:
            assert r.status == 503
            assert "never forwards a token in clear" in (await r.json())["message"]
        assert listener.handshakes == 0 and listener.data == b""
    assert leader.writes == 0


async def test_a_header_that_is_not_utf8_is_a_400_on_the_standby(pair: Pair,
                                                                 pki: DevPki) -> None:
    """aiohttp reads such bytes as surrogates, which cannot be sent on to the leader as they
    came (before, the leader saw the header with the bytes dropped)."""
    parts = urlsplit(pair.standby_url)
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=client)
    try:
        writer.write(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a-token\r\n"
                     b"Content-Type: application/\xff\xfe\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
        async with asyncio.timeout(20):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert "Content-Type header is not valid UTF-8" in json.loads(body)["message"]
    assert pair.leader.jobs == {} and pair.standby.jobs == {}
