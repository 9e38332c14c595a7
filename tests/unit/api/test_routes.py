"""Every route round-trips through the real app over HTTP (open dev mode, this master leads)."""

from __future__ import annotations

from pathlib import Path

from master.api.encode import to_jsonable
from master.api.ports import DrainProgress, GroupView
from tests.unit.api.conftest import JOB, Api

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "nginx-to-s3.yaml"


async def test_health_readiness_metrics(api: Api) -> None:
    async with api.http.get(api.at("/healthz")) as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "master": "m1"}
    async with api.http.get(api.at("/readyz")) as r:
        assert r.status == 200
        assert (await r.json())["ready"] is True
    api.control.ready = api.control.ready.__class__(False, ("no ZooKeeper session",))
    async with api.http.get(api.at("/readyz")) as r:
        assert r.status == 503
        assert (await r.json())["reasons"] == ["no ZooKeeper session"]
    async with api.http.get(api.at("/metrics")) as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        text = await r.text()
    assert 'exportd_api_requests_total{method="GET",status="503"}' in text


async def test_job_lifecycle_json(api: Api) -> None:
    async with api.http.post(api.at("/api/v1/jobs"), json=JOB) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Location"] == "/api/v1/jobs/orders"
        body = await r.json()
    assert body["job"]["spec"]["id"] == "orders"
    assert body["job"]["state"] == "running"
    assert [t["id"] for t in body["tasks"]] == ["orders:orders:0", "orders:orders:1",
                                                "orders:orders:2"]
    async with api.http.get(api.at("/api/v1/jobs")) as r:
        assert [j["spec"]["id"] for j in await r.json()] == ["orders"]
    async with api.http.get(api.at("/api/v1/jobs/orders")) as r:
        assert len((await r.json())["tasks"]) == 3
    async with api.http.post(api.at("/api/v1/jobs/orders/pause")) as r:
        assert (await r.json())["state"] == "paused"
    async with api.http.post(api.at("/api/v1/jobs/orders/resume")) as r:
        assert (await r.json())["state"] == "running"
    async with api.http.post(api.at("/api/v1/jobs"), json=JOB) as r:
        assert r.status == 409
        assert (await r.json())["error"] == "conflict"
    async with api.http.delete(api.at("/api/v1/jobs/orders")) as r:
        assert r.status == 204
    async with api.http.get(api.at("/api/v1/jobs/orders")) as r:
        assert r.status == 404
        assert await r.json() == {"error": "not_found", "message": "no job orders",
                                  "details": {"job": "orders"}}


async def test_job_create_yaml(api: Api) -> None:
    headers = {"Content-Type": "application/yaml"}
    async with api.http.post(api.at("/api/v1/jobs"), data=EXAMPLE.read_bytes(),
                             headers=headers) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    spec = body["job"]["spec"]
    assert spec["id"] == "nginx-to-s3"
    assert spec["rotation"]["max_seconds"] == 10.0
    assert spec["sink"]["type"] == "s3"


async def test_tasks_list_filters_and_get_with_history(api: Api) -> None:
    await api.http.post(api.at("/api/v1/jobs"), json=JOB)
    await api.http.post(api.at("/api/v1/jobs"), json={**JOB, "id": "big", "group": "heavy"})
    async with api.http.get(api.at("/api/v1/tasks")) as r:
        assert len(await r.json()) == 6
    cases = {"job=big": 3, "group=default": 3, "server=srv-a": 2, "state=running": 6,
             "state=pending": 0, "job=orders&server=srv-b": 1}
    for query, count in cases.items():
        async with api.http.get(api.at(f"/api/v1/tasks?{query}")) as r:
            assert len(await r.json()) == count, query
    async with api.http.get(api.at("/api/v1/tasks/orders:orders:1")) as r:
        task = await r.json()
    assert task["server"] == "srv-b"
    assert task["history"][0]["kind"] == "placed"
    async with api.http.get(api.at("/api/v1/tasks/nope:x:0")) as r:
        assert r.status == 404


async def test_servers_cordon_uncordon_drain(api: Api) -> None:
    await api.http.post(api.at("/api/v1/jobs"), json=JOB)
    async with api.http.get(api.at("/api/v1/servers")) as r:
        assert [s["id"] for s in await r.json()] == ["srv-a", "srv-b", "srv-h"]
    async with api.http.get(api.at("/api/v1/servers/srv-a")) as r:
        assert (await r.json())["tasks"] == ["orders:orders:0", "orders:orders:2"]
    async with api.http.post(api.at("/api/v1/servers/srv-a/cordon")) as r:
        assert (await r.json())["cordoned"] is True
    async with api.http.post(api.at("/api/v1/servers/srv-a/uncordon")) as r:
        assert (await r.json())["cordoned"] is False
    async with api.http.post(api.at("/api/v1/servers/srv-a/drain")) as r:
        assert r.status == 202
        assert await r.json() == {"server": "srv-a", "draining": True, "tasks_left": 2,
                                  "tasks_at_start": 2}
    async with api.http.get(api.at("/api/v1/servers/srv-a/drain")) as r:
        assert (await r.json())["tasks_left"] == 1
    async with api.http.post(api.at("/api/v1/servers/ghost/cordon")) as r:
        assert r.status == 404


async def test_placement_plan_groups_leader(api: Api) -> None:
    await api.http.post(api.at("/api/v1/jobs"), json=JOB)
    async with api.http.get(api.at("/api/v1/placement")) as r:
        whole = await r.json()
    assert len(whole["servers"]) == 3
    assert len(whole["tasks"]) == 3
    assert whole["servers"][0]["cpu_utilisation"] == 0.42
    async with api.http.get(api.at("/api/v1/placement?group=heavy")) as r:
        heavy = await r.json()
    assert [s["id"] for s in heavy["servers"]] == ["srv-h"]
    assert heavy["tasks"] == []
    async with api.http.get(api.at("/api/v1/rebalance/plan")) as r:
        plan = await r.json()
    assert plan["changes"][0]["kind"] == "move"
    async with api.http.get(api.at("/api/v1/groups")) as r:
        assert [g["group"] for g in await r.json()] == ["default", "heavy"]
    async with api.http.get(api.at("/api/v1/leader")) as r:
        leader = await r.json()
    assert leader["epoch"] == 7
    assert leader["this_master_leads"] is True


async def test_unknown_route_and_method_are_json(api: Api) -> None:
    async with api.http.get(api.at("/api/v1/nothing")) as r:
        assert r.status == 404
        assert (await r.json())["error"] == "not_found"
    async with api.http.put(api.at("/api/v1/jobs")) as r:
        assert r.status == 405
        assert "POST" in r.headers["Allow"]
        assert (await r.json())["error"] == "method_not_allowed"


def test_json_has_no_nan() -> None:
    group = GroupView("g", 0, float("nan"), float("inf"), 0, 0, 0, "no capacity")
    assert to_jsonable(group)["utilisation"] is None
    assert to_jsonable([DrainProgress("s", False, 0, 0)]) == [
        {"server": "s", "draining": False, "tasks_left": 0, "tasks_at_start": 0}]
