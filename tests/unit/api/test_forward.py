"""A standby forwards writes and reads of the cluster to the leader, and answers reads from its
own view when no leader answers: two real apps on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from master.api.app import create_app
from master.api.forward import FORWARDED_BY, FORWARDED_TO, VIEW
from master.api.settings import ApiSettings
from tests.unit.api.conftest import JOB
from tests.unit.api.fake_control import FakeControl, free_port, serve


def _settings(master_id: str) -> ApiSettings:
    return ApiSettings.model_validate({"master_id": master_id, "read_tokens": ["r-token"],
                                   "admin_tokens": ["a-token"]})

ADMIN = {"Authorization": "Bearer a-token"}


@dataclass
class Pair:
    leader: FakeControl
    standby: FakeControl
    leader_url: str
    standby_url: str
    http: aiohttp.ClientSession


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    leader = FakeControl(leads=True, master_id="m1")
    standby = FakeControl(leads=False, master_id="m2")
    async with serve(create_app(leader, _settings("m1"))) as leader_url:
        standby.leader_http = leader_url
        async with serve(create_app(standby, _settings("m2"))) as url, \
                aiohttp.ClientSession() as http:
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
        pair.standby.leader_http = f"127.0.0.1:{free_port()}"
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
    pair.standby.leader_http = f"127.0.0.1:{free_port()}"
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
