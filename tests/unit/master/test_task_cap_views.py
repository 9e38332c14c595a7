"""A server's task cap travels from its report to the scheduler and the API (issue 17): the
leader keeps `Report.max_tasks` (0: no cap, as from an older server), passes it to the planner as
`Server.max_tasks`, and the servers and group views show it; tasks beyond the caps are pending
with the reason."""

from __future__ import annotations

import dataclasses

import scheduler
from master import views
from master.state import LiveState
from master.store import Snapshot, StoredJob
from proto import exportd_pb2 as pb
from scheduler import Config
from tasks.cluster import ServerRegistration
from tasks.spec import parse_job_spec


def _state() -> LiveState:
    job = parse_job_spec({"id": "orders", "source": {"topic": "a"},
                          "sink": {"type": "s3", "bucket": "bucket"}})
    return LiveState(Snapshot(jobs={"orders": StoredJob(job, 0.0)}, assignments={}, admin={},
                              servers={}, shards=4), now=0.0)


def _report(sid: str, cap: int) -> pb.Report:
    return pb.Report(server_id=sid, group="default", seq=1, max_tasks=cap,
                     capacity=pb.Resources(cpu_cores=4.0, net_bytes_per_s=1e8))


def test_the_reported_cap_reaches_the_planner_and_the_views() -> None:
    state = _state()
    state.ingest_report(_report("s1", 2), now=1.0, now_unix=1.0)
    state.ingest_report(_report("s2", 0), now=1.0, now_unix=1.0)
    assert state.servers["s1"].max_tasks == 2 and state.servers["s2"].max_tasks is None
    view = state.view(1.0, Config())
    assert {s.id: s.max_tasks for s in view.servers} == {"s1": 2, "s2": None}
    assert views.get_server(state, "s1").max_tasks == 2
    assert dataclasses.asdict(views.get_server(state, "s2"))["max_tasks"] is None


def test_a_lower_cap_in_a_later_report_replaces_the_old_one() -> None:
    state = _state()
    state.ingest_report(_report("s1", 8), now=1.0, now_unix=1.0)
    state.ingest_report(_report("s1", 0), now=2.0, now_unix=2.0)
    assert state.servers["s1"].max_tasks is None


def test_group_view_carries_the_free_slots() -> None:
    state = _state()
    state.registered(ServerRegistration("s1", "default", "127.0.0.1:1", 4.0, 1e8, "v"), 1.0)
    state.ingest_report(_report("s1", 2), now=1.0, now_unix=1.0)
    plan = scheduler.plan(state.view(1.0, Config()))
    (group,) = [g for g in views.group_views(state, plan) if g.group == "default"]
    assert group.task_slots_free == 2
    assert "task slots:" in group.reason
