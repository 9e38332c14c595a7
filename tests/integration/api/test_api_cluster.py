"""Two real masters (leader and standby) with simulated servers, driven only through the HTTP
API and exportctl: a write sent to the standby is done by the leader, reads come from either,
validation and auth failures store nothing, a drain is followed to the end, and after the
leader stops exportctl finds the new one."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from master.api.forward import FORWARDED_TO
from master.api.ports import TaskFilter
from master.api.settings import ApiSettings
from master.process import Master
from tests.integration.master.conftest import (
    PARTITIONS,
    StartMaster,
    StartSim,
    api_session,
    until,
)
from tests.pki import session_pki
from tests.unit.api.fake_control import free_port
from tools.exportctl.main import run

API_SETTINGS = ApiSettings.model_validate(
    {"read_tokens": ["r-token"], "admin_tokens": ["a-token"]})
ADMIN = {"Authorization": "Bearer a-token"}
READ = {"Authorization": "Bearer r-token"}


async def exportctl(*argv: str, masters: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"EXPORTD_MASTERS": ",".join(masters), "EXPORTD_TOKEN": "a-token",
           "EXPORTD_CA": str(session_pki().ca_file)}
    code = await asyncio.to_thread(run, argv, stdout=out, stderr=err, environ=env)
    return code, out.getvalue(), err.getvalue()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=READ) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_api_and_exportctl_on_a_real_cluster(
        start_master: StartMaster, start_sim: StartSim, topic: str) -> None:
    m1 = await start_master("m1", api=API_SETTINGS.model_copy(update={"master_id": "m1"}))
    await m1.wait_leading(60)
    m2 = await start_master("m2", api=API_SETTINGS.model_copy(update={"master_id": "m2"}))
    a, b = await start_sim("srv-a"), await start_sim("srv-b")
    await until(lambda: a.acks and b.acks, 60, "both servers acknowledged")
    job = {"id": "orders", "source": {"topic": topic},
           "sink": {"type": "file", "directory": "/tmp/exportd-test"}}

    async with api_session() as http:
        async def standby_knows_leader() -> bool:
            async with http.get(f"{m2.http_url}/api/v1/leader", headers=READ) as r:
                return r.status == 200 and (await r.json())["id"] == "m1"

        # Until its first read of ZooKeeper a standby answers writes 503 (no leader known).
        await until_async(standby_knows_leader, 30, "the standby knows the leader")
        # A write to the standby is forwarded to the leader and done there.
        async with http.post(f"{m2.http_url}/api/v1/jobs", json=job, headers=ADMIN) as r:
            assert r.status == 201, await r.text()
            assert r.headers[FORWARDED_TO] == m1.http_url
            created = await r.json()
        assert len(created["job"]["tasks"]) == PARTITIONS

        # Rejections store nothing, on either master.
        bad = {**job, "id": "bad", "transform": {"where": "a =="}}
        for url in (m1.http_url, m2.http_url):
            async with http.post(f"{url}/api/v1/jobs", json=bad, headers=ADMIN) as r:
                assert r.status == 400
                assert (await r.json())["details"]["field"] == "transform.where"
            async with http.post(f"{url}/api/v1/jobs", json=job, headers=READ) as r:
                assert r.status == 403
            async with http.get(f"{url}/api/v1/jobs") as r:
                assert r.status == 401
        jobs = await get_json(http, f"{m1.http_url}/api/v1/jobs")
        assert [j["spec"]["id"] for j in jobs] == ["orders"]

        async def running() -> bool:
            tasks = await get_json(http, f"{m1.http_url}/api/v1/tasks?job=orders")
            return len(tasks) == PARTITIONS and all(t["state"] == "running" for t in tasks)

        await until_async(running, 60, "every task running")
        leader = await get_json(http, f"{m2.http_url}/api/v1/leader")
        assert leader["this_master_leads"] is False

        async def standby_sees_job() -> bool:
            jobs = await get_json(http, f"{m2.http_url}/api/v1/jobs")
            return [j["spec"]["id"] for j in jobs] == ["orders"]

        await until_async(standby_sees_job, 30, "the standby reads the job from ZooKeeper")
        async with http.get(f"{m1.http_url}/api/v1/openapi.json") as r:
            assert "/api/v1/placement" in (await r.json())["paths"]

    # exportctl: a dead master first, then the standby (which forwards the drain).
    masters = [f"https://127.0.0.1:{free_port()}", m2.http_url]
    code, out, err = await exportctl("placement", masters=masters)
    assert code == 0, err
    assert "srv-a" in out and "srv-b" in out
    on_a = [t for t, server in _where(m1) if server == "srv-a"]
    assert on_a, "the leader spread the tasks over both servers"
    code, out, err = await exportctl("drain", "srv-a", "--wait", "--timeout", "90",
                                     "--interval", "0.2", masters=masters)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("srv-a is drained")
    assert not a.desired
    code, out, err = await exportctl("explain", on_a[0], masters=[m1.http_url])
    assert code == 0, err
    assert "runs on srv-b" in out
    code, out, _ = await exportctl("--json", "servers", masters=[m1.http_url])
    assert {s["id"]: s["draining"] or s["cordoned"] for s in json.loads(out)}["srv-a"]

    # The leader stops: exportctl, given both, answers with the new leader.
    await m1.stop()

    async def m2_leads() -> bool:
        code, out, _ = await exportctl("--json", "leader", masters=[m1.http_url, m2.http_url])
        return code == 0 and json.loads(out)["id"] == "m2"

    await until_async(m2_leads, 60, "exportctl reports m2 as the leader")


def _where(master: Master) -> list[tuple[str, str | None]]:
    return [(t.id, t.server) for t in master.control.list_tasks(TaskFilter(job="orders"))]


async def until_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """`until` for an async check: poll until it is true, fail with `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_delete_wait_then_submit_again_with_exportctl(
        start_master: StartMaster, start_sim: StartSim, topic: str, tmp_path: Path) -> None:
    """Changing a job is deleting and submitting it again. Submitted at once, the new job is
    refused with the reason (its old tasks are still stopping); after `jobs delete --wait` it
    is taken, and its tasks run again."""
    m1 = await start_master("m1", api=API_SETTINGS.model_copy(update={"master_id": "m1"}))
    await m1.wait_leading(60)
    await start_sim("srv-a")
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"id": "resubmit", "source": {"topic": topic},
                                "sink": {"type": "file", "directory": "/tmp/exportd-test"}}))
    masters = [m1.http_url]
    code, _, err = await exportctl("jobs", "submit", "-f", str(spec), masters=masters)
    assert code == 0, err

    def running() -> bool:
        tasks = m1.control.list_tasks(TaskFilter(job="resubmit"))
        return len(tasks) == PARTITIONS and all(t.state == "running" for t in tasks)

    await until(running, 60, "every task running")
    code, out, err = await exportctl("jobs", "delete", "resubmit", masters=masters)
    assert code == 0, err
    code, _, err = await exportctl("jobs", "submit", "-f", str(spec), masters=masters)
    assert code == 1
    assert "conflict: job resubmit was deleted and 4 of its tasks have not stopped yet" in err

    await until(lambda: not m1.control.list_tasks(TaskFilter(job="resubmit")), 60,
                "the deleted job's tasks gone")
    code, _, err = await exportctl("jobs", "submit", "-f", str(spec), masters=masters)
    assert code == 0, err
    await until(running, 60, "the submitted-again job's tasks running")

    code, out, err = await exportctl("jobs", "delete", "resubmit", "--wait", "--timeout", "60",
                                     masters=masters)
    assert code == 0, err
    assert out.splitlines()[-1] == "job resubmit deleted: every task stopped; it can be " \
                                   "submitted again"
    assert not m1.control.list_tasks(TaskFilter(job="resubmit"))
    code, _, err = await exportctl("jobs", "submit", "-f", str(spec), masters=masters)
    assert code == 0, err
