"""server.reconcile: epochs, generations, starts, stops with drain, restarts, fencing plans."""

from __future__ import annotations

import pytest

from server.reconcile import (
    Desired,
    EpochRead,
    Running,
    Stop,
    choose_leader,
    fence_plan,
    judge_epoch,
    newer_epoch,
    plan_reconcile,
)
from tasks.cluster import LeaderInfo
from tasks.runner import TaskState


def want(task_id: str, generation: int) -> dict[str, Desired[str]]:
    return {task_id: Desired(task_id, generation, f"spec-{task_id}")}


def run(task_id: str, generation: int, state: TaskState = TaskState.RUNNING,
        **kw: object) -> dict[str, Running]:
    return {task_id: Running(task_id, generation, state, **kw)}  # type: ignore[arg-type]


NOTHING: dict[str, Desired[str]] = {}


def confirmed(version: int, czxid: int = 10) -> EpochRead:
    return EpochRead(czxid, version)


@pytest.mark.parametrize(
    ("epoch", "known", "verdict"),
    [(5, confirmed(5), "obey"), (4, confirmed(5), "stale"), (0, confirmed(5), "stale"),
     (6, confirmed(5), "unconfirmed"), (1000, confirmed(5), "unconfirmed"),
     (1, None, "unconfirmed")],
)
def test_judge_epoch_believes_only_what_zookeeper_confirms(
        epoch: int, known: EpochRead | None, verdict: str) -> None:
    assert judge_epoch(epoch, known) == verdict


def test_a_refused_epoch_is_never_remembered() -> None:
    """After a forged 1000 the real leader's 5 is still obeyed: nothing kept the 1000."""
    assert judge_epoch(1000, confirmed(5)) == "unconfirmed"
    assert judge_epoch(5, confirmed(5)) == "obey"


def test_newer_epoch_orders_reads_and_ignores_missing_nodes() -> None:
    assert newer_epoch(None, confirmed(3)) == confirmed(3)
    assert newer_epoch(confirmed(5), confirmed(3)) == confirmed(5)     # a late read
    assert newer_epoch(confirmed(5), None) == confirmed(5)
    # The node deleted and created again: its versions start over, and count.
    assert newer_epoch(confirmed(5, czxid=10), confirmed(1, czxid=20)) == confirmed(1, 20)


def leader(epoch: int, grpc: str = "127.0.0.1:1") -> LeaderInfo:
    return LeaderInfo(id="m", grpc=grpc, http="", epoch=epoch, since_unix=0.0)


@pytest.mark.parametrize(
    ("announced", "known", "following", "decision"),
    [
        (leader(5), confirmed(5), None, "follow"),
        (leader(5), confirmed(5), leader(4), "follow"),           # a new term
        (leader(5), confirmed(5), leader(5), "keep"),             # already followed
        (leader(5, "evil:1"), confirmed(5), leader(5), "keep"),   # a second address, same term
        (leader(1000, "evil:1"), confirmed(5), leader(5), "recheck"),   # forged
        (leader(1000, "evil:1"), confirmed(5), None, "recheck"),
        (leader(6), confirmed(5), leader(5), "recheck"),          # the watch lags: re-read
        (leader(4), confirmed(5), leader(5), "keep"),             # an old term's node
        (None, confirmed(5), leader(5), "keep"),                  # node gone: keep following
        (leader(5), None, None, "recheck"),                       # epoch not read yet
        (leader(1), confirmed(1, czxid=20), leader(7), "follow"),  # epoch node recreated
    ],
)
def test_choose_leader(announced: LeaderInfo | None, known: EpochRead | None,
                       following: LeaderInfo | None, decision: str) -> None:
    assert choose_leader(announced, known, following) == decision


def test_start_a_new_task_and_remember_its_generation() -> None:
    p = plan_reconcile(want("a", 1), {}, {}, may_start=True, now=0, restart_backoff_s=5)
    assert [d.task_id for d in p.start] == ["a"]
    assert p.start[0].payload == "spec-a"
    assert p.generations == {"a": (0, 1)}
    assert not p.stop and not p.refused


def test_nothing_starts_without_a_lease_or_while_draining() -> None:
    p = plan_reconcile(want("a", 1), {}, {}, may_start=False, now=0, restart_backoff_s=5)
    assert p.empty
    assert p.generations == {}


def test_converged_is_empty() -> None:
    p = plan_reconcile(want("a", 1), run("a", 1), {"a": (0, 1)}, may_start=True, now=0,
                       restart_backoff_s=5)
    assert p.empty


def test_starting_and_draining_tasks_are_left_alone() -> None:
    for state in (TaskState.STARTING, TaskState.DRAINING):
        p = plan_reconcile(want("a", 1), run("a", 1, state), {"a": (0, 1)}, may_start=True, now=0,
                           restart_backoff_s=5)
        assert p.empty


def test_not_desired_is_stopped_with_drain() -> None:
    p = plan_reconcile(NOTHING, run("a", 1), {"a": (0, 1)}, may_start=True, now=0,
                       restart_backoff_s=5)
    assert p.stop == (Stop("a", 1, drain=True, reason="not desired"),)
    assert not p.start


def test_not_desired_is_stopped_even_without_a_lease() -> None:
    p = plan_reconcile(NOTHING, run("a", 1), {"a": (0, 1)}, may_start=False, now=0,
                       restart_backoff_s=5)
    assert [s.task_id for s in p.stop] == ["a"]


def test_busy_tasks_are_left_alone() -> None:
    p = plan_reconcile(NOTHING, run("a", 1, busy=True), {"a": (0, 1)}, may_start=True, now=0,
                       restart_backoff_s=5)
    assert p.empty
    p = plan_reconcile(want("a", 2), run("a", 1, busy=True), {"a": (0, 1)}, may_start=True, now=0,
                       restart_backoff_s=5)
    assert p.empty


def test_stale_generation_is_refused() -> None:
    p = plan_reconcile(want("a", 1), {}, {"a": (0, 2)}, may_start=True, now=0, restart_backoff_s=5)
    assert not p.start
    assert [(r.task_id, r.generation) for r in p.refused] == [("a", 1)]
    assert "stale generation" in p.refused[0].reason
    assert p.generations == {"a": (0, 2)}


def test_stale_generation_leaves_the_newer_running_task() -> None:
    p = plan_reconcile(want("a", 1), run("a", 2), {"a": (0, 2)}, may_start=True, now=0,
                       restart_backoff_s=5)
    assert not p.stop and not p.start
    assert len(p.refused) == 1


def test_same_generation_after_a_stop_is_not_stale() -> None:
    # Self-fenced or revoked, then given back at the same generation: start again.
    p = plan_reconcile(want("a", 3), run("a", 3, TaskState.STOPPED), {"a": (0, 3)}, may_start=True,
                       now=0, restart_backoff_s=5)
    assert [d.generation for d in p.start] == [3]
    assert not p.refused


def test_newer_generation_replaces_the_running_one_stop_first() -> None:
    p = plan_reconcile(want("a", 2), run("a", 1), {"a": (0, 1)}, may_start=True, now=0,
                       restart_backoff_s=5)
    assert p.stop == (Stop("a", 1, drain=True, reason="replaced by generation 2"),)
    assert not p.start
    # Once the old one has stopped, the new generation starts.
    p = plan_reconcile(want("a", 2), run("a", 1, TaskState.STOPPED), {"a": (0, 1)}, may_start=True,
                       now=0, restart_backoff_s=5)
    assert [d.generation for d in p.start] == [2]
    assert p.generations == {"a": (0, 2)}


def test_failed_desired_task_restarts_after_the_backoff() -> None:
    failed = run("a", 1, TaskState.FAILED, failed_at=100.0)
    early = plan_reconcile(want("a", 1), failed, {"a": (0, 1)}, may_start=True, now=104.9,
                           restart_backoff_s=5)
    assert early.empty
    late = plan_reconcile(want("a", 1), failed, {"a": (0, 1)}, may_start=True, now=105.0,
                          restart_backoff_s=5)
    assert [d.task_id for d in late.start] == ["a"]


def test_failed_undesired_task_is_released_without_drain() -> None:
    p = plan_reconcile(NOTHING, run("a", 1, TaskState.FAILED, failed_at=1.0), {"a": (0, 1)},
                       may_start=True, now=2, restart_backoff_s=5)
    assert p.stop == (Stop("a", 1, drain=False, reason="failed, not desired"),)


def test_stopped_entries_are_forgotten_once_the_leader_saw_them() -> None:
    unseen = plan_reconcile(NOTHING, run("a", 1, TaskState.STOPPED), {"a": (0, 1)}, may_start=True,
                            now=0, restart_backoff_s=5)
    assert unseen.empty
    seen = plan_reconcile(NOTHING, run("a", 1, TaskState.STOPPED, final_acked=True), {"a": (0, 1)},
                          may_start=True, now=0, restart_backoff_s=5)
    assert seen.forget == ("a",)
    # Forgetting the runner keeps the generation: a stale one is still refused later.
    assert seen.generations == {"a": (0, 1)}


def test_a_new_incarnation_of_the_job_starts_at_a_lower_generation() -> None:
    # The job was deleted and submitted again: same task id, generations from 1 again. The old
    # incarnation's generation 3 is another task's history, not a reason to refuse.
    new = {"a": Desired("a", 1, "spec-a", incarnation=2000)}
    p = plan_reconcile(new, run("a", 3, TaskState.STOPPED, final_acked=True), {"a": (1000, 3)},
                       may_start=True, now=0, restart_backoff_s=5)
    assert not p.refused
    assert [(d.task_id, d.generation) for d in p.start] == [("a", 1)]
    assert p.generations == {"a": (2000, 1)}
    # Within the new incarnation a lower generation is stale again.
    stale = plan_reconcile({"a": Desired("a", 1, "spec-a", incarnation=2000)}, {},
                           {"a": (2000, 2)}, may_start=True, now=0, restart_backoff_s=5)
    assert [r.generation for r in stale.refused] == [1]


def test_a_running_task_of_the_old_incarnation_is_replaced_even_at_the_same_generation() -> None:
    new = {"a": Desired("a", 1, "spec-a", incarnation=2000)}
    p = plan_reconcile(new, run("a", 1, incarnation=1000), {"a": (1000, 1)}, may_start=True,
                       now=0, restart_backoff_s=5)
    assert p.stop == (Stop("a", 1, drain=True,
                           reason="replaced by a new incarnation of its job"),)
    assert not p.start


def test_mixed_set_is_deterministic() -> None:
    desired = {**want("b", 1), **want("a", 1), **want("c", 4)}
    running = {**run("c", 4), **run("d", 2), **run("e", 1, TaskState.DRAINING)}
    p = plan_reconcile(desired, running, {"c": (0, 4), "d": (0, 2), "e": (0, 1)},
                       may_start=True, now=0, restart_backoff_s=5)
    assert [d.task_id for d in p.start] == ["a", "b"]
    assert [s.task_id for s in p.stop] == ["d"]


def test_fence_plan_stops_everything_that_may_write_without_drain() -> None:
    running = {**run("a", 1), **run("b", 2, TaskState.STARTING),
               **run("c", 1, TaskState.DRAINING), **run("d", 1, TaskState.STOPPED),
               **run("e", 1, TaskState.FAILED)}
    stops = fence_plan(running)
    assert [s.task_id for s in stops] == ["a", "b", "c"]
    assert all(not s.drain for s in stops)

