"""`plan(view) -> Plan`: one scheduling round, pure and deterministic.

The contract with the master
============================

Input is a `ClusterView` (frozen dataclasses, scheduler/model.py); output is a `Plan`. `plan` does
no I/O and reads no clock (`view.now` is the only time); the same view gives the same plan, and so
does a view with its servers, tasks or in-flight moves in another order (everything is sorted by
id first; ids are unique, of duplicates the first by id order is used).

Tasks
-----
- A task with `server=None` is unplaced: it gets a `Placement` or a `Pending` (with the reason).
- A task whose `server` is dead (`alive=False`) or unknown (not in `view.servers`) is unplaced too
  and is evacuated: a `Placement` elsewhere, or `Pending`. Nothing else moves because of it: in a
  group where a plan places evacuated tasks, that plan moves no other task of the group (no
  rebalance, no count-balance move; drains and isolation repairs, which an operator or a group
  change asked for, still go). The next round rebalances as usual.
- A task with `stopped=True` (job paused or deleted) that still has a server gets a `Revocation`:
  stop it, nowhere to go. With `server=None` it gets nothing. Its load counts nowhere.
- A task on a live server of another group gets a `Move` to its own group (isolation repair).
- Every other task stays where it is unless a drain or the rebalancer moves it.

Moves and the handoff
---------------------
A `Move(task, source, target)` means: the master revokes the task from `source`; it keeps the move
as a `MoveInFlight(task, source, target, started_at)` in every later `view.in_flight` until the
task runs on `target`. While the task still drains it stays `server=source`; once drained the
master passes it with `server=None`. The planner then:

- places it on the reserved `target` if that server is still eligible (alive, schedulable, same
  group, and under the high watermark with the task's load counted), else places it normally
  (the reason says why the reservation was dropped);
- while in flight counts the task's load on the target (if alive), not on the source, and never
  moves it again (a move is never decided twice). If the source dies mid-handoff the task is
  evacuated to its reserved target when that is still eligible.

The entry is over once the task got a `Placement` (on the target or elsewhere) or a `Pending`; a
master that keeps it after a `Pending` does no harm (the reservation is re-checked each round).
An in-flight entry whose task runs on neither source nor target is stale and ignored; one for an
unknown task is ignored. Moves decided in this plan count as done for the rest of the round.

Revocations and drain
---------------------
A `Revocation` is only ever for a stopped job. Drains (and isolation repairs) are emitted as
`Move`s to a chosen target — a direct handoff, so the task keeps running on the draining server
until a server with room is known, instead of being stopped and left unplaced. A draining server
gets nothing new; up to `Config.drain_budget` of its tasks leave per round (per draining server),
ignoring the cool-down. A drained task with no room anywhere stays and keeps running; the advice
says the drain is stalled. Cordon means "nothing new": a cordoned server's tasks stay, unless it is
above the high watermark, when the rebalancer may move tasks off it.

Budgets and timing
------------------
`Config.move_budget` bounds the rebalance moves plus isolation repairs decided per call;
`Config.drain_budget` bounds the drain moves per draining server per call. By default moves in
flight do not use the budget of later calls: the master paces rounds. A master that plans on every
event sets `Config.budget_counts_in_flight`: then every matched in-flight move uses up budget (the
drain budget of its source when that server is draining, else the move budget), so the budgets
bound the handoffs under way at any one time. A task whose `last_moved_at` is less than
`Config.cooldown_s` before `view.now` is not moved by the rebalancer (drain, evacuation and
isolation repair ignore the cool-down). The master should set `last_moved_at` when it starts a
move (or when the task lands), and keep `generation`, which the planner does not read.

Advice
------
`Plan.advice` holds one `GroupAdvice` per group seen (any server's or task's group), in group
order, describing the cluster after the plan is applied (scheduler/advice.py).

Order of a round
================
1. Build the working state (scheduler/utilisation.py): estimates, buckets, per-server load.
2. Revoke stopped tasks.
3. Place unplaced tasks (scheduler/placement.py): reserved in-flight targets first, then per group
   heaviest first, each on the lowest resulting dominant score under the high watermark.
4. Isolation repairs and drains (scheduler/drain.py).
5. Rebalance (scheduler/rebalance.py) with what is left of the move budget, except in the groups
   that evacuate this round.
6. Count balance (scheduler/spread.py), the same groups only redirecting this round's placements.
7. Advice (scheduler/advice.py).

Placement goes before handoffs and rebalancing because an unplaced task is not running at all.
"""

from __future__ import annotations

from scheduler.advice import advise
from scheduler.drain import drain, repair_isolation
from scheduler.model import ClusterView, Move, Plan, Revocation
from scheduler.placement import PlacementResult, build_placers, place_unplaced
from scheduler.rebalance import rebalance
from scheduler.spread import spread
from scheduler.utilisation import Cluster


def _budgets(cl: Cluster) -> tuple[int, dict[int, int]]:
    """The move budget for this call, and per draining server the drain budget already used
    (only when `Config.budget_counts_in_flight`: a handoff under way from a draining server uses
    its drain budget, any other one the move budget)."""
    budget = max(cl.cfg.move_budget, 0)
    used: dict[int, int] = {}
    if cl.cfg.budget_counts_in_flight:
        for source, n in cl.flight_sources.items():
            i = cl.sindex.get(source, -1)
            if i >= 0 and cl.draining[i]:
                used[i] = n
            else:
                budget -= n
    return max(budget, 0), used


def _evacuating(cl: Cluster, placed: PlacementResult) -> set[str]:
    """Groups in which this round places tasks of a dead or unknown server (evacuated, or in
    flight from a server that died mid-handoff)."""
    if not cl.lost:
        return set()
    lost = {cl.tasks[k].id: cl.tasks[k].group for k in cl.lost}
    return {lost[p.task] for p in placed.placements if p.task in lost}


def plan(view: ClusterView) -> Plan:
    """One scheduling round for `view` (see the module docstring for the contract)."""
    cl = Cluster(view)

    revocations: list[Revocation] = []
    for k in cl.revoke:
        t = cl.tasks[k]
        server = t.server or ""
        i = cl.sindex.get(server, -1)
        if i >= 0 and cl.alive[i]:
            reason = f"job {t.job} is stopped (paused or deleted): stop it on {server}"
        else:
            why = "dead" if i >= 0 else "unknown"
            reason = (f"job {t.job} is stopped (paused or deleted); {server} is {why}: "
                      f"clear the assignment")
        revocations.append(Revocation(t.id, server, reason))

    placers = build_placers(cl)
    placed = place_unplaced(cl, placers)

    notes: dict[str, list[str]] = {}
    moves: list[Move] = []
    budget, drain_used = _budgets(cl)
    budget = repair_isolation(cl, placers, moves, notes, budget)
    drain(cl, placers, moves, notes, drain_used)
    hold = _evacuating(cl, placed)
    budget, busy = rebalance(cl, placers, moves, notes, budget, hold)
    spread(cl, placers, placed, moves, notes, budget, busy, hold)

    return Plan(
        placements=tuple(placed.placements),
        moves=tuple(moves),
        revocations=tuple(revocations),
        pending=tuple(placed.pending),
        advice=advise(cl, placed, notes),
    )
