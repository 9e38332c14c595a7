"""Handoffs: tasks that must leave a live server that still runs them.

Two kinds, both emitted as `Move`s to a chosen target (a direct handoff: the master revokes the
task from the source and, once it has drained, assigns it to the target, exactly as for a
rebalance move), never as `Revocation`s. A revocation would stop the task with nowhere to go and
leave it unplaced until a later round; a move keeps it running on the source until the target is
known to have room.

- Drain: a draining server gets nothing new, and up to `Config.drain_budget` of its tasks leave it
  per round (per draining server), heaviest first, each to the server the placement rule picks
  (same group, schedulable, lowest resulting score, under the high watermark, a task slot left).
  The cool-down does not apply: an operator asked for the server to be emptied. A task that
  fits nowhere stays where it is and keeps running; the group's advice says the drain is
  stalled and counts its load in the servers wanted. Tasks already in flight off the server
  count as gone.
- Isolation repair: a task running on a live server of another group (the server's group was
  changed, or an assignment predates the group) moves to its own group. These use the per-round
  `Config.move_budget`, before the rebalancer does; the cool-down does not apply either.

Both run after placement (unplaced tasks are not running at all, so they go first) and before the
rebalancer (which then sees the handoffs as done).
"""

from __future__ import annotations

from scheduler.model import Move
from scheduler.placement import GroupPlacer, release
from scheduler.reasons import plural
from scheduler.utilisation import Cluster


def repair_isolation(
    cl: Cluster, placers: dict[str, GroupPlacer], moves: list[Move],
    notes: dict[str, list[str]], budget: int,
) -> int:
    """Move misplaced tasks to their own group within `budget`; returns the budget left."""
    stuck: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for k in cl.misplaced:
        t = cl.tasks[k]
        if budget <= 0:
            waiting[t.group] = waiting.get(t.group, 0) + 1
            continue
        placer = placers.get(t.group)
        found = placer.choose(cl.load_c[k], cl.load_n[k]) if placer is not None else None
        if placer is None or found is None:
            stuck[t.group] = stuck.get(t.group, 0) + 1
            continue
        j, target, res = found
        src = cl.sindex[t.server] if t.server is not None else -1
        placer.commit(j, target, cl.load_c[k], cl.load_n[k], res)
        release(cl, placers, src, cl.load_c[k], cl.load_n[k])
        budget -= 1
        moves.append(Move(
            t.id, cl.sids[src], cl.sids[target],
            f"isolation: {cl.sids[src]} is in group {cl.sgroup[src]}, the task belongs to group "
            f"{t.group}: lowest score {res:.2f} on {cl.sids[target]}",
        ))
    for group, n in stuck.items():
        notes.setdefault(group, []).append(
            f"{plural(n, 'task')} running in another group cannot move here (no room)"
        )
    for group, n in waiting.items():
        notes.setdefault(group, []).append(
            f"{plural(n, 'task')} running in another group wait for the move budget"
        )
    return budget


def drain(
    cl: Cluster, placers: dict[str, GroupPlacer], moves: list[Move],
    notes: dict[str, list[str]], used: dict[int, int],
) -> None:
    """Hand off up to `drain_budget` tasks of each draining server, less `used` (handoffs from
    it already under way, when they count) (module docstring)."""
    load_c, load_n, tasks = cl.load_c, cl.load_n, cl.tasks
    for i in sorted(cl.drain_tasks):
        per_server = max(cl.cfg.drain_budget - used.get(i, 0), 0)
        ks = cl.drain_tasks[i]
        ic, in_ = cl.inv_c[i], cl.inv_n[i]
        ks.sort(key=lambda k: (-max(load_c[k] * ic, load_n[k] * in_), k))
        sid, group = cl.sids[i], cl.sgroup[i]
        moved = stalled = 0
        for k in ks:
            if moved >= per_server:
                break
            t = tasks[k]
            placer = placers.get(t.group)
            found = placer.choose(load_c[k], load_n[k]) if placer is not None else None
            if placer is None or found is None:
                stalled += 1
                continue
            j, target, res = found
            placer.commit(j, target, load_c[k], load_n[k], res)
            release(cl, placers, i, load_c[k], load_n[k])
            moved += 1
            moves.append(Move(
                t.id, sid, cl.sids[target],
                f"drain {sid}: handoff to {cl.sids[target]}, lowest score {res:.2f} "
                f"in group {t.group}",
            ))
        left = len(ks) - moved
        if stalled:
            slot = " or a free task slot" if cl.capped else ""
            notes.setdefault(group, []).append(
                f"drain of {sid} stalled: {plural(stalled, 'task')} have no room under the "
                f"high watermark {cl.cfg.high_watermark:.2f}{slot}"
            )
        elif left:
            notes.setdefault(group, []).append(
                f"drain of {sid}: {moved} handed off this round, {left} left "
                f"(drain budget {cl.cfg.drain_budget} per round)"
            )
