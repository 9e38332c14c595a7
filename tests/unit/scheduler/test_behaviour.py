"""Issue 3, "Behaviour": one named test per bullet."""

from __future__ import annotations

from dataclasses import replace

import scheduler
from scheduler import ClusterView, Resources, Task
from tests.unit.scheduler.helpers import (
    MB,
    apply,
    handoff,
    imbalance,
    on,
    scores,
    srv,
    task,
    view,
)


def test_heterogeneous_capacity_twice_the_cores_carries_twice_the_cpu() -> None:
    servers = [srv("big", cpu=16.0), srv("small", cpu=8.0)]
    tasks = [task(f"t{n:02d}", cpu=0.2) for n in range(60)]  # 12 cores in all
    v = view(servers, tasks)
    plan = scheduler.plan(v)
    assert not plan.pending and not plan.moves
    cpu = {"big": 0.0, "small": 0.0}
    for p in plan.placements:
        cpu[p.server] += 0.2
    assert 1.8 <= cpu["big"] / cpu["small"] <= 2.2
    s = scores(apply(v, plan))
    assert abs(s["big"] - s["small"]) <= 0.02


def test_two_dimensions_network_heavy_task_avoids_a_full_network_with_idle_cpu() -> None:
    # netfull: CPU idle, network at 70 %. cpubusy: CPU at 72.5 %, network idle. The least
    # loaded by dominant score is netfull (0.70 < 0.725), but a network-heavy task would take it
    # to 0.80 there and only to 0.74 on cpubusy.
    servers = [
        srv("netfull", cpu=8.0, net=100 * MB, bg_net=70 * MB),
        srv("cpubusy", cpu=8.0, net=100 * MB, bg_cpu=5.8),
    ]
    net_heavy = task("net-heavy", cpu=0.1, net=10 * MB)
    plan = scheduler.plan(view(servers, [net_heavy]))
    assert [(p.task, p.server) for p in plan.placements] == [("net-heavy", "cpubusy")]
    assert "lowest score 0.74 on cpubusy" in plan.placements[0].reason

    cpu_heavy = task("cpu-heavy", cpu=0.8, net=0.1 * MB)  # cpubusy → 0.825, netfull → 0.70
    plan = scheduler.plan(view(servers, [cpu_heavy]))
    assert [(p.task, p.server) for p in plan.placements] == [("cpu-heavy", "netfull")]


def test_isolation_tasks_land_only_on_servers_of_their_group() -> None:
    servers = [
        srv("a1", group="a", bg_cpu=4.0), srv("a2", group="a", bg_cpu=4.0),  # busy
        srv("b1", group="b"), srv("b2", group="b"),                          # idle
    ]
    tasks = [task(f"a{n}", group="a") for n in range(10)]
    tasks += [task(f"b{n}", group="b") for n in range(10)]
    v = view(servers, tasks)
    plan = scheduler.plan(v)
    group_of = {s.id: s.group for s in servers}
    task_group = {t.id: t.group for t in tasks}
    assert len(plan.placements) == 20
    for p in plan.placements:
        assert group_of[p.server] == task_group[p.task]
        assert f"in group {task_group[p.task]}" in p.reason


def test_isolation_group_without_live_server_leaves_its_tasks_pending_with_the_reason() -> None:
    servers = [
        srv("a1", group="a"),
        srv("c1", group="c", alive=False), srv("c2", group="c", alive=False),
        srv("e1", group="e", cordoned=True), srv("e2", group="e", draining=True),
    ]
    tasks = [task("a-0", group="a"), task("c-0", group="c"), task("d-0", group="d"),
             task("e-0", group="e"), task("c-1", group="c", server="c1")]
    plan = scheduler.plan(view(servers, tasks))
    assert [(p.task, p.server) for p in plan.placements] == [("a-0", "a1")]
    reasons = {p.task: p.reason for p in plan.pending}
    assert reasons["c-0"] == "no live server in group c (2 dead)"
    assert reasons["c-1"] == (
        "evacuated from c1 (dead); pending: no live server in group c (2 dead)")
    assert reasons["d-0"] == "no server in group d"
    assert reasons["e-0"] == "no schedulable server in group e: 2 alive, 1 cordoned, 1 draining"
    advice = {a.group: a for a in plan.advice}
    assert set(advice) == {"a", "c", "d", "e"}
    assert advice["c"].servers_wanted >= 1 and advice["d"].servers_wanted >= 1


def test_watermark_no_placement_goes_over_it_and_advice_asks_for_more_servers() -> None:
    servers = [srv("s1", cpu=4.0)]
    tasks = [task(f"t{n}", cpu=0.5) for n in range(10)]  # 5 cores; 0.85 * 4 = 3.4 fit
    v = view(servers, tasks, high_watermark=0.85)
    plan = scheduler.plan(v)
    assert len(plan.placements) == 6 and len(plan.pending) == 4
    cpu_util, _ = scheduler.utilisation(apply(v, plan))["s1"]
    assert cpu_util <= 0.85
    for p in plan.pending:
        assert p.reason.startswith("no room under the high watermark 0.85 in group default")
        assert "advice asks for more servers" in p.reason
    (advice,) = plan.advice
    assert advice.servers_alive == 1
    assert advice.servers_wanted > advice.servers_alive
    assert "4 tasks pending" in advice.reason

    # A server already above the watermark (background) gets nothing at all.
    hot = view([srv("hot", cpu=4.0, bg_cpu=3.5)], [task("x", cpu=0.01)])
    assert not scheduler.plan(hot).placements


def test_evacuation_places_the_dead_servers_tasks_and_nothing_else_moves() -> None:
    servers = [srv(f"s{n}") for n in range(1, 5)]
    tasks = [task(f"t{n:02d}", cpu=0.1 + 0.01 * (n % 5)) for n in range(40)]
    v = apply(view(servers, tasks), scheduler.plan(view(servers, tasks)))
    assert scheduler.plan(v).is_empty()
    doomed = on(v, "s3")
    dead = replace(v, servers=tuple(replace(s, alive=False) if s.id == "s3" else s
                                    for s in v.servers))
    plan = scheduler.plan(dead)
    assert {p.task for p in plan.placements} == doomed
    assert not plan.moves and not plan.revocations and not plan.pending
    for p in plan.placements:
        assert p.server != "s3"
        assert p.reason.startswith("evacuated from s3 (dead): lowest score")
    after = apply(dead, plan)
    for t in after.tasks:  # everything that was on a live server is still there
        if t.id not in doomed:
            assert t.server == next(x.server for x in v.tasks if x.id == t.id)
    assert scheduler.plan(after).is_empty()

    # A server that vanished from the view entirely is the same as a dead one.
    gone = replace(v, servers=tuple(s for s in v.servers if s.id != "s3"))
    plan = scheduler.plan(gone)
    assert {p.task for p in plan.placements} == doomed and not plan.moves
    assert all("evacuated from s3 (unknown server)" in p.reason for p in plan.placements)


def _loaded(n_servers: int, tasks_per_server: int, cpu: float) -> ClusterView:
    servers = [srv(f"s{n}", cpu=10.0) for n in range(1, n_servers + 1)]
    tasks = [
        task(f"t{s}-{k:02d}", cpu=cpu, server=f"s{s}")
        for s in range(1, n_servers + 1) for k in range(tasks_per_server)
    ]
    return view(servers, tasks, move_budget=2, cooldown_s=300.0, min_gain=0.02,
                imbalance_threshold=0.10)


def test_scale_out_new_server_takes_load_over_rounds_within_budget_cooldown_and_in_flight(
) -> None:
    v = _loaded(2, 20, 0.3)  # two servers at 0.60
    assert scheduler.plan(v).is_empty()
    v = replace(v, servers=(*v.servers, scheduler.Server("new", "default", Resources(10.0, 1e9))))
    assert imbalance(v) > 0.10  # mean 0.40, max 0.60

    last_moved: dict[str, float] = {}
    rounds = 0
    while True:
        rounds += 1
        assert rounds <= 30, "scale-out did not converge"
        plan = scheduler.plan(v)
        assert len(plan.moves) <= 2  # the move budget
        flying = {f.task for f in v.in_flight}
        for m in plan.moves:
            assert m.task not in flying, "a move in flight was decided twice"
            assert v.now - last_moved.get(m.task, -1e9) >= 300.0, "moved within cool-down"
            last_moved[m.task] = v.now
            assert m.target == "new"
            assert m.reason.startswith("rebalance group default:")
        for p in plan.placements:  # in-flight tasks land on their reserved target
            f = next(f for f in v.in_flight if f.task == p.task)
            assert p.server == f.target
            assert p.reason.startswith(f"move from {f.source} to {f.target}: reserved target")
        if plan.is_empty():
            break
        v = handoff(v, plan, advance=60.0)
    assert imbalance(v) <= 0.10
    assert scores(v)["new"] >= 0.15
    assert rounds >= 3  # budget 2 per round: several rounds were needed


def test_scale_out_moves_in_flight_still_draining_count_on_the_target() -> None:
    v = _loaded(2, 20, 0.3)
    v = replace(v, servers=(*v.servers, scheduler.Server("new", "default", Resources(10.0, 1e9))))
    plan = scheduler.plan(v)
    assert len(plan.moves) == 2
    # The master revoked them; they still drain on their source.
    flights = tuple(scheduler.MoveInFlight(m.task, m.source, m.target, v.now)
                    for m in plan.moves)
    v2 = replace(v, in_flight=flights, now=v.now + 10.0)
    util = scores(v2)
    assert util["new"] > 0.0  # their load counts on the target already ...
    assert util["s1"] + util["s2"] < 1.2  # ... not on the sources
    plan2 = scheduler.plan(v2)
    moved_again = {m.task for m in plan2.moves} & {f.task for f in flights}
    assert not moved_again and not plan2.placements


def test_drain_server_gets_nothing_new_and_its_tasks_leave_within_the_budget() -> None:
    servers = [srv("d1", draining=True), srv("s2"), srv("s3")]
    tasks = [task(f"d-{n}", cpu=0.2, server="d1") for n in range(10)]
    tasks += [task(f"new-{n}", cpu=0.2) for n in range(5)]
    v = view(servers, tasks, drain_budget=3, cooldown_s=300.0)
    rounds = 0
    while on(v, "d1") or v.in_flight:
        rounds += 1
        assert rounds <= 10
        plan = scheduler.plan(v)
        assert all(p.server != "d1" for p in plan.placements)
        drain_moves = [m for m in plan.moves if m.source == "d1"]
        assert len(drain_moves) == min(3, len(on(v, "d1")))
        for m in drain_moves:
            assert m.target in {"s2", "s3"}
            assert m.reason.startswith("drain d1: handoff to ")
        for f in v.in_flight:  # last round's handoffs land on their reserved targets
            assert (f.task, f.target) in {(p.task, p.server) for p in plan.placements}
        assert not plan.revocations
        v = handoff(v, plan, advance=1.0)  # 1 s apart: drains ignore the cool-down
    assert rounds == 5  # 10 tasks at 3 per round, and a last round for the last to land


def test_drain_without_room_stalls_keeps_tasks_running_and_says_so() -> None:
    servers = [srv("d1", draining=True), srv("s2", cpu=1.0)]
    tasks = [task(f"d-{n}", cpu=0.5, server="d1") for n in range(4)]
    plan = scheduler.plan(view(servers, tasks, drain_budget=10))
    assert len(plan.moves) == 1  # 0.5 of 1 core fits under 0.85; a second would not
    assert not plan.revocations and not plan.pending
    (advice,) = plan.advice
    assert "drain of d1 stalled: 3 tasks have no room" in advice.reason
    assert advice.servers_wanted > 1


def test_stability_replanning_the_applied_result_proposes_no_move() -> None:
    servers = [srv(f"s{n}", cpu=4.0 * (1 + n % 3)) for n in range(6)]
    tasks = [task(f"t{n:03d}", cpu=0.02 + 0.15 * ((n * 37) % 11) / 10,
                  net=(1 + (n * 13) % 7) * 5 * MB) for n in range(150)]
    # Everything starts piled on two servers, cool-down 0: the hardest case for bouncing.
    tasks = [replace(t, server="s0" if n % 2 else "s1") for n, t in enumerate(tasks)]
    v = view(servers, tasks, cooldown_s=0.0, move_budget=10)
    history: dict[str, list[str]] = {}
    for _ in range(60):
        plan = scheduler.plan(v)
        if plan.is_empty():
            break
        for m in plan.moves:
            history.setdefault(m.task, [m.source]).append(m.target)
        v = apply(v, plan, advance=1.0)
    else:
        raise AssertionError("rebalancing did not settle")
    assert imbalance(v) <= 0.10
    for path in history.values():  # no task ever went back to a server it left
        assert len(path) == len(set(path)), path
    assert scheduler.plan(v).is_empty()
    assert scheduler.plan(replace(v, now=v.now + 3600.0)).is_empty()

    # Loads that wiggle inside the threshold move nothing either.
    wiggled = replace(v, tasks=tuple(
        replace(t, load=t.load.scaled(1.03 if n % 2 else 0.97)) if t.load else t
        for n, t in enumerate(v.tasks)))
    assert not scheduler.plan(wiggled).moves


def test_estimates_unmeasured_tasks_get_the_hint_else_the_siblings_median_else_default(
) -> None:
    tasks = [
        task("busy:0", job="busy", cpu=0.2, net=2 * MB),
        task("busy:1", job="busy", cpu=0.4, net=4 * MB),
        task("busy:2", job="busy", cpu=0.9, net=1 * MB),
        Task("busy:3", "busy", "default"),                                 # median of siblings
        Task("hinted:0", "hinted", "default", hint=Resources(1.5, 3 * MB)),  # the job's hint
        Task("hinted:1", "hinted", "default", load=Resources(9.0, 9.0),    # not measured: hint
             measured=False, hint=Resources(1.5, 3 * MB)),
        Task("fresh:0", "fresh", "default"),                               # default
    ]
    v = view([srv("s1", cpu=64.0)], tasks, default_estimate=Resources(0.05, 256 * 1024))
    est = scheduler.estimates(v)
    assert (est["busy:3"].cpu, est["busy:3"].net, est["busy:3"].source) == (
        0.4, 2 * MB, "median of measured siblings")
    assert (est["hinted:0"].cpu, est["hinted:0"].source) == (1.5, "job hint")
    assert (est["hinted:1"].cpu, est["hinted:1"].source) == (1.5, "job hint")
    assert (est["fresh:0"].cpu, est["fresh:0"].net, est["fresh:0"].source) == (
        0.05, 256 * 1024, "default estimate")
    assert est["busy:0"].source == "measured"

    plan = scheduler.plan(v)
    reasons = {p.task: p.reason for p in plan.placements}
    assert reasons["busy:3"].endswith("(load from median of measured siblings)")
    assert reasons["hinted:0"].endswith("(load from job hint)")
    assert reasons["fresh:0"].endswith("(load from default estimate)")
    assert "load from" not in reasons["busy:0"]
    cpu_util, _ = scheduler.utilisation(apply(v, plan))["s1"]
    assert abs(cpu_util * 64.0 - (0.2 + 0.4 + 0.9 + 0.4 + 1.5 + 1.5 + 0.05)) < 1e-9


def test_estimates_are_what_placement_uses_a_big_hint_does_not_fit() -> None:
    v = view([srv("s1", cpu=2.0)], [Task("big:0", "big", "default", hint=Resources(4.0, 0.0))])
    plan = scheduler.plan(v)
    assert not plan.placements
    assert "needs cpu 4.00" in plan.pending[0].reason


def test_stability_a_source_just_over_the_threshold_with_only_small_tasks_gets_one_move() -> None:
    servers = [srv("s1", cpu=10.0), srv("s2", cpu=10.0), srv("s3", cpu=10.0)]
    tasks = [task(f"a{n:02d}", cpu=0.15, server="s1") for n in range(41)]   # 0.615
    tasks += [task(f"b{n:02d}", cpu=0.15, server="s2") for n in range(30)]  # 0.45
    tasks += [task(f"c{n:02d}", cpu=0.15, server="s3") for n in range(30)]  # 0.45
    v = view(servers, tasks, min_gain=0.02)  # every task is 0.015: smaller than min_gain
    assert imbalance(v) > 0.10
    plan = scheduler.plan(v)
    assert len(plan.moves) == 1 and plan.moves[0].source == "s1"
    after = apply(v, plan)
    assert imbalance(after) <= 0.10
    assert scheduler.plan(after).is_empty()
