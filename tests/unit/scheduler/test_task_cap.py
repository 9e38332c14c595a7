"""A server's task cap (`Server.max_tasks`, issue 17): the number of tasks its memory budget
holds. Placement, evacuation, drain, isolation repair, rebalance and count balance never take a
server above it (tasks running there, moves in flight into it, and tasks still draining off it
all count); a task that fits nowhere is pending with a reason that names the cap, and the
group's advice asks for a server when the slots run out. No cap: the plans are unchanged."""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scheduler
from scheduler import ClusterView, MoveInFlight
from tests.unit.scheduler.helpers import MB, apply, on, srv, task, view
from tests.unit.scheduler.test_properties import GENEROUS, build, check_safe, shapes

EXAMPLES = int(os.environ.get("SCHEDULER_EXAMPLES", "100"))
PROPERTY = settings(max_examples=max(EXAMPLES // 2, 1), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def small(n: int, **kw: object) -> list:  # type: ignore[type-arg]
    return [task(f"t{i:02d}", cpu=0.01, net=0.01 * MB, **kw) for i in range(n)]  # type: ignore[arg-type]


def test_placement_fills_a_server_up_to_its_cap_and_no_further() -> None:
    v = view([srv("a", max_tasks=2), srv("b")], small(8))
    plan = scheduler.plan(v)
    where = Counter(p.server for p in plan.placements)
    assert where["a"] == 2 and where["b"] == 6
    assert not plan.pending


def test_a_task_that_fits_nowhere_is_pending_with_the_cap_in_its_reason() -> None:
    v = view([srv("a", max_tasks=2)], small(4))
    plan = scheduler.plan(v)
    assert len(plan.placements) == 2
    assert len(plan.pending) == 2
    for p in plan.pending:
        assert p.reason == "every schedulable server of group default is at its task cap (2)"
    (advice,) = plan.advice
    assert advice.servers_wanted == 2
    assert "2 tasks pending (0 for lack of room, 2 for lack of a task slot, " \
           "0 for lack of a server)" in advice.reason
    assert "task slots: 2 of 2 used" in advice.reason


def test_different_caps_are_named_as_a_range() -> None:
    v = view([srv("a", max_tasks=1), srv("b", max_tasks=3)], small(6))
    plan = scheduler.plan(v)
    assert Counter(p.server for p in plan.placements) == {"a": 1, "b": 3}
    assert {p.reason for p in plan.pending} == {
        "every schedulable server of group default is at its task cap (1 to 3)"}
    (advice,) = plan.advice
    assert advice.servers_wanted == 3   # 6 tasks, 2 slots per server on average


def test_running_tasks_and_moves_in_flight_take_slots() -> None:
    running = [task("r1", server="a", cpu=0.01, net=0.01 * MB)]
    # Drained off c, reserved on a: already counted on a.
    landing = task("f1", cpu=0.01, net=0.01 * MB)
    # Still draining on c, towards a: counts on a, and still holds its slot on c.
    draining = task("f2", server="c", cpu=0.01, net=0.01 * MB)
    flights = [MoveInFlight("f1", "c", "a", 9_990.0), MoveInFlight("f2", "c", "a", 9_990.0)]
    v = view([srv("a", max_tasks=4), srv("c", max_tasks=1)],
             [*running, landing, draining, *small(2)], in_flight=flights)
    plan = scheduler.plan(v)
    assert {p.task: p.server for p in plan.placements} == {"f1": "a", "t00": "a"}
    assert [p.task for p in plan.pending] == ["t01"]


def test_a_reserved_target_over_its_cap_is_abandoned() -> None:
    running = [task(f"r{i}", server="a", cpu=0.01, net=0.01 * MB) for i in range(2)]
    landing = task("f1", cpu=0.01, net=0.01 * MB)
    v = view([srv("a", max_tasks=2), srv("b")], [*running, landing],
             in_flight=[MoveInFlight("f1", "c", "a", 9_990.0)])
    plan = scheduler.plan(v)
    (p,) = plan.placements
    assert p.server == "b"
    assert p.reason.startswith("move from c to a abandoned (a is at its task cap (2))")


def test_evacuation_respects_the_caps() -> None:
    lost = [task(f"d{i}", server="dead", cpu=0.01, net=0.01 * MB) for i in range(4)]
    v = view([srv("dead", alive=False), srv("a", max_tasks=1), srv("b", max_tasks=2)], lost)
    plan = scheduler.plan(v)
    assert Counter(p.server for p in plan.placements) == {"a": 1, "b": 2}
    (p,) = plan.pending
    assert p.reason == ("evacuated from dead (dead); pending: every schedulable server of group "
                        "default is at its task cap (1 to 2)")


def test_drain_stops_at_the_targets_cap() -> None:
    tasks = [task(f"d{i}", server="old", cpu=0.01, net=0.01 * MB) for i in range(3)]
    v = view([srv("old", draining=True), srv("a", max_tasks=2)], tasks)
    plan = scheduler.plan(v)
    assert len(plan.moves) == 2 and {m.target for m in plan.moves} == {"a"}
    (advice,) = plan.advice
    assert "drain of old stalled: 1 task have no room under the high watermark 0.85 or " \
           "a free task slot" in advice.reason


def test_isolation_repair_respects_the_cap() -> None:
    tasks = [task(f"m{i}", group="g", server="x", cpu=0.01, net=0.01 * MB) for i in range(3)]
    v = view([srv("x", group="other"), srv("a", group="g", max_tasks=1)], tasks)
    plan = scheduler.plan(v)
    assert [m.target for m in plan.moves] == ["a"]


def test_rebalance_never_moves_onto_a_server_at_its_cap() -> None:
    hot = [task(f"h{i}", server="hot", cpu=1.0, net=1 * MB) for i in range(7)]
    idle = [task("i0", server="full", cpu=0.01, net=0.01 * MB)]
    servers = [srv("hot"), srv("full", max_tasks=1), srv("free", max_tasks=2)]
    v = view(servers, hot + idle)
    plan = scheduler.plan(v)
    assert plan.moves and all(m.target == "free" for m in plan.moves)
    after = apply(v, plan)
    assert len(on(after, "free")) <= 2 and on(after, "full") == {"i0"}
    # Without the caps the same view moves tasks onto "full" too: the cap is what stops it.
    uncapped = replace(v, servers=tuple(replace(s, max_tasks=None) for s in v.servers))
    assert any(m.target == "full" for m in scheduler.plan(uncapped).moves)


def test_a_task_still_draining_off_a_server_keeps_its_slot_there() -> None:
    # h1 is being moved from a to b and still drains on a: it holds its memory there until it
    # has left, so a (cap 2) is full although only h0 counts on it; the new task goes to b,
    # the busier server.
    tasks = [task("h0", server="a", cpu=0.01, net=0.01 * MB),
             task("h1", server="a", cpu=0.01, net=0.01 * MB, last_moved_at=9_990.0),
             task("new", cpu=0.01, net=0.01 * MB)]
    servers = [srv("a", max_tasks=2), srv("b", bg_cpu=2.0)]
    v = view(servers, tasks, in_flight=[MoveInFlight("h1", "a", "b", 9_990.0)])
    plan = scheduler.plan(v)
    assert [(p.task, p.server) for p in plan.placements] == [("new", "b")]
    # Once h1 has drained (server None, landing on b), a has a slot again.
    drained = replace(v, tasks=tuple(replace(t, server=None) if t.id == "h1" else t
                                     for t in tasks))
    placed = {p.task: p.server for p in scheduler.plan(drained).placements}
    assert placed == {"h1": "b", "new": "a"}


def test_count_balance_gives_a_capped_server_no_more_than_its_cap() -> None:
    many = [task(f"t{i:02d}", server="a", cpu=0.01, net=0.01 * MB) for i in range(12)]
    v = view([srv("a"), srv("new", max_tasks=3)], many)
    plan = scheduler.plan(v)
    assert len([m for m in plan.moves if m.target == "new"]) == 3
    # A server at its cap is not "starved": no note that it waits for tasks.
    assert "new has" not in plan.advice[0].reason


def test_count_balance_redirects_no_placement_past_the_cap() -> None:
    many = [task(f"r{i:02d}", server="a", cpu=0.01, net=0.01 * MB) for i in range(10)]
    v = view([srv("a"), srv("new", max_tasks=2)], many + small(4))
    plan = scheduler.plan(v)
    after = apply(v, plan)
    assert len(on(after, "new")) == 2


def test_advice_counts_slots_only_when_every_server_is_capped() -> None:
    v = view([srv("a", max_tasks=2), srv("b")], small(3))
    (advice,) = scheduler.plan(v).advice
    assert "task slots" not in advice.reason
    assert advice.servers_wanted == 1


def test_no_cap_and_a_cap_nobody_reaches_plan_alike() -> None:
    rng = random.Random(7)
    tasks = [task(f"t{i:03d}", cpu=rng.uniform(0.01, 0.5), net=rng.uniform(0.1, 5) * MB,
                  server=rng.choice([None, "a", "b", "c"])) for i in range(60)]
    servers = [srv("a"), srv("b", cpu=4.0), srv("c", cpu=16.0)]
    plain = view(servers, tasks)
    roomy = replace(plain, servers=tuple(replace(s, max_tasks=1_000) for s in servers))
    p1, p2 = scheduler.plan(plain), scheduler.plan(roomy)
    assert (p1.placements, p1.moves, p1.pending) == (p2.placements, p2.moves, p2.pending)


def _slots(v: ClusterView) -> Counter[str]:
    """Tasks holding a slot on each server: running there (in flight or not), or in flight
    towards it."""
    held: Counter[str] = Counter()
    live = {s.id for s in v.servers if s.alive}
    flights = {f.task: f for f in v.in_flight}
    for t in v.tasks:
        if t.stopped:
            continue
        f = flights.get(t.id)
        places = {t.server} if t.server in live else set()
        if f is not None and (t.server is None or t.server in (f.source, f.target)) \
                and f.target in live:
            places.add(f.target)
        for sid in places:
            held[sid] += 1
    return held


def _first_step(v: ClusterView, plan: scheduler.Plan) -> ClusterView:
    """The cluster right after the master acted on `plan`: placements run, moved tasks still
    drain on their source with a move in flight towards the target."""
    where: dict[str, str | None] = {p.task: p.server for p in plan.placements}
    where.update({r.task: None for r in plan.revocations})
    tasks = tuple(replace(t, server=where[t.id]) if t.id in where else t for t in v.tasks)
    over = {p.task for p in plan.placements} | {p.task for p in plan.pending}
    moved = {m.task for m in plan.moves}
    flights = tuple(f for f in v.in_flight if f.task not in over | moved) + tuple(
        MoveInFlight(m.task, m.source, m.target, v.now) for m in plan.moves)
    return replace(v, tasks=tasks, in_flight=flights)


def _with_caps(v: ClusterView, seed: int) -> ClusterView:
    rng = random.Random(seed)
    n = max(len(v.tasks), 1)
    per = max(n // max(len(v.servers), 1), 1)
    servers = tuple(
        replace(s, max_tasks=rng.choice([None, 1, per // 2 + 1, per, 2 * per]))
        for s in v.servers)
    return replace(v, servers=servers)


@PROPERTY
@given(shapes(max_servers=60, max_tasks=1_500), st.integers(0, 2**32 - 1))
def test_property_no_plan_takes_a_server_above_its_cap(shape: object, seed: int) -> None:
    for cfg in (None, GENEROUS):
        v = _with_caps(build(shape) if cfg is None else build(shape, cfg), seed)  # type: ignore[arg-type]
        caps = {s.id: s.max_tasks for s in v.servers}
        before = _slots(v)
        plan = scheduler.plan(v)
        check_safe(v, plan)
        # Every server that receives something ends at or under its cap, counting the tasks
        # still draining off it (the handoff's first step) and those in flight towards it.
        after = _slots(_first_step(v, plan))
        receivers = {p.server for p in plan.placements} | {m.target for m in plan.moves}
        for sid in receivers:
            cap = caps[sid]
            if cap is not None:
                assert after[sid] <= cap, (sid, cap, before[sid], after[sid])
        for p in plan.pending:
            assert p.reason
