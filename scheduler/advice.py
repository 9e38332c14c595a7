"""Per-group capacity advice: one `GroupAdvice` for every group seen (servers' and tasks' groups).

All numbers describe the cluster *as it will be once the plan is applied* (placements made, moves
done, stopped tasks gone): that is the state an autoscaler or a person acts on.

- `utilisation`: mean dominant utilisation of the group's schedulable servers (0 when none);
- `imbalance`: max - mean of the same scores;
- `servers_wanted`: how many servers of the group's average schedulable size would bring the
  mean utilisation to `Config.target_watermark`: (sum of the schedulable servers' scores + the
  load still looking for a home, in units of an average server) / target, rounded up. The load
  looking for a home is what is pending plus what runs on draining servers (they are leaving);
  cordoned servers keep their tasks and are not counted. When tasks are pending, the answer is at
  least the schedulable servers plus enough new ones for the pending load (and at least one), so
  a group that cannot place a task always asks for more servers, even when its mean utilisation
  is low (fragmentation: no single server has room for a big task). With no schedulable server,
  all the group's load counts, in units of the servers seen (alive, else any of the group, else
  any at all). At least 1 when the group has tasks; 0 for a group with neither.
- task slots (`Server.max_tasks`): when every schedulable server of the group has a cap, the
  group has that many slots; `task_slots_free` is what is left of them, and `servers_wanted` is
  at least the servers of the group's average cap that hold its tasks (those on schedulable and
  draining servers, and the pending ones): a group whose slots ran out asks for a server even at
  low load. With one uncapped server slots are no limit (`task_slots_free` None).
- `reason`: the same in words, plus what the plan could not do (pending, stalled drain, budget
  used up, a hot server that cannot shed load), and the servers that carry load in a dimension
  they have no capacity in (full, not schedulable; never an unbounded utilisation).
"""

from __future__ import annotations

import math
from collections import Counter

from scheduler.model import GroupAdvice
from scheduler.placement import PlacementResult
from scheduler.reasons import plural
from scheduler.utilisation import NO_CAP, Cluster

_NAMED = 5  # servers named in a reason at most


def _units(c: float, n: float, cap_c: float, cap_n: float) -> float:
    """A load in units of one server of capacity (cap_c, cap_n), dominant dimension;
    inf when the load needs a dimension the server does not have."""
    units = 0.0
    for load, cap in ((c, cap_c), (n, cap_n)):
        if load > 0.0:
            units = max(units, load / cap if cap > 0.0 else math.inf)
    return units


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9) if x > 0.0 else 0


def advise(cl: Cluster, result: PlacementResult, notes: dict[str, list[str]]
           ) -> tuple[GroupAdvice, ...]:
    cfg = cl.cfg
    target = max(cfg.target_watermark, 1e-6)
    task_count = Counter(t.group for t in cl.tasks if not t.stopped)
    out: list[GroupAdvice] = []
    for group in cl.groups_seen():
        members = cl.members.get(group, [])
        alive = [i for i in members if cl.alive[i]]
        sched = [i for i in alive if cl.sched[i]]
        scores = [cl.score[i] for i in sched]
        util = sum(scores) / len(scores) if scores else 0.0
        imbalance = max(scores) - util if scores else 0.0
        words = [
            f"group {group}: {len(alive)} alive ({len(sched)} schedulable), "
            f"utilisation {util:.2f}, imbalance {imbalance:.2f}"
        ]

        # Load that needs a schedulable home and has none yet: pending, and what runs on
        # draining servers (leaving). Cordoned servers keep their tasks: not counted.
        pend = result.pending_by_group.get(group)
        n_pending = int(pend[0]) if pend else 0
        extra_c = pend[1] if pend else 0.0
        extra_n = pend[2] if pend else 0.0
        for i in alive:
            if cl.draining[i]:
                extra_c += max(cl.used_c[i] - cl.bg_c[i], 0.0)
                extra_n += max(cl.used_n[i] - cl.bg_n[i], 0.0)

        basis = sched or alive or members or list(range(len(cl.sids)))
        has_tasks = task_count.get(group, 0) > 0
        if basis:
            cap_c = sum(cl.cap_c[i] for i in basis) / len(basis)
            cap_n = sum(cl.cap_n[i] for i in basis) / len(basis)
            if sched:
                demand = sum(scores) + _units(extra_c, extra_n, cap_c, cap_n)
            else:
                run_c = sum(cl.used_c[i] for i in alive) + extra_c
                run_n = sum(cl.used_n[i] for i in alive) + extra_n
                demand = _units(run_c, run_n, cap_c, cap_n)
            pending_units = (_units(pend[1], pend[2], cap_c, cap_n) if pend else 0.0)
            if math.isinf(demand) or math.isinf(pending_units):
                wanted = len(sched) + 1
                words.append("part of the demand needs a dimension its servers do not have")
            else:
                wanted = _ceil(demand / target)
                if n_pending:
                    wanted = max(wanted, len(sched) + max(_ceil(pending_units / target), 1))
            what = "its servers" if sched else "the servers seen"
        else:
            wanted = 0
            what = ""
            words.append("no server has been seen, so capacity is unknown")
        slots_free: int | None = None
        if sched and cl.capped and all(cl.cap[i] < NO_CAP for i in sched):
            slots = sum(cl.cap[i] for i in sched)
            used = sum(cl.count[i] + cl.leaving[i] for i in sched)
            slots_free = sum(max(cl.cap[i] - cl.count[i] - cl.leaving[i], 0) for i in sched)
            leaving = sum(cl.count[i] for i in alive if cl.draining[i])
            demand = used + leaving + n_pending
            need = _ceil(demand / (slots / len(sched)))
            words.append(f"task slots: {used} of {slots} used")
            if need > wanted:
                wanted = need
                words.append(f"{plural(need, 'server')} of the group's average task cap hold "
                             f"its {plural(demand, 'task')}")
        if has_tasks:
            wanted = max(wanted, 1)
        words.append(
            f"{plural(wanted, 'server')}"
            + (f" (of the average size of {what})" if what else "")
            + f" bring mean utilisation to the target {cfg.target_watermark:.2f}"
        )
        if n_pending:
            room = int(pend[3]) if pend else 0
            slot = int(pend[4]) if pend else 0
            slot_words = f"{slot} for lack of a task slot, " if slot else ""
            words.append(
                f"{plural(n_pending, 'task')} pending ({room} for lack of room, "
                f"{slot_words}{n_pending - room - slot} for lack of a server)"
            )
        lacking = [i for i in alive if cl.lacks[i]]
        if lacking:
            names = ", ".join(f"{cl.sids[i]} ({cl.lacks[i]})" for i in lacking[:_NAMED])
            more = f" and {len(lacking) - _NAMED} more" if len(lacking) > _NAMED else ""
            words.append(
                f"{plural(len(lacking), 'server')} carry load in a dimension they have no "
                f"capacity in and take nothing new: {names}{more}"
            )
        words.extend(notes.get(group, ()))
        out.append(GroupAdvice(
            group=group,
            servers_alive=len(alive),
            utilisation=util,
            imbalance=imbalance,
            servers_wanted=wanted,
            reason="; ".join(words),
            task_slots_free=slots_free,
        ))
    return tuple(out)
