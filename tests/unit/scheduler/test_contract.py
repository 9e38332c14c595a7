"""The contract the master relies on (scheduler/planner.py docstring), and purity."""

from __future__ import annotations

import ast
import random
from dataclasses import replace
from pathlib import Path

import pytest

import scheduler
from scheduler import MoveInFlight, Resources, Task
from tests.unit.scheduler.helpers import MB, apply, on, scores, srv, task, view

SCHEDULER_DIR = Path(scheduler.__file__).parent


def test_in_flight_task_lands_on_its_reserved_target() -> None:
    servers = [srv("s1"), srv("s2"), srv("s3")]
    tasks = [task("t1", cpu=1.0), task("other", cpu=0.5, server="s2")]
    v = view(servers, tasks, in_flight=[MoveInFlight("t1", "s1", "s3", 9_990.0)])
    plan = scheduler.plan(v)
    assert [(p.task, p.server) for p in plan.placements] == [("t1", "s3")]
    assert plan.placements[0].reason == (
        "move from s1 to s3: reserved target s3 (score 0.12) in group default")
    assert not plan.moves


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"alive": False}, "s3 is dead or unknown"),
        ({"cordoned": True}, "s3 is cordoned"),
        ({"draining": True}, "s3 is draining"),
        ({"group": "other"}, "s3 is in group other"),
        ({"bg_cpu": 6.5}, "s3 would be above the high watermark 0.85"),
    ],
)
def test_in_flight_task_is_placed_normally_when_its_target_is_no_longer_eligible(
    change: dict[str, object], why: str,
) -> None:
    s3 = srv("s3", **change)  # type: ignore[arg-type]
    v = view([srv("s1"), srv("s2"), s3], [task("t1", cpu=1.0)],
             in_flight=[MoveInFlight("t1", "s1", "s3", 9_990.0)])
    plan = scheduler.plan(v)
    (p,) = plan.placements
    assert p.server in {"s1", "s2"}
    assert p.reason.startswith(f"move from s1 to s3 abandoned ({why}): lowest score")
    # The dropped reservation no longer counts on s3.
    assert scores(apply(v, plan))["s3"] == pytest.approx(
        6.5 / 8.0 if "bg_cpu" in change else 0.0)


def test_in_flight_task_still_draining_counts_on_target_and_is_never_decided_again() -> None:
    servers = [srv("s1"), srv("s2")]
    tasks = [task("t1", cpu=4.0, server="s1")]
    v = view(servers, tasks, in_flight=[MoveInFlight("t1", "s1", "s2", 9_990.0)])
    util = scheduler.utilisation(v)
    assert util["s1"][0] == 0.0 and util["s2"][0] == 0.5
    plan = scheduler.plan(v)
    assert plan.is_empty() and not plan.pending

    # It arrived: same as running there, and still not moved while the entry is present.
    arrived = replace(v, tasks=(replace(tasks[0], server="s2"),))
    assert scheduler.plan(arrived).is_empty()

    # The source died mid-handoff: it is evacuated to its reserved target.
    died = replace(v, servers=(srv("s1", alive=False), srv("s2")))
    (p,) = scheduler.plan(died).placements
    assert (p.task, p.server) == ("t1", "s2")
    assert "reserved target s2" in p.reason


def test_stale_and_unknown_in_flight_entries_are_ignored() -> None:
    servers = [srv("s1"), srv("s2"), srv("s3")]
    tasks = [task("t1", cpu=1.0, server="s3")]
    v = view(servers, tasks, in_flight=[
        MoveInFlight("t1", "s1", "s2", 1.0),       # runs on neither source nor target
        MoveInFlight("ghost", "s1", "s2", 1.0),    # no such task
    ])
    assert scheduler.plan(v).is_empty()
    assert scheduler.utilisation(v)["s3"][0] == pytest.approx(1.0 / 8.0)
    assert scheduler.utilisation(v)["s2"][0] == 0.0


def test_stopped_jobs_are_revoked_and_never_placed() -> None:
    servers = [srv("s1"), srv("s2", alive=False)]
    tasks = [
        task("run", server="s1"),
        task("paused", server="s1", stopped=True),
        task("paused-unplaced", stopped=True),
        task("paused-on-dead", server="s2", stopped=True),
    ]
    plan = scheduler.plan(view(servers, tasks))
    revs = {r.task: r for r in plan.revocations}
    assert set(revs) == {"paused", "paused-on-dead"}
    assert revs["paused"].server == "s1"
    assert revs["paused"].reason == "job job is stopped (paused or deleted): stop it on s1"
    assert revs["paused-on-dead"].reason.endswith("s2 is dead: clear the assignment")
    assert not plan.placements and not plan.pending and not plan.moves
    # Its load no longer counts: room for others.
    assert scheduler.utilisation(view(servers, tasks))["s1"][0] == pytest.approx(0.1 / 8)


def test_task_on_a_server_of_another_group_moves_to_its_own_group() -> None:
    servers = [srv("a1", group="a"), srv("b1", group="b")]
    tasks = [task("t", group="a", server="b1")]
    plan = scheduler.plan(view(servers, tasks))
    (m,) = plan.moves
    assert (m.task, m.source, m.target) == ("t", "b1", "a1")
    assert m.reason.startswith("isolation: b1 is in group b, the task belongs to group a")


def test_cordoned_server_gets_nothing_new_and_keeps_its_tasks() -> None:
    servers = [srv("c1", cordoned=True), srv("s2", bg_cpu=4.0)]
    tasks = [task("old", server="c1"), task("new")]
    plan = scheduler.plan(view(servers, tasks))
    assert [(p.task, p.server) for p in plan.placements] == [("new", "s2")]
    assert not plan.moves and not plan.revocations


def test_cordoned_server_above_the_high_watermark_sheds_load() -> None:
    servers = [srv("c1", cordoned=True), srv("s2")]
    tasks = [task(f"t{n}", cpu=1.0, server="c1") for n in range(8)]  # c1 at 1.00
    plan = scheduler.plan(view(servers, tasks))
    assert plan.moves and all(m.source == "c1" and m.target == "s2" for m in plan.moves)
    after = scores(apply(view(servers, tasks), plan))
    assert after["c1"] <= 0.85 and after["s2"] <= 0.85


def test_advice_one_per_group_seen_in_group_order() -> None:
    servers = [srv("z1", group="z"), srv("a1", group="a", alive=False)]
    tasks = [task("m", group="m"), task("z", group="z")]
    plan = scheduler.plan(view(servers, tasks))
    assert [a.group for a in plan.advice] == ["a", "m", "z"]
    advice = {a.group: a for a in plan.advice}
    assert advice["a"].servers_alive == 0 and advice["a"].servers_wanted == 0
    assert advice["m"].servers_wanted == 1 and "no server in group m" not in advice["m"].reason
    assert advice["z"].servers_alive == 1 and advice["z"].servers_wanted == 1
    assert all(a.reason.startswith(f"group {a.group}: ") for a in plan.advice)


def test_advice_counts_utilisation_and_servers_wanted_for_the_target() -> None:
    servers = [srv(f"s{n}", cpu=10.0) for n in range(4)]
    tasks = [task(f"t{n}", cpu=0.8, server=f"s{n % 4}") for n in range(32)]  # 0.64 each
    (advice,) = scheduler.plan(view(servers, tasks, target_watermark=0.70)).advice
    assert advice.utilisation == pytest.approx(0.64)
    assert advice.imbalance == pytest.approx(0.0)
    assert advice.servers_wanted == 4  # 4 * 0.64 / 0.70 = 3.66
    (advice,) = scheduler.plan(view(servers, tasks, target_watermark=0.50)).advice
    assert advice.servers_wanted == 6  # 5.12


def test_every_decision_has_a_reason_naming_what_it_is_about() -> None:
    servers = [srv("s1", cpu=2.0), srv("s2", draining=True), srv("s3", alive=False)]
    tasks = [task("new"), task("huge", cpu=50.0), task("drained", server="s2"),
             task("evac", server="s3"), task("stop", server="s1", stopped=True)]
    plan = scheduler.plan(view(servers, tasks))
    reasons = [d.reason for d in plan.placements] + [d.reason for d in plan.moves]
    reasons += [d.reason for d in plan.revocations] + [d.reason for d in plan.pending]
    assert len(reasons) == 5
    for reason in reasons:
        assert len(reason) > 20
    for p in plan.placements:
        assert p.server in p.reason
    for m in plan.moves:
        assert m.source in m.reason and m.target in m.reason


def test_empty_view_gives_an_empty_plan() -> None:
    plan = scheduler.plan(view([], []))
    assert plan == scheduler.Plan()
    assert scheduler.utilisation(view([], [])) == {}


def test_zero_capacity_and_odd_numbers_do_not_break_anything() -> None:
    servers = [srv("zero", cpu=0.0, net=0.0), srv("s1")]
    tasks = [task("t", cpu=0.5), task("neg", cpu=-1.0, net=float("nan")),
             Task("inf", "j", "default", load=Resources(float("inf"), 0.0), measured=True)]
    plan = scheduler.plan(view(servers, tasks))
    where = {p.task: p.server for p in plan.placements}
    assert where["t"] == "s1"
    assert {p.task for p in plan.pending} == {"inf"}
    util = scheduler.utilisation(apply(view(servers, tasks), plan))
    assert util["zero"] in {(0.0, 0.0), (float("inf"), float("inf"))}


def test_same_input_same_plan_whatever_the_order() -> None:
    rng = random.Random(7)
    servers = [srv(f"s{n:02d}", group=f"g{n % 3}", cpu=rng.choice([4.0, 8.0, 16.0]),
                   alive=n % 7 != 3, draining=n % 11 == 5) for n in range(30)]
    tasks = [task(f"t{n:03d}", group=f"g{n % 3}", cpu=rng.uniform(0.01, 1.0),
                  net=rng.uniform(0.1, 30) * MB,
                  server=rng.choice([None, *[s.id for s in servers]]),
                  last_moved_at=rng.choice([None, 9_900.0, 1_000.0]))
             for n in range(400)]
    v = view(servers, tasks)
    first = scheduler.plan(v)
    assert scheduler.plan(v) == first
    for _ in range(3):
        s, t = list(servers), list(tasks)
        rng.shuffle(s)
        rng.shuffle(t)
        assert scheduler.plan(view(s, t)) == first


def test_duplicate_ids_keep_the_first_by_input_order() -> None:
    v = view([srv("s1"), srv("s1", cpu=1.0)], [task("t", cpu=2.0), task("t", cpu=50.0)])
    (p,) = scheduler.plan(v).placements
    assert p.server == "s1"


def test_utilisation_helper_counts_background_tasks_and_flights() -> None:
    servers = [srv("s1", cpu=4.0, net=100 * MB, bg_cpu=1.0), srv("s2", cpu=4.0, net=100 * MB)]
    tasks = [task("a", cpu=1.0, net=10 * MB, server="s1"),
             task("b", cpu=1.0, net=50 * MB, server="s1")]
    v = view(servers, tasks, in_flight=[MoveInFlight("b", "s1", "s2", 1.0)])
    assert scheduler.utilisation(v) == {"s1": (0.5, 0.1), "s2": (0.25, 0.5)}


def test_moves_are_counted_as_done_within_the_round() -> None:
    # Two sources, one empty target: the second move must see the first one's load.
    servers = [srv("s1", cpu=10.0), srv("s2", cpu=10.0), srv("new", cpu=10.0)]
    tasks = [task(f"a{n}", cpu=1.0, server="s1") for n in range(8)]
    tasks += [task(f"b{n}", cpu=1.0, server="s2") for n in range(8)]
    v = view(servers, tasks, move_budget=20)
    plan = scheduler.plan(v)
    after = scores(apply(v, plan))
    assert max(after.values()) - min(after.values()) <= 0.2
    assert len(plan.moves) == len({m.task for m in plan.moves})


FORBIDDEN = {"kazoo", "grpc", "aiohttp", "confluent_kafka", "kafka", "time", "datetime",
             "random", "os", "socket", "asyncio", "threading", "subprocess", "logging",
             "structlog", "master", "server", "tasks", "tools", "proto"}


def test_scheduler_is_pure_no_io_no_clock_no_network_imports() -> None:
    for path in sorted(SCHEDULER_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"open", "print", "input"}, path.name


def test_in_flight_move_to_a_cordoned_target_with_task_still_on_source_stays_put() -> None:
    servers = [srv("s1"), srv("s2", cordoned=True)]
    tasks = [task("t", server="s1")]
    v = view(servers, tasks, in_flight=[MoveInFlight("t", "s1", "s2", 1.0)])
    assert scheduler.plan(v).is_empty()
    assert on(v, "s1") == {"t"}


def test_budgets_can_count_moves_in_flight_for_a_master_that_plans_on_every_event() -> None:
    servers = [srv("s1", cpu=10.0), srv("s2", cpu=10.0), srv("new", cpu=10.0),
               srv("d", draining=True)]
    tasks = [task(f"a{n}", cpu=0.3, server="s1") for n in range(20)]
    tasks += [task(f"b{n}", cpu=0.3, server="s2") for n in range(20)]
    tasks += [task(f"d{n}", cpu=0.1, server="d") for n in range(5)]
    v = view(servers, tasks, move_budget=2, drain_budget=2, budget_counts_in_flight=True)
    first = scheduler.plan(v)
    assert len([m for m in first.moves if m.source == "d"]) == 2
    assert len([m for m in first.moves if m.source != "d"]) == 2
    flights = tuple(MoveInFlight(m.task, m.source, m.target, v.now) for m in first.moves)
    # Revoked, still draining on their sources: nothing new may start.
    busy = replace(v, in_flight=flights)
    assert not scheduler.plan(busy).moves
    # The same view with per-call budgets starts more at once.
    assert len(scheduler.plan(replace(busy, config=replace(
        busy.config, budget_counts_in_flight=False))).moves) == 4
    # One rebalance move and one drain move landed: one of each may start.
    landed = {first.moves[0].task, first.moves[-1].task}
    done = {m.task: m.target for m in first.moves if m.task in landed}
    after = replace(busy, in_flight=tuple(f for f in flights if f.task not in landed),
                    tasks=tuple(replace(t, server=done.get(t.id, t.server)) for t in v.tasks))
    moves = scheduler.plan(after).moves
    assert len([m for m in moves if m.source == "d"]) == 1
    assert len([m for m in moves if m.source != "d"]) == 1
