"""Rebalance: few, worthwhile moves that bring every group back within its imbalance threshold.

Trigger. A group needs work only when its imbalance (max - mean dominant utilisation over its
schedulable servers) exceeds `Config.imbalance_threshold`, or one of its live, non-draining servers
(cordoned included) is above the high watermark. Nothing else ever moves a task.

Sources and goal. Every schedulable server above `mean + threshold` or above the high watermark is
a *source*. Once it is being relieved it stays a source for the round until it is down to the
*goal*, `mean + (1 - Config.hysteresis) * threshold` (never above the high watermark): stopping
just under the trigger would let the next small drift trigger again. A cordoned server is a
source only above the high watermark, and only down to it.

A move. Each step takes the most urgent source cluster-wide (a heap of groups by how far their
worst source is above its goal) and makes the single best move off it:

- the task is one of the source's movable tasks (not in flight, not in its cool-down, not moved
  already this round), tried largest first;
- the target is one of the group's least loaded schedulable servers with a task slot left
  (`CANDIDATES` of them) and must end at or under the goal in both dimensions (under the high
  watermark for load leaving a cordoned server), so a target never becomes a source because of
  the move;
- the *gain* is how much of the source's load above its goal the move removes, summed over the
  two dimensions (utilisation units: min(task, excess) per dimension). It must be at least
  `Config.min_gain`, or the move must clear the source's whole excess when that is smaller. The
  task with the largest gain wins (a source typically needs one or two moves); among equal gains
  the larger task; the target is the one with the lowest resulting score.
- when no move qualifies but the source is still above the *trigger* (mean + threshold, or the
  high watermark), one move that takes it under the trigger is made whatever its gain: the
  threshold is what the group promises, `min_gain` only keeps the extra moves towards the goal
  worthwhile.

Summing over dimensions matters: a server high in both CPU and network cannot bring its dominant
score down by moving a network-heavy task alone, yet that move is progress, and the next one (a
CPU-heavy task) finishes the job. A dominant-score gain would call both moves worthless.

The search is cheap: a gain never exceeds the task's size on the source, so the scan over the
source's tasks (sorted by size) stops as soon as the rest are too small to beat the best found;
and it stops at once when a task clears the whole excess.

No bouncing. Targets end at or under the goal, `hysteresis * threshold` below the trigger, so the
load that arrives on a server does not make it a source; a task moves at most once per round and
then waits out its cool-down; with unchanged loads, planning again after a round that finished
proposes nothing (there is no source left, or the remaining ones were stuck and still are). Drift
smaller than `hysteresis * threshold` after a rebalance moves nothing.

Servers without capacity. A server with no capacity in a dimension that carries load in it
(scheduler/utilisation.py) is not schedulable and not part of its group's mean. Before the load
rule, each one's movable tasks that need the missing dimension go, largest first, to the server
the placement rule picks (within the move budget): they do not fit where they are. The reason
says "no network capacity"; no utilisation of such a server is ever printed.

A round that evacuates. In a group where this round places tasks of a dead or unknown server,
nothing else moves (no load-rule move, no shedding; count balance only redirects this round's
placements): losing a server moves its own tasks and nothing else in that plan. The next round
is an ordinary one and rebalances the group if it is still out of balance, with the lost tasks
already running where they landed (docs/architecture/scheduler.md, "Evacuation").

Stuck sources. A source for which no move qualifies (its tasks are in cool-down, too small for
`min_gain`, or too big for any target's room under the goal) is marked stuck for the round, the
group's advice says so, and the next source is tried. Steps stop when `Config.move_budget` moves
were made this round (isolation repairs included), or nothing is left to do.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

from scheduler.model import Move
from scheduler.placement import CANDIDATES, GroupPlacer, release
from scheduler.reasons import evacuation_wait, load, plural
from scheduler.utilisation import BIG, EPS, Cluster


class _Rebalancer:
    def __init__(
        self, cl: Cluster, placers: dict[str, GroupPlacer], moves: list[Move],
        notes: dict[str, list[str]],
    ) -> None:
        self.cl, self.placers, self.moves, self.notes = cl, placers, moves, notes
        cfg = cl.cfg
        self.thr = cfg.imbalance_threshold
        self.hw = cfg.high_watermark
        self.min_gain = cfg.min_gain
        self.cordoned = {
            g: [i for i in members if cl.cordoned[i] and not cl.lacks[i]]
            for g, members in cl.members.items()
        }
        self.settle = self.thr * (1.0 - min(max(cfg.hysteresis, 0.0), 1.0))
        self.stuck: set[int] = set()
        self.active: set[int] = set()   # sources being relieved this round: down to the goal
        self.by_size: dict[int, list[int]] = {}

    def goal(self, group: str) -> float:
        """Where a relieved schedulable server ends, and the most a target may reach."""
        return min(self.placers[group].mean() + self.settle, self.hw)

    def source(self, group: str) -> tuple[int, float] | None:
        """The group's most loaded server that must shed load, and the level it must reach.

        A schedulable server is a source above mean + threshold or above the high watermark, and
        stays one, this round, until it is down to the goal. A cordoned one only above the high
        watermark, and only down to it.
        """
        cl, placer, hw = self.cl, self.placers[group], self.hw
        trigger = placer.mean() + self.thr
        goal = self.goal(group)
        best, best_score, best_goal = -1, -1.0, goal
        by_rank = placer.by_rank
        for sc, r in reversed(placer.order):
            if sc <= goal + EPS:
                break
            i = by_rank[r]
            if i in self.stuck:
                continue
            if sc > trigger + EPS or sc > hw + EPS or i in self.active:
                best, best_score = i, sc
                break
        for i in self.cordoned.get(group, ()):
            sc = cl.score[i]
            if sc > hw + EPS and sc - hw > best_score - best_goal and i not in self.stuck:
                best, best_score, best_goal = i, sc, hw
        if best < 0:
            return None
        return best, best_goal

    def movable_by_size(self, s: int) -> list[int]:
        ks = self.by_size.get(s)
        if ks is None:
            cl = self.cl
            ic, in_ = cl.inv_c[s], cl.inv_n[s]
            lc, ln = cl.load_c, cl.load_n
            ks = sorted(cl.movable[s], key=lambda k: (-(lc[k] * ic + ln[k] * in_), k))
            self.by_size[s] = ks
        return ks

    def step(self, group: str, s: int, goal: float) -> bool:
        """Make the best move off source `s` towards `goal`; False (and `s` is stuck) when no
        move qualifies."""
        cl, placer = self.cl, self.placers[group]
        hw = self.hw
        mean = placer.mean()
        # How high a target may go: the goal, so it never becomes a source because of the move;
        # for load leaving a cordoned server (not part of the mean) only the high watermark.
        limit = hw if cl.cordoned[s] else self.goal(group)
        self.active.add(s)
        used_c, used_n, inv_c, inv_n = cl.used_c, cl.used_n, cl.inv_c, cl.inv_n
        load_c, load_n = cl.load_c, cl.load_n
        src = cl.score[s]
        uc, un, ic, in_ = used_c[s], used_n[s], inv_c[s], inv_n[s]
        targets: list[int] = []
        capped = cl.capped
        for _sc, r in placer.order:
            t = placer.by_rank[r]
            if t != s and not (capped and cl.full(t)):
                targets.append(t)
                if len(targets) >= CANDIDATES:
                    break
        # The gain of a move: how much of the source's load above the limit it removes, summed
        # over both dimensions (utilisation units). It needs no target, so targets are only
        # searched for a task that would beat the best gain so far.
        ex_c = max(uc * ic - goal, 0.0)
        ex_n = max(un * in_ - goal, 0.0)
        enough = ex_c + ex_n - EPS
        # At least min_gain, unless one move clears all the source's excess (smaller than that).
        best_gain = min(self.min_gain, ex_c + ex_n) - EPS
        best: tuple[int, int, float] | None = None
        ks = self.movable_by_size(s)
        for k in ks:
            lc, ln = load_c[k], load_n[k]
            a, b = lc * ic, ln * in_
            if a + b <= best_gain:
                break  # sorted by a + b, and a gain never exceeds it
            gain = (a if a < ex_c else ex_c) + (b if b < ex_n else ex_n)
            if gain <= best_gain:
                continue
            target, res = self.target_for(lc, ln, targets, limit)
            if target >= 0:
                best_gain, best = gain, (k, target, res)
                if best_gain >= enough:
                    break  # this move alone brings the source under its limit
        trigger = hw if cl.cordoned[s] else min(mean + self.thr, hw)
        if best is None and src > trigger + EPS:
            # No move gains min_gain, but the source is above the trigger: one move that takes it
            # under the trigger is worth making whatever its size (the threshold is the contract).
            need_c = uc * ic - trigger
            need_n = un * in_ - trigger
            for k in ks:
                lc, ln = load_c[k], load_n[k]
                a, b = lc * ic, ln * in_
                if a + b < need_c + need_n:
                    break  # closing needs a >= need_c and b >= need_n
                if a < need_c or b < need_n:
                    continue
                target, res = self.target_for(lc, ln, targets, limit)
                if target >= 0:
                    gain = min(a, ex_c) + min(b, ex_n)
                    if best is None or gain > best_gain:
                        best_gain, best = gain, (k, target, res)
        if best is None:
            self.stuck.add(s)
            return False
        k, t, res = best
        lc, ln = load_c[k], load_n[k]
        placer.shift(t, lc, ln)
        cl.count[t] += 1
        release(cl, self.placers, s, lc, ln)
        ks.remove(k)
        after = cl.score[s]
        sid, tid = cl.sids[s], cl.sids[t]
        if src > hw + EPS:
            why = f"{sid} at {src:.2f} is above the high watermark {hw:.2f}"
        else:
            why = (f"{sid} at {src:.2f} is {src - mean:.2f} above the group mean {mean:.2f} "
                   f"(imbalance threshold {self.thr:.2f})")
        self.moves.append(Move(
            cl.tasks[k].id, sid, tid,
            f"rebalance group {group}: {why}; moving to {tid} leaves {sid} at {after:.2f} and "
            f"{tid} at {res:.2f} (removes {max(best_gain, 0.0):.2f} of {sid}'s load above "
            f"{goal:.2f})",
        ))
        return True

    def target_for(self, lc: float, ln: float, targets: list[int], limit: float
                   ) -> tuple[int, float]:
        """The candidate target with the lowest resulting score at or under `limit` (and the high
        watermark) for a load, and that score; (-1, _) when none has room."""
        cl, hw = self.cl, self.hw
        used_c, used_n, inv_c, inv_n = cl.used_c, cl.used_n, cl.inv_c, cl.inv_n
        target, res = -1, limit + EPS
        for t in targets:
            rc = (used_c[t] + lc) * inv_c[t]
            rn = (used_n[t] + ln) * inv_n[t]
            after_t = rc if rc > rn else rn
            if after_t <= res and rc <= hw and rn <= hw and (target < 0 or after_t < res):
                target, res = t, after_t
        return target, res

    def shed_lacking(self, budget: int, hold: Collection[str], busy: set[str]) -> int:
        """Move the tasks that need a dimension their server has no capacity in (module
        docstring), within `budget`; returns the budget left."""
        cl, moves, notes = self.cl, self.moves, self.notes
        load_c, load_n = cl.load_c, cl.load_n
        for s, word in enumerate(cl.lacks):
            group = cl.sgroup[s]
            if not word or not cl.alive[s] or cl.draining[s] or group in hold:
                continue
            no_c, no_n = cl.inv_c[s] >= BIG, cl.inv_n[s] >= BIG
            ks = [k for k in cl.movable[s]
                  if (no_c and load_c[k] > 0.0) or (no_n and load_n[k] > 0.0)]
            if not ks:
                continue
            sid, placer = cl.sids[s], self.placers.get(group)
            busy.add(group)
            if placer is not None:
                ks.sort(key=lambda k: (-placer.size_of(load_c[k], load_n[k]), k))
            moved = 0
            for k in ks:
                if budget <= 0 or placer is None:
                    break
                lc, ln = load_c[k], load_n[k]
                found = placer.choose(lc, ln)
                if found is None:
                    continue
                j, t, res = found
                placer.commit(j, t, lc, ln, res)
                release(cl, self.placers, s, lc, ln)
                cl.movable[s].remove(k)
                budget -= 1
                moved += 1
                tid = cl.sids[t]
                moves.append(Move(
                    cl.tasks[k].id, sid, tid,
                    f"rebalance group {group}: {sid} has {word} and the task needs it "
                    f"({load(lc, ln)}): lowest score {res:.2f} on {tid}",
                ))
            if len(ks) > moved:
                notes.setdefault(group, []).append(
                    f"{sid} has {word}: {plural(len(ks) - moved, 'task')} that need it wait "
                    f"for room under the high watermark or for the move budget"
                )
        return budget

    def stuck_note(self, group: str, s: int) -> str:
        cl = self.cl
        cooling = cl.cooling.get(group, 0)
        note = (
            f"{cl.sids[s]} at {cl.score[s]:.2f} should shed load but no move gains at least "
            f"{self.min_gain:.2f} while keeping its target under the limit"
        )
        if cooling:
            note += f" ({plural(cooling, 'task')} of the group in cool-down)"
        return note


def rebalance(
    cl: Cluster, placers: dict[str, GroupPlacer], moves: list[Move],
    notes: dict[str, list[str]], budget: int, hold: Collection[str] = (),
) -> tuple[int, set[str]]:
    """Append rebalance moves, at most `budget` of them (module docstring); none in the groups of
    `hold` (they evacuate this round). Returns the budget left and the groups that had a source
    (moved, stuck, waiting for budget, or held)."""
    rb = _Rebalancer(cl, placers, moves, notes)
    heap: list[tuple[float, str]] = []
    busy: set[str] = set()
    budget = rb.shed_lacking(budget, hold, busy)
    for group in sorted(hold):
        if group in placers and rb.source(group) is not None:
            busy.add(group)
            notes.setdefault(group, []).append(evacuation_wait("rebalance"))

    def push(group: str) -> None:
        found = rb.source(group)
        if found is not None:
            s, goal = found
            busy.add(group)
            heapq.heappush(heap, (goal - cl.score[s], group))  # most over its goal first

    for group in sorted(placers):
        if group not in hold:
            push(group)
    stuck_in: dict[str, list[int]] = {}
    while heap and budget > 0:
        _, group = heapq.heappop(heap)
        found = rb.source(group)
        if found is None:
            continue
        s, goal = found
        if rb.step(group, s, goal):
            budget -= 1
        else:
            stuck_in.setdefault(group, []).append(s)
        push(group)
    for _, group in sorted(heap, key=lambda e: e[1]):
        notes.setdefault(group, []).append(
            f"rebalance continues next round: the move budget "
            f"({cl.cfg.move_budget} per round) is used up"
        )
    for group in sorted(stuck_in):
        for s in stuck_in[group]:
            notes.setdefault(group, []).append(rb.stuck_note(group, s))
    return budget, busy
