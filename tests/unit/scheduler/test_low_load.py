"""Issue 14 ("a new server gets work") and issue 16 (zero-load tasks pile up on one server):
count balance at low load, and the per-task CPU floor that spreads idle tasks at placement."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scheduler
from scheduler import ClusterView, Config, Resources, Server, Task
from tests.unit.scheduler.helpers import MB, apply, handoff, on, scores, srv, task, view
from tests.unit.scheduler.test_properties import EXAMPLES, Shape, build, check_safe, shapes

# The issue's cluster: utilisation about 0.03 on 8-core servers.
LOW_CPU = 0.006


def _low(n_servers: int = 4, per_server: int = 10, **config: object) -> ClusterView:
    servers = [srv(f"s{n}") for n in range(1, n_servers + 1)]
    tasks = [task(f"t{s}-{k:02d}", cpu=LOW_CPU, net=0.2 * MB, server=f"s{s}")
             for s in range(1, n_servers + 1) for k in range(per_server)]
    return view(servers, tasks, **config)  # type: ignore[arg-type]


def _join(v: ClusterView, *sids: str, cpu: float = 8.0) -> ClusterView:
    new = tuple(Server(sid, "default", Resources(cpu, 1000 * MB)) for sid in sids)
    return replace(v, servers=(*v.servers, *new))


def test_new_server_at_low_load_takes_tasks_in_the_first_round() -> None:
    v = _low(move_budget=20)
    assert max(scores(v).values()) < 0.05
    assert scheduler.plan(v).is_empty()  # four servers with ten tasks each: balanced
    v = _join(v, "new")
    plan = scheduler.plan(v)
    assert plan.moves, "a new server at low load got nothing in its first round"
    assert all(m.target == "new" for m in plan.moves)
    # Its share is 40 / 5 = 8: it takes 8 tasks, from the four old servers, two each.
    assert len(plan.moves) == 8
    assert sorted(m.source for m in plan.moves) == ["s1", "s1", "s2", "s2", "s3", "s3",
                                                    "s4", "s4"]
    for m in plan.moves:
        assert m.reason.startswith("count balance group default (low load: mean 0.")
        assert "new has " in m.reason and m.source in m.reason
    after = apply(v, plan)
    assert {len(on(after, s)) for s in ("s1", "s2", "s3", "s4", "new")} == {8}
    assert scheduler.plan(after).is_empty()
    assert scheduler.plan(replace(after, now=after.now + 3600.0)).is_empty()


def test_new_server_at_low_load_respects_the_budget_cooldown_and_moves_in_flight() -> None:
    v = _join(_low(per_server=25, move_budget=3, cooldown_s=300.0), "new")
    last_moved: dict[str, float] = {}
    paths: dict[str, list[str]] = {}
    rounds = 0
    while True:
        rounds += 1
        assert rounds <= 40, "count balance did not settle"
        plan = scheduler.plan(v)
        assert len(plan.moves) <= 3
        if rounds == 1:
            assert plan.moves and all(m.target == "new" for m in plan.moves)
        flying = {f.task for f in v.in_flight}
        for m in plan.moves:
            assert m.task not in flying, "a move in flight was decided twice"
            assert v.now - last_moved.get(m.task, -1e9) >= 300.0, "moved within cool-down"
            last_moved[m.task] = v.now
            paths.setdefault(m.task, [m.source]).append(m.target)
        if plan.is_empty():
            break
        v = handoff(v, plan, advance=60.0)
    # Its share of 100 tasks on 5 equal servers is 20; a round fills it towards the share, and
    # count balance starts again only under half of it (the hysteresis): 3 + 3 + 3 + 3 moves,
    # a round for the last handoffs to land, and a quiet one.
    assert len(on(v, "new")) == 12 and rounds == 6
    for path in paths.values():
        assert len(path) == len(set(path)), path


def test_count_share_follows_capacity() -> None:
    v = _join(_low(n_servers=2, per_server=30, move_budget=100), "big", cpu=16.0)
    v = replace(v, servers=tuple(replace(s, capacity=Resources(16.0, 2000 * MB))
                                 if s.id == "big" else s for s in v.servers))
    after = apply(v, scheduler.plan(v))
    # 60 tasks, weights 1 : 1 : 2 -> shares 15 : 15 : 30; it is filled to its share.
    assert len(on(after, "big")) == 30


def test_count_balance_keeps_the_target_under_the_load_goal() -> None:
    # A new server with a background just under mean + threshold / 2 takes nothing: count
    # balance never makes a target a load source (and the load rule has nothing to do either).
    v = _low(move_budget=20)
    v = replace(v, servers=(*v.servers, srv("busy-new", bg_cpu=8.0 * 0.07)))
    plan = scheduler.plan(v)
    assert not plan.moves
    (advice,) = plan.advice
    assert "busy-new has 0 tasks" in advice.reason


def test_count_balance_leaves_a_group_above_low_load_to_the_load_rule() -> None:
    # Five servers at 0.50 and a new one: max - mean is 0.08, under the threshold, and the
    # group is not at low load: nothing moves (new and evacuated tasks go to the new server).
    servers = [srv(f"s{n}", cpu=10.0) for n in range(1, 6)]
    tasks = [task(f"t{s}-{k:02d}", cpu=0.25, server=f"s{s}") for s in range(1, 6)
             for k in range(20)]
    v = _join(view(servers, tasks), "new", cpu=10.0)
    assert scheduler.plan(v).is_empty()


def test_evacuation_at_low_load_places_the_dead_servers_tasks_and_moves_nothing_else() -> None:
    v = _low(n_servers=5, per_server=8)
    assert scheduler.plan(v).is_empty()
    doomed = on(v, "s3")
    dead = replace(v, servers=tuple(replace(s, alive=False) if s.id == "s3" else s
                                    for s in v.servers))
    plan = scheduler.plan(dead)
    assert {p.task for p in plan.placements} == doomed
    assert not plan.moves
    after = apply(dead, plan)
    assert sorted(len(on(after, s)) for s in ("s1", "s2", "s4", "s5")) == [10, 10, 10, 10]
    assert scheduler.plan(after).is_empty()


def test_a_cooling_group_says_why_the_new_server_waits() -> None:
    v = _low(cooldown_s=300.0)
    v = replace(v, tasks=tuple(replace(t, last_moved_at=v.now - 10.0) for t in v.tasks))
    plan = scheduler.plan(_join(v, "new"))
    assert not plan.moves
    (advice,) = plan.advice
    assert "new has 0 tasks" in advice.reason and "cool-down" in advice.reason


def test_zero_load_tasks_spread_over_the_servers_issue_16() -> None:
    servers = [srv(f"s{n:02d}") for n in range(10)]
    tasks = [task(f"t{n:04d}", cpu=0.0, net=0.0) for n in range(1_000)]
    plan = scheduler.plan(view(servers, tasks))
    assert len(plan.placements) == 1_000
    counts: dict[str, int] = {}
    for p in plan.placements:
        counts[p.server] = counts.get(p.server, 0) + 1
    assert sorted(counts.values()) == [100] * 10
    # Also when unmeasured with a zero hint or a zero default estimate.
    idle = [Task(f"u{n:03d}", "idle", "default", hint=Resources(0.0, 0.0)) for n in range(100)]
    plan = scheduler.plan(view(servers, idle))
    assert len({p.server for p in plan.placements}) == 10
    assert scheduler.estimates(view(servers, idle))["u000"].cpu > 0.0


# -- properties --------------------------------------------------------------------------------

PROPS = settings(max_examples=max(EXAMPLES // 2, 1), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _random_low(seed: int, n_old: int, n_new: int, n_tasks: int, budget: int,
                cooldown: float, uniform: bool) -> ClusterView:
    """Low load: at most 300 tasks of at most 0.002 cores and 0.1 MB/s on 4-16 cores."""
    rng = random.Random(seed)
    sizes = [8.0] if uniform else [4.0, 8.0, 16.0]
    servers = [srv(f"s{n:02d}", cpu=rng.choice(sizes), bg_cpu=rng.uniform(0.0, 0.1))
               for n in range(n_old)]
    tasks = [task(f"t{n:04d}", cpu=rng.uniform(0.0, 0.002), net=rng.uniform(0, 0.1) * MB,
                  server=rng.choice(servers[:max(1, n_old // 2)]).id if rng.random() < 0.7
                  else rng.choice(servers).id)
             for n in range(n_tasks)]
    servers += [srv(f"new{n}", cpu=rng.choice(sizes)) for n in range(n_new)]
    return view(servers, tasks, move_budget=budget, cooldown_s=cooldown)


@PROPS
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(1, 3), st.integers(0, 300),
       st.integers(1, 20), st.sampled_from([0.0, 120.0, 300.0]), st.booleans())
def test_property_low_load_rounds_converge_without_bouncing(
        seed: int, n_old: int, n_new: int, n_tasks: int, budget: int, cooldown: float,
        uniform: bool) -> None:
    v = _random_low(seed, n_old, n_new, n_tasks, budget, cooldown, uniform)
    new = {s.id for s in v.servers if s.id.startswith("new")}
    first = scheduler.plan(v)
    assert scheduler.plan(v) == first
    # Equal servers, at least 4 tasks per server, a budget for every new server: each new
    # server is used in the first round.
    if uniform and budget >= len(new) and n_tasks >= 4 * (n_old + n_new):
        assert new <= {m.target for m in first.moves}, "a new server got no task in round 1"
    paths: dict[str, list[str]] = {}
    last_moved: dict[str, float] = {}
    for _ in range(200):
        plan = scheduler.plan(v)
        assert len(plan.moves) <= budget
        flying = {f.task for f in v.in_flight}
        for m in plan.moves:
            assert m.reason
            assert m.task not in flying
            assert v.now - last_moved.get(m.task, -1e9) >= cooldown
            last_moved[m.task] = v.now
            paths.setdefault(m.task, [m.source]).append(m.target)
        if plan.is_empty():
            break
        v = handoff(v, plan, advance=60.0)
    else:
        raise AssertionError("low-load rounds did not converge")
    for path in paths.values():  # no task ever returns to a server it left
        assert len(path) == len(set(path)), path
    assert scheduler.plan(replace(v, now=v.now + 3600.0)).is_empty()


@PROPS
@given(shapes(max_servers=60, max_tasks=600), st.sampled_from([0.0, 300.0]),
       st.integers(5, 30))
def test_property_random_clusters_at_low_load_settle_without_bouncing(
        shape: Shape, cooldown: float, budget: int) -> None:
    """Any random cluster (dead, cordoned, draining servers, moves in flight, stopped jobs) at
    low load, planned round after round with two-step handoffs: every round is safe, rounds
    stop, and no task comes back to a server it left where count balance made either move.

    (Load-rule moves alone, with a cool-down of 0 and two-step handoffs, can return a task to a
    server it left while the placements of the same rounds change the loads; that is the load
    rule's, seen on the old planner too, and the cool-down is what bounds it.)"""
    base = build(replace(shape, load=0.1))
    v = replace(base, config=Config(move_budget=budget, cooldown_s=cooldown))
    history: dict[str, list[tuple[str, str, bool]]] = {}
    for _ in range(100 + 2 * shape.tasks // budget):  # every task moved twice at most
        plan = scheduler.plan(v)
        check_safe(v, plan)
        for m in plan.moves:
            counted = m.reason.startswith("count balance")
            for src, tgt, was_count in history.get(m.task, ()):
                if (counted or was_count) and m.target == src:
                    raise AssertionError(f"{m.task} back to {src} (from {tgt}): {m.reason}")
            history.setdefault(m.task, []).append((m.source, m.target, counted))
        if plan.is_empty():
            break
        v = handoff(v, plan, advance=60.0)
    else:
        raise AssertionError("rounds did not stop")


def test_new_servers_in_several_groups_share_the_budget_in_the_first_round() -> None:
    servers = [srv(f"{g}{n}", group=g) for g in "abcd" for n in range(3)]
    tasks = [task(f"{g}{n}-{k:02d}", group=g, cpu=LOW_CPU, server=f"{g}{n}")
             for g in "abcd" for n in range(3) for k in range(10)]
    servers += [srv(f"{g}-new", group=g) for g in "abcd"]
    plan = scheduler.plan(view(servers, tasks, move_budget=4))
    assert sorted(m.target for m in plan.moves) == ["a-new", "b-new", "c-new", "d-new"]
