"""Issue 16, section 8 ("Scheduler edge cases"): zero-capacity dimensions, evacuation kept apart
from rebalancing, and the cost of a backlog of pending tasks in a full group.

(Zero-load and unmeasured tasks spreading is in test_low_load.py.)"""

from __future__ import annotations

import math
import random
import re
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

import scheduler
from scheduler import ClusterView, MoveInFlight, Plan, Resources, Task
from tests.unit.scheduler.helpers import MB, apply, kill_some, srv, task, view
from tests.unit.scheduler.test_properties import GENEROUS, SLOW, Shape, build, check_safe, shapes

# A number a person cannot read: seven or more digits before the point, or an exponent.
_UNREADABLE = re.compile(r"\d{7,}|\d[eE][+-]?\d|inf|nan")


def _texts(plan: Plan) -> list[str]:
    out = [d.reason for d in plan.placements] + [d.reason for d in plan.moves]
    out += [d.reason for d in plan.revocations] + [d.reason for d in plan.pending]
    return out + [a.reason for a in plan.advice]


def _readable(plan: Plan) -> None:
    for text in _texts(plan):
        assert not _UNREADABLE.search(text), text
    for a in plan.advice:
        # Random clusters can overload a small server a hundredfold; before: 3e17.
        assert math.isfinite(a.utilisation) and 0.0 <= a.utilisation < 1e6, a
        assert math.isfinite(a.imbalance) and 0.0 <= a.imbalance < 1e6, a
        assert a.servers_wanted < 1_000_000, a  # before: 1.4e21


# -- zero-capacity dimensions ------------------------------------------------------------------


def _hot_group(zero: scheduler.Server) -> ClusterView:
    """s1 runs 0.8 of its CPU, s2 0.1: out of balance, whatever `zero` looks like."""
    servers = [zero, srv("s1", cpu=1.0), srv("s2", cpu=1.0)]
    tasks = [task(f"a{n}", cpu=0.2, server="s1") for n in range(4)]
    tasks += [task("b", cpu=0.1, server="s2")]
    return view(servers, tasks)


def test_zero_network_capacity_with_background_is_full_with_readable_numbers() -> None:
    # Before: utilisation ~3e17, 1.4e18 servers wanted, "z at 1000000000000000000.00 should
    # shed load", and s1 (0.8 against a mean of 3e17) never rebalanced.
    v = _hot_group(srv("z", cpu=1.0, net=0.0, bg_net=1.0))
    plan = scheduler.plan(v)
    _readable(plan)
    assert plan.moves and {(m.source, m.target) for m in plan.moves} == {("s1", "s2")}
    (advice,) = plan.advice
    assert "no network capacity" in advice.reason and "z" in advice.reason
    assert advice.servers_wanted <= 3


def test_zero_capacity_with_a_task_or_a_move_in_flight_on_it_does_not_stop_the_group() -> None:
    # A task with network load running on a server without network capacity.
    running = _hot_group(srv("z", cpu=1.0, net=0.0))
    running = replace(running, tasks=(*running.tasks, task("on-z", cpu=0.1, net=MB,
                                                            server="z")))
    plan = scheduler.plan(running)
    _readable(plan)
    # The group still rebalances, and the task that needs the network z lacks moves off z.
    assert ("s1", "s2") in {(m.source, m.target) for m in plan.moves}
    (off,) = [m for m in plan.moves if m.task == "on-z"]
    assert off.source == "z" and "z has no network capacity and the task needs it" in off.reason

    # A move in flight towards it (still draining on s2): counted on z, z takes nothing else.
    flying = _hot_group(srv("z", cpu=1.0, net=0.0))
    flying = replace(flying, in_flight=(MoveInFlight("b", "s2", "z", flying.now - 5.0),),
                     tasks=(*flying.tasks, task("new", cpu=0.05, net=MB)))
    plan = scheduler.plan(flying)
    _readable(plan)
    assert {p.task: p.server for p in plan.placements}["new"] != "z"
    # Once drained it lands elsewhere, and the reason says why not on z.
    drained = replace(flying, tasks=tuple(replace(t, server=None) if t.id == "b" else t
                                          for t in flying.tasks))
    plan = scheduler.plan(drained)
    _readable(plan)
    landed = {p.task: p for p in plan.placements}["b"]
    assert landed.server != "z" and "z has no network capacity" in landed.reason


def test_a_task_with_a_tiny_load_is_not_placed_on_a_zero_capacity_dimension() -> None:
    # Before: 1e-20 B/s on a server with no network at all scored 0.01 and won.
    servers = [srv("z", net=0.0), srv("s1", bg_cpu=4.0)]
    tiny = Task("tiny", "j", "default", load=Resources(0.1, 1e-20), measured=True)
    plan = scheduler.plan(view(servers, [tiny]))
    assert [(p.task, p.server) for p in plan.placements] == [("tiny", "s1")]
    # A task with no network load at all may go there: the dimension is not needed.
    cpu_only = Task("cpu-only", "j", "default", load=Resources(0.1, 0.0), measured=True)
    plan = scheduler.plan(view(servers, [cpu_only]))
    assert [(p.task, p.server) for p in plan.placements] == [("cpu-only", "z")]
    # With only the zero-capacity server, the tiny task is pending, and the reason says why.
    plan = scheduler.plan(view(servers[:1], [tiny]))
    assert not plan.placements
    (pending,) = plan.pending
    assert "no network capacity" in pending.reason
    _readable(plan)


def test_zero_cpu_capacity_takes_no_task_and_its_background_is_readable() -> None:
    v = _hot_group(srv("z", cpu=0.0, bg_cpu=0.5))
    v = replace(v, tasks=(*v.tasks, task("new", cpu=0.01)))
    plan = scheduler.plan(v)
    _readable(plan)
    assert {p.task: p.server for p in plan.placements}["new"] != "z"
    assert plan.moves and {m.source for m in plan.moves} == {"s1"}
    assert "no CPU capacity" in plan.advice[0].reason


@SLOW
@given(shapes(max_servers=60, max_tasks=800), st.integers(0, 2**32 - 1))
def test_property_zero_capacity_dimensions_never_take_load_and_numbers_stay_readable(
        shape: Shape, seed: int) -> None:
    v = build(shape)
    rng = random.Random(seed)
    servers = []
    for s in v.servers:
        pick = rng.random()
        if pick < 0.15:
            s = replace(s, capacity=Resources(s.capacity.cpu, 0.0))
        elif pick < 0.25:
            s = replace(s, capacity=Resources(0.0, s.capacity.net))
        servers.append(s)
    tasks = tuple(
        replace(t, load=Resources(t.load.cpu, rng.choice([t.load.net, 1e-20, 0.0])))
        if t.load is not None and rng.random() < 0.2 else t
        for t in v.tasks)
    v = replace(v, servers=tuple(servers), tasks=tasks)
    plan = scheduler.plan(v)
    check_safe(v, plan)
    _readable(plan)
    cap = {s.id: s.capacity for s in servers}
    est = scheduler.estimates(v)
    for tid, sid in [(p.task, p.server) for p in plan.placements] + [
            (m.task, m.target) for m in plan.moves]:
        e = est[tid]
        assert not (cap[sid].net <= 0.0 and e.net > 0.0), (tid, sid, e)
        assert not (cap[sid].cpu <= 0.0 and e.cpu > 0.0), (tid, sid, e)


# -- zero-load and unmeasured tasks (the fix is scheduler/estimates.py's CPU floor) ------------


def test_idle_and_unmeasured_tasks_spread_evenly_over_equal_servers() -> None:
    servers = [srv(f"s{n:02d}") for n in range(10)]
    idle = [task(f"t{n:04d}", cpu=0.0, net=0.0) for n in range(1_000)]
    # Unmeasured: no hint, no measured sibling, and a default estimate of zero.
    unmeasured = [Task(f"u{n:04d}", "new-job", "default") for n in range(1_000)]
    # Unmeasured with measured siblings that are idle: their median is zero.
    siblings = [task(f"m{n}", job="quiet", cpu=0.0, net=0.0, server=f"s0{n}")
                for n in range(10)]
    quiet = [Task(f"q{n:04d}", "quiet", "default") for n in range(990)]
    for tasks, config in ((idle, {}), (unmeasured, {"default_estimate": Resources()}),
                          (siblings + quiet, {})):
        plan = scheduler.plan(view(servers, tasks, **config))  # type: ignore[arg-type]
        counts: dict[str, int] = {}
        for p in plan.placements:
            counts[p.server] = counts.get(p.server, 0) + 1
        for t in tasks:
            if t.server is not None:
                counts[t.server] = counts.get(t.server, 0) + 1
        assert sorted(counts.values()) == [100] * 10, counts  # before the floor: all on one
        assert not plan.moves and not plan.pending


# -- losing a server moves nothing else in the same plan ---------------------------------------


def test_losing_a_server_moves_no_task_that_was_not_on_it_in_the_same_plan() -> None:
    # The case: before, b went to s1 and a1 moved s1 -> s3 "rebalance" in the same plan.
    servers = [srv("s1", cpu=1.0), srv("s2", cpu=1.0), srv("s3", cpu=1.0)]
    tasks = [task("a1", cpu=0.2, server="s1"), task("a2", cpu=0.2, server="s1"),
             task("b", cpu=0.4, server="s2"),
             task("c1", cpu=0.2, server="s3"), task("c2", cpu=0.2, server="s3")]
    v = view(servers, tasks)
    assert scheduler.plan(v).is_empty()
    dead = replace(v, servers=tuple(replace(s, alive=False) if s.id == "s2" else s
                                    for s in v.servers))
    plan = scheduler.plan(dead)
    assert [p.task for p in plan.placements] == ["b"]
    assert not plan.moves, plan.moves
    assert "evacuat" in plan.advice[0].reason  # the advice says the rebalance waits
    # The next round is an ordinary one: the group is out of balance, and the rebalancer acts.
    after = apply(dead, plan, advance=60.0)
    nxt = scheduler.plan(after)
    assert not nxt.placements and len(nxt.moves) == 1
    assert nxt.moves[0].reason.startswith("rebalance")


@SLOW
@given(shapes(max_servers=80, max_tasks=2_000), st.integers(0, 2**32 - 1))
def test_property_a_group_that_evacuates_moves_nothing_else_in_that_plan(
        shape: Shape, seed: int) -> None:
    v = build(shape, GENEROUS)
    for _ in range(12):
        first = scheduler.plan(v)
        if first.is_empty():
            break
        v = apply(v, first)
    doomed, dead = kill_some(v, seed)
    plan = scheduler.plan(dead)
    check_safe(dead, plan)
    group = {t.id: t.group for t in v.tasks}
    evacuated = {t.id for t in v.tasks if t.server in doomed and not t.stopped}
    evacuating = {group[p.task] for p in plan.placements if p.task in evacuated}
    for m in plan.moves:
        assert group[m.task] not in evacuating or m.reason.startswith(("drain", "isolation")), m


# -- the cost of a backlog ---------------------------------------------------------------------


def test_a_backlog_in_a_full_group_is_pending_with_its_reasons() -> None:
    """A full group of 200 servers (half full in CPU, half in network) running 8,000 tasks, with
    1,000 tasks that fit nowhere: all pending, each saying what it needs, nothing moved. What
    such a round costs (2.2x a round without the backlog, 26x before) is a benchmark, not a timed
    assertion: `python -m tools.bench.scheduler_bench --scenario backlog`
    (docs/benchmarks/scheduler.md)."""
    rng = random.Random(3)
    servers = []
    for n in range(200):
        cpu_full = n % 2 == 0
        servers.append(srv(f"s{n:03d}", cpu=8.0, net=1000 * MB,
                           bg_cpu=(0.84 if cpu_full else 0.3) * 8.0 - 0.4,
                           bg_net=(0.3 if cpu_full else 0.84) * 1000 * MB - 40 * MB))
    tasks = [task(f"r{n:05d}", cpu=0.01, net=1 * MB, server=servers[n % 200].id)
             for n in range(200 * 40)]
    full = view(servers, tasks)
    assert scheduler.plan(full).is_empty()
    backlog = replace(full, tasks=full.tasks + tuple(
        task(f"p{n:05d}", cpu=rng.uniform(0.1, 2.0), net=rng.uniform(11, 200) * MB)
        for n in range(1_000)))
    plan = scheduler.plan(backlog)
    assert len(plan.pending) == 1_000 and not plan.placements
    assert len({p.reason for p in plan.pending}) > 1  # each says what it needs
    assert not plan.moves
