"""The master process end to end: its HTTP API over the real control plane (a standby forwards a
write to the leader), and a takeover that keeps healthy servers' tasks where they are."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.integration.master.conftest import (
    PARTITIONS,
    StartMaster,
    StartSim,
    api_session,
    job_spec,
    until,
)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_http_api_on_leader_and_standby(start_master: StartMaster, start_sim: StartSim,
                                              topic: str) -> None:
    leader = await start_master("m1")
    await leader.wait_leading(30)
    standby = await start_master("m2")
    sim = await start_sim("srv-a")
    await until(lambda: sim.acks, 30, "server acknowledged")
    job = {"id": "via-http", "source": {"topic": topic},
           "sink": {"type": "file", "directory": "/tmp/exportd-test"}}
    async with api_session() as session:
        assert (await _get(session, leader.http_url + "/healthz"))[0] == 200
        await until(lambda: standby.control.readiness().ready, 30, "standby ready")
        # A write sent to the standby is forwarded to the leader.
        async with session.post(standby.http_url + "/api/v1/jobs", json=job) as resp:
            assert resp.status == 201, await resp.text()
        await until(lambda: len(sim.desired) == PARTITIONS, 30, "tasks on the server")
        status, body = await _get(session, leader.http_url + "/api/v1/leader")
        assert status == 200 and body["id"] == "m1" and body["this_master_leads"]
        status, tasks = await _get(session, leader.http_url + "/api/v1/tasks?job=via-http")
        assert status == 200 and len(tasks) == PARTITIONS
        status, placement = await _get(session, leader.http_url + "/api/v1/placement")
        assert status == 200 and placement["servers"][0]["id"] == "srv-a"
        status, text = await _get(session, leader.http_url + "/metrics")
        assert status == 200 and "exportd_master_is_leader 1.0" in text
        status, _ = await _get(session, leader.http_url + "/readyz")
        assert status == 200


async def test_takeover_keeps_tasks_where_they_run(start_master: StartMaster,
                                                   start_sim: StartSim, topic: str) -> None:
    first = await start_master("m1")
    await first.wait_leading(30)
    second = await start_master("m2")
    a, b = await start_sim("srv-a"), await start_sim("srv-b")
    await first.control.create_job(job_spec("kept", topic))
    await until(lambda: len(a.desired) + len(b.desired) == PARTITIONS and a.desired
                and b.desired, 30, "tasks on both servers")
    before = {**a.desired, **b.desired}
    old_epoch = a.highest_epoch
    await first.stop()
    lead = await second.wait_leading(30)
    await until(lambda: a.highest_epoch == b.highest_epoch == lead.term.epoch
                and a.directives[-1].epoch == lead.term.epoch
                and b.directives[-1].epoch == lead.term.epoch, 30,
                "both servers directed by the new leader")
    assert lead.term.epoch > old_epoch
    assert {**a.desired, **b.desired} == before, "a takeover moved or restarted tasks"
