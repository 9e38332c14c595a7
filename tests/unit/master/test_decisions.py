"""The master's pure decisions: heartbeat interval from the budget, leases, EWMA, the handoff
state machine over plans, and the scheduler view built from live records."""

from __future__ import annotations

from master import decisions
from master.records import ServerRecord, TaskRecord
from master.store import AdminFlags
from scheduler.model import Config, Move, Pending, Placement, Plan, Resources, Revocation
from tasks.cluster import ServerRegistration


def _task(tid: str, server: str | None = None, gen: int = 0, **kw: object) -> TaskRecord:
    rec = TaskRecord(tid, "job", "topic", int(tid[-1]), "default", 0, generation=gen, **kw)  # type: ignore[arg-type]
    rec.server = server
    return rec


def _index(*tasks: TaskRecord) -> dict[str, set[str]]:
    index: dict[str, set[str]] = {}
    for t in tasks:
        if t.server is not None:
            index.setdefault(t.server, set()).add(t.id)
    return index


def test_heartbeat_interval_from_budget() -> None:
    assert decisions.heartbeat_interval(10, 500, 1.0) == 1.0
    assert decisions.heartbeat_interval(1000, 500, 1.0) == 2.0
    assert decisions.heartbeat_interval(5000, 500, 1.0) == 10.0
    assert decisions.heartbeat_interval(10, 0, 1.5) == 1.5


def test_plan_interval_scales_with_plan_time() -> None:
    assert decisions.plan_interval(0.001, 0.02, 5.0, 30.0) == 5.0
    assert decisions.plan_interval(0.3, 0.02, 5.0, 30.0) == 15.0
    assert decisions.plan_interval(2.0, 0.02, 5.0, 30.0) == 30.0


def test_ewma() -> None:
    assert decisions.ewma(None, 2.0, 0.3) == 2.0
    assert abs(decisions.ewma(2.0, 4.0, 0.5) - 3.0) < 1e-9


def test_lease_expires_only_after_a_full_ttl() -> None:
    servers = [ServerRecord("a", last_seen_at=100.0), ServerRecord("b", last_seen_at=104.0)]
    assert decisions.expire_leases(servers, 115.0, 15.0) == []       # exactly ttl: alive
    assert decisions.expire_leases(servers, 115.1, 15.0) == ["a"]
    assert servers[0].dead and not servers[1].dead
    assert decisions.expire_leases(servers, 116.0, 15.0) == []       # reported once
    assert decisions.expire_leases(servers, 119.5, 15.0) == ["b"]


def test_revoke_then_release_then_assign_bumps_generation() -> None:
    t = _task("j:t:0", "a", gen=3)
    index = _index(t)
    # A move: revoked from a, not desired anywhere while it drains.
    out = decisions.apply_plan(Plan(moves=(Move(t.id, "a", "b", "rebalance"),)), {t.id: t},
                               index, {"a", "b"}, {"job"}, now=10.0, now_unix=1000.0)
    assert t.server is None and t.draining_on == "a" and t.move_target == "b"
    assert index["a"] == set() and out.servers == {"a"} and out.moves["move"] == 1
    assert t.generation == 3
    # A placement while it still drains is ignored: never on two servers at once.
    decisions.apply_plan(Plan(placements=(Placement(t.id, "b", "x"),)), {t.id: t}, index,
                         {"a", "b"}, {"job"}, 11.0, 1001.0)
    assert t.server is None and t.generation == 3
    # a reports RUNNING (still draining), then STOPPED.
    assert not decisions.released_by_report(t, "draining")
    assert decisions.released_by_report(t, "stopped")
    released = decisions.Applied()
    decisions.release(t, "reported stopped", 1002.0, released)
    assert t.draining_on is None and t.id in released.tasks
    out = decisions.apply_plan(Plan(placements=(Placement(t.id, "b", "reserved"),)), {t.id: t},
                               index, {"a", "b"}, {"job"}, 12.0, 1003.0)
    assert t.server == "b" and t.generation == 4 and t.move_target is None
    assert index["b"] == {t.id} and out.moves["moved"] == 1
    assert t.last_moved_at == 12.0


def test_release_after_two_reports_without_the_task() -> None:
    t = _task("j:t:1", None, draining_on="a")
    assert not decisions.released_by_report(t, None)
    assert decisions.released_by_report(t, None)


def test_evacuation_of_a_dead_server_assigns_at_once() -> None:
    t = _task("j:t:2", "dead", gen=1)
    index = _index(t)
    out = decisions.apply_plan(Plan(placements=(Placement(t.id, "b", "evacuated"),)),
                               {t.id: t}, index, {"b"}, {"job"}, 5.0, 500.0)
    assert t.server == "b" and t.generation == 2 and out.moves["evacuated"] == 1
    assert out.servers == {"dead", "b"}


def test_placement_on_a_task_desired_on_a_live_server_is_ignored() -> None:
    t = _task("j:t:3", "a", gen=1)
    decisions.apply_plan(Plan(placements=(Placement(t.id, "b", "?"),)), {t.id: t}, _index(t),
                         {"a", "b"}, {"job"}, 5.0, 500.0)
    assert t.server == "a" and t.generation == 1


def test_revocation_and_pending() -> None:
    t = _task("j:t:4", "a", gen=2)
    u = _task("j:t:5")
    plan = Plan(revocations=(Revocation(t.id, "a", "job paused"),),
                pending=(Pending(u.id, "no server in group x"),))
    out = decisions.apply_plan(plan, {t.id: t, u.id: u}, _index(t), {"a"}, {"job"}, 1.0, 100.0)
    assert t.draining_on == "a" and t.move_target is None and out.moves["revoke"] == 1
    assert u.pending_reason == "no server in group x" and u.state == "pending"
    assert [e.kind for _, e in out.events] == ["revoked", "pending"]


def test_view_shows_draining_tasks_on_their_source_with_the_move_in_flight() -> None:
    reg = ServerRegistration("a", "default", "h:1", 4.0, 1e8, "v")
    a = ServerRecord("a", last_seen_at=0.0)
    a.register(reg)
    a.reported, a.cpu_used = True, 1.0
    b = ServerRecord("b", last_seen_at=0.0, admin=AdminFlags(cordoned=True))
    t = _task("j:t:6", None, gen=1, draining_on="a", move_target="b", move_started_at=3.0)
    t.load_cpu, t.load_net = 0.4, 100.0
    u = _task("j:t:7", "a", gen=1)
    view = decisions.build_view(10.0, [a, b], [t, u], {"job"}, {"job": Resources(0.1, 1.0)},
                                Config())
    tasks = {x.id: x for x in view.tasks}
    assert tasks[t.id].server == "a" and tasks[t.id].measured
    assert tasks[u.id].load is None and tasks[u.id].hint == Resources(0.1, 1.0)
    assert view.in_flight[0].target == "b" and view.in_flight[0].started_at == 3.0
    servers = {s.id: s for s in view.servers}
    assert abs(servers["a"].background.cpu - 0.6) < 1e-9
    assert servers["b"].cordoned and not servers["a"].cordoned
    stopped = decisions.build_view(10.0, [a], [u], set(), {}, Config())
    assert stopped.tasks[0].stopped


def test_a_registration_without_a_report_gets_no_new_tasks() -> None:
    """A fake registration claiming 512 cores, with no session of its own: nothing placed."""
    fake = ServerRecord("fake", last_seen_at=0.0, cpu_capacity=512.0)
    fake.register(ServerRegistration("fake", "default", "h:1", 512.0, 1e9, "v"))
    real = ServerRecord("real", last_seen_at=0.0, cpu_capacity=2.0, reported=True)
    real.register(ServerRegistration("real", "default", "h:2", 2.0, 1e8, "v"))
    view = decisions.build_view(1.0, [fake, real], [], set(), {}, Config())
    servers = {s.id: s for s in view.servers}
    assert servers["fake"].cordoned and not servers["real"].cordoned


def test_unready_servers_defer_planning() -> None:
    known = ServerRecord("a", last_seen_at=0.0, cpu_capacity=2.0, reported=True)
    registered = ServerRecord("r", last_seen_at=0.0, cpu_capacity=2.0)
    unknown = ServerRecord("b", last_seen_at=0.0)
    dead = ServerRecord("c", last_seen_at=0.0, dead=True)
    servers = [known, registered, unknown, dead]
    # In the first lease after a takeover: wait for every live server's first report.
    assert decisions.unready_servers(servers, 1.0, 15.0) == ["b", "r"]
    # Later: only servers with no capacity known at all.
    assert decisions.unready_servers(servers, 16.0, 15.0) == ["b"]


def test_renew_all_restarts_live_leases() -> None:
    alive = ServerRecord("a", last_seen_at=1.0)
    dead = ServerRecord("b", last_seen_at=1.0, dead=True)
    decisions.renew_all([alive, dead], 50.0)
    assert alive.last_seen_at == 50.0 and dead.last_seen_at == 1.0


def test_view_cache_reuses_tasks_until_placement_or_load_changes() -> None:
    t = _task("j:t:8", "a", gen=1)
    t.load_cpu, t.load_net = 1.0, 1000.0
    cache: decisions.ViewCache = {}
    first = decisions.build_view(1.0, [], [t], {"job"}, {}, Config(), cache).tasks[0]
    t.load_cpu = 1.01                        # within 5 %: same Task object
    assert decisions.build_view(2.0, [], [t], {"job"}, {}, Config(), cache).tasks[0] is first
    t.load_cpu = 1.5                         # a real change
    changed = decisions.build_view(3.0, [], [t], {"job"}, {}, Config(), cache).tasks[0]
    assert changed is not first and changed.load == Resources(1.5, 1000.0)
    t.server = "b"                           # placement change
    moved = decisions.build_view(4.0, [], [t], {"job"}, {}, Config(), cache).tasks[0]
    assert moved.server == "b"
