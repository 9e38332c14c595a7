"""Count balance at low load: a new or starved server gets tasks the load numbers cannot see.

Why. The load rule (scheduler/rebalance.py) moves tasks only when a group's max - mean score
exceeds `Config.imbalance_threshold` (0.10). A new, empty server lowers the mean by mean / n; in a
group of n old servers that trips the threshold only above a mean of threshold x (n + 1), so at
low load a new server would get nothing but new and evacuated tasks: at a utilisation of 0.03 it
took no task at all (issue 14). At low load the load numbers are small and mostly noise, and what
matters is the number of tasks a server runs: how many restart when it dies, how much of the
group's parallelism it carries, and that an added server is used at all.

The rule. It runs after the load rule, with what is left of the move budget, in each group that
the load rule left alone this round (no source) and whose mean score is under
`Config.count_balance_below`:

- a server's *share* is the group's task count (tasks counted on its schedulable servers, moves
  in flight on their targets) in proportion to the server's size (its capacity relative to the
  group's average server, the smaller of the two dimensions: the placer's size);
- *trigger*: a schedulable server with fewer than half its share is starved, unless it has no
  task slot left (`Server.max_tasks`): it then holds all it may, and never receives past its cap;
- *moves*: a starved server (the one with the fewest tasks per size first) takes one task from
  the server with the most tasks per size, as long as the source keeps at least as many tasks per
  size as the target will have; it goes on until it holds its share (hysteresis: starts under
  half, ends at the share), or nothing can move to it;
- the task is, first, one the placement rule put on the source in this very round: its placement
  is redirected to the target, which costs no handoff and no budget; else the source's smallest
  movable task (not in flight, not in its cool-down, not moved this round), as a `Move`. Either
  must fit the target at or under the load goal, mean + (1 - hysteresis) x threshold, and the
  high watermark, so the target never becomes a load source and the load rule has nothing to
  undo.

Redirecting this round's placements is what keeps placement and count balance from disagreeing:
placement spreads load, and with tasks of very different sizes that can leave a server with few
(large) tasks; were only running tasks considered, the round after a placement would move what was
just placed. Placement, then count balance, in one round, leaves nothing for the next round.

No bouncing. Every count move lowers sum(count^2 / size) over the group by at least
1/size(source) + 1/size(target), so with unchanged tasks the moves stop; a target only receives
while under its share, and a source only gives while it keeps at least the target's count per
size, so a task never has a reason to go back. The moves do not change the group's mean, so the
gate does not flap. Cool-down, budget and moves in flight apply as for every rebalance move.

Evacuation. Count balance does not react to a dead server as such: its tasks are placed by the
placement rule (least loaded first, which at low load with `Config.task_cpu_floor` means the
servers with the fewest tasks per size), which leaves no server starved unless one was already.
In a group that evacuates this round it only redirects this round's placements and moves no
running task: losing a server moves nothing else in that plan (scheduler/planner.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

from scheduler.model import Move, Placement
from scheduler.placement import GroupPlacer, PlacementResult, release
from scheduler.reasons import evacuation_wait, plural
from scheduler.utilisation import EPS, Cluster

_TRIES = 8          # smallest tasks of a source tried against a target's room
_SOURCES = 4        # sources tried for one target before it is given up for the round
_TINY = 1e-9        # a server smaller than this (relative) has no share


def spread(
    cl: Cluster, placers: dict[str, GroupPlacer], placed: PlacementResult, moves: list[Move],
    notes: dict[str, list[str]], budget: int, busy: set[str], hold: Collection[str] = (),
) -> int:
    """Count balance for the groups at low load: redirect this round's placements, and append
    at most `budget` moves; return the budget left. `busy`: groups the load rule worked on this
    round (left alone here); `hold`: groups that only redirect (they evacuate this round)."""
    gate = cl.cfg.count_balance_below
    if gate <= 0.0:
        return budget
    # A group's count balance touches only its own servers, so each _Group built here is still
    # current when the first pass reaches it.
    first = [
        g for g in (_Group(cl, placers, placers[group], placed, moves, notes)
                    for group in sorted(placers)
                    if group not in busy and placers[group].mean() < gate)
        if g.starved()
    ]
    if not first:
        return budget
    # Two passes, so that one group's new servers do not use up the budget of the others: first
    # each group gets an even slice, then what is left goes round in group order again.
    fresh = _placed_by_server(cl, placed)
    even = max(budget // len(first), 1)
    for g in first:
        slice_ = min(budget, even)
        left = g.run(slice_, fresh, final=False, redirect_only=g.placer.group in hold)
        budget -= slice_ - left
    fresh = _placed_by_server(cl, placed)
    for group in (g.placer.group for g in first):
        g = _Group(cl, placers, placers[group], placed, moves, notes)
        if g.starved():
            budget = g.run(budget, fresh, final=True, redirect_only=group in hold)
    return budget


def _placed_by_server(cl: Cluster, placed: PlacementResult) -> dict[int, list[int]]:
    """Per server: the positions (in `placed.placements`) of the placement rule's placements
    onto it this round."""
    out: dict[int, list[int]] = {}
    sindex = cl.sindex
    for n in range(placed.queued_from, len(placed.placements)):
        out.setdefault(sindex[placed.placements[n].server], []).append(n)
    return out


class _Group:
    """One group's count balance for one round."""

    def __init__(self, cl: Cluster, placers: dict[str, GroupPlacer], placer: GroupPlacer,
                 placed: PlacementResult, moves: list[Move], notes: dict[str, list[str]]) -> None:
        self.cl, self.placers, self.placer, self.placed = cl, placers, placer, placed
        self.moves, self.notes = moves, notes
        cfg = cl.cfg
        self.mean = placer.mean()
        settle = cfg.imbalance_threshold * (1.0 - min(max(cfg.hysteresis, 0.0), 1.0))
        self.goal = min(self.mean + settle, cfg.high_watermark)
        self.hw = cfg.high_watermark
        imc, imn = placer.inv_mean_c, placer.inv_mean_n
        self.size = {i: min(cl.cap_c[i] * imc, cl.cap_n[i] * imn) for i in placer.by_rank}
        members = [i for i in placer.by_rank if self.size[i] > _TINY]
        self.members = members
        self.total = sum(cl.count[i] for i in members)
        weight = sum(self.size[i] for i in members)
        self.share = {i: self.total * self.size[i] / weight for i in members} if members else {}
        self.tasks: dict[int, list[int]] = {}      # server -> movable tasks, smallest first
        self.fresh: dict[int, list[int]] = {}      # server -> placements this round, smallest
        self.k_of: dict[int, int] = {}             # placement position -> task position

    def per_size(self, i: int) -> float:
        return self.cl.count[i] / self.size[i]

    def starved(self) -> list[int]:
        """Servers under half their share, and with a task slot left (a full one is not
        starved: it holds what its memory budget allows)."""
        cl = self.cl
        count, share = cl.count, self.share
        if self.total == 0:
            return []
        return [i for i in self.members if count[i] < share[i] / 2.0 - EPS
                and not (cl.capped and cl.full(i))]

    def smallest_first(self, s: int) -> list[int]:
        ks = self.tasks.get(s)
        if ks is None:
            cl = self.cl
            ic, in_ = cl.inv_c[s], cl.inv_n[s]
            lc, ln = cl.load_c, cl.load_n
            ks = self.tasks[s] = sorted(cl.movable[s], key=lambda k: (lc[k] * ic + ln[k] * in_, k))
        return ks

    def run(self, budget: int, fresh: dict[int, list[int]], final: bool,
            redirect_only: bool = False) -> int:
        """Count moves (at most `budget`) and redirects for this group; notes when `final`.
        `redirect_only`: no moves, only redirects of this round's placements."""
        cl, rank = self.cl, self.placer.rank
        count, share, capped = cl.count, self.share, cl.capped
        starved = self.starved()
        ids = {t.id: k for k, t in enumerate(cl.tasks)} if any(
            fresh.get(i) for i in self.members) else {}
        lc, ln = cl.load_c, cl.load_n
        for s in self.members:
            ns = fresh.get(s)
            if ns:
                ic, in_ = cl.inv_c[s], cl.inv_n[s]
                for n in ns:
                    self.k_of[n] = ids[self.placed.placements[n].task]
                k_of = self.k_of
                self.fresh[s] = sorted(
                    ns, key=lambda n: (lc[k_of[n]] * ic + ln[k_of[n]] * in_, k_of[n]))
        targets = [(self.per_size(i), rank[i], i) for i in starved]
        heapq.heapify(targets)
        sources = [(-self.per_size(i), rank[i], i) for i in self.members
                   if (cl.movable[i] and not redirect_only) or self.fresh.get(i)]
        heapq.heapify(sources)
        received: dict[int, int] = {}
        blocked: set[int] = set()   # starved servers no task fits on under the goal
        while targets and (budget > 0 or redirect_only):
            _, _, t = heapq.heappop(targets)
            if count[t] >= share[t] - EPS or (capped and cl.full(t)):
                continue
            tried: list[tuple[float, int, int]] = []
            found: tuple[int, int, int, float] | None = None
            need = (count[t] + 1) / self.size[t] - EPS
            while sources and len(tried) < _SOURCES:
                entry = heapq.heappop(sources)
                s = entry[2]
                if s == t:
                    tried.append(entry)
                    continue
                if (count[s] - 1) / self.size[s] < need:
                    tried.append(entry)
                    break   # the most loaded (by count per size) left cannot give: none can
                tried.append(entry)
                k, n, res = self.fit(s, t, budget > 0 and not redirect_only)
                if k >= 0:
                    found = (s, k, n, res)
                    break
                blocked.add(t)
            for entry in tried:
                s = entry[2]
                if found is None or s != found[0]:
                    heapq.heappush(sources, entry)
            if found is None:
                continue
            s, k, n, res = found
            if n >= 0:
                self.redirect(s, t, k, n, res)
            else:
                self.move(s, t, k, res)
                budget -= 1
            received[t] = received.get(t, 0) + 1
            blocked.discard(t)
            if self.tasks.get(s) or self.fresh.get(s):
                heapq.heappush(sources, (-self.per_size(s), rank[s], s))
            if count[t] < share[t] - EPS and not (capped and cl.full(t)):
                heapq.heappush(targets, (self.per_size(t), rank[t], t))
        if final and redirect_only:
            if any(count[t] < share[t] / 2.0 - EPS for t in starved):
                self.notes.setdefault(self.placer.group, []).append(
                    evacuation_wait("count balance"))
        elif final:
            waiting = budget <= 0 and any(count[t] < share[t] - EPS for _, _, t in targets)
            self.note(starved, received, blocked, waiting)
        return budget

    def fit(self, s: int, t: int, may_move: bool) -> tuple[int, int, float]:
        """A task of `s` that fits on `t` at or under the goal (and the high watermark): the
        smallest placed on `s` this round (with its placement's position), else, if `may_move`,
        the smallest movable one (position -1); and `t`'s resulting score. (-1, -1, _) when none
        of the few smallest does."""
        cl, goal, hw = self.cl, self.goal, self.hw
        uc, un, ic, in_ = cl.used_c[t], cl.used_n[t], cl.inv_c[t], cl.inv_n[t]
        candidates = [(self.k_of[n], n) for n in self.fresh.get(s, ())[:_TRIES]]
        if may_move:
            candidates += [(k, -1) for k in self.smallest_first(s)[:_TRIES]]
        for k, n in candidates:
            rc = (uc + cl.load_c[k]) * ic
            rn = (un + cl.load_n[k]) * in_
            res = rc if rc > rn else rn
            if res <= goal + EPS and rc <= hw and rn <= hw:
                return k, n, res
        return -1, -1, 0.0

    def why(self, t: int, ct: int) -> str:
        cl = self.cl
        return (f"count balance group {self.placer.group} (low load: mean {self.mean:.2f} under "
                f"{cl.cfg.count_balance_below:.2f}): {cl.sids[t]} has {plural(ct, 'task')}, its "
                f"share of the group's {self.total} is {self.share[t]:.1f}")

    def redirect(self, s: int, t: int, k: int, n: int, res: float) -> None:
        """Send a task placed on `s` this round to `t` instead (no handoff: it runs nowhere yet)."""
        cl, placer = self.cl, self.placer
        lc, ln = cl.load_c[k], cl.load_n[k]
        ct = cl.count[t]
        placer.shift(t, lc, ln)
        cl.count[t] += 1
        release(cl, self.placers, s, lc, ln, running=False)   # placed this round: never ran
        self.fresh[s].remove(n)
        old = self.placed.placements[n]
        head = old.reason.split(": lowest score", 1)[0]
        self.placed.placements[n] = Placement(
            old.task, cl.sids[t],
            f"{head}: {self.why(t, ct)}; placed there instead of {cl.sids[s]} (score {res:.2f})",
        )

    def move(self, s: int, t: int, k: int, res: float) -> None:
        cl, placer = self.cl, self.placer
        lc, ln = cl.load_c[k], cl.load_n[k]
        cs, ct = cl.count[s], cl.count[t]
        placer.shift(t, lc, ln)
        cl.count[t] += 1
        release(cl, self.placers, s, lc, ln)
        self.tasks[s].remove(k)
        cl.movable[s].remove(k)     # a task moves at most once per round (the second pass too)
        sid, tid = cl.sids[s], cl.sids[t]
        self.moves.append(Move(
            cl.tasks[k].id, sid, tid,
            f"{self.why(t, ct)}; moving one from {sid}, which has {cs}, leaves {sid} at "
            f"{cl.score[s]:.2f} and {tid} at {res:.2f}",
        ))

    def note(self, starved: list[int], received: dict[int, int], blocked: set[int],
             waiting: bool) -> None:
        cl, group = self.cl, self.placer.group
        out = self.notes.setdefault(group, [])
        cooling = cl.cooling.get(group, 0)
        for t in starved:
            if received.get(t):
                continue
            head = (f"{cl.sids[t]} has {plural(cl.count[t], 'task')}, under half its share "
                    f"{self.share[t]:.1f} of the group's {self.total} (low load)")
            if t in blocked:
                out.append(f"{head}, but none fits on it under {self.goal:.2f}")
            elif cooling:
                out.append(f"{head}, but the tasks that could move are in cool-down "
                           f"({plural(cooling, 'task')} of the group)")
        if waiting:
            out.append(f"count balance continues next round: the move budget "
                       f"({cl.cfg.move_budget} per round) is used up")
