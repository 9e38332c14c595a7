"""Placement: each unplaced task goes to the eligible server with the lowest resulting score.

Eligible means: same isolation group, alive, not cordoned, not draining, and the task fits under
the high watermark in *both* dimensions. The score of a server is its dominant utilisation
max(cpu used / cpu capacity, net used / net capacity), so heterogeneous servers fill in proportion
to their capacity and a network-heavy task avoids a server whose network is full even if its CPU
is idle.

`GroupPlacer` keeps one group's schedulable servers in a sorted list of (score, rank) pairs; the
rank orders equal scores by size (largest first) then id, so ties are deterministic and big tasks
land on big servers when everything is empty. Tasks are placed heaviest first (size in units of the
group's average server, ties by task id), so the big ones find room while there is room.

Finding a server is a branch-and-bound walk from the least loaded end. A server's resulting score
is never below its current score, so the walk can stop once the next current score cannot beat the
best resulting score found by more than `TOLERANCE`; after `CANDIDATES` servers it accepts
`WIDE` instead, and after `MOST` it stops as soon as something fits. A small task (one that moves a
score by less than `TOLERANCE`) costs one evaluation; a medium one a handful.

A big task, one that lifts even the best server found by more than `WIDE` above the least loaded
one, mostly wants capacity: a second walk goes through the servers by capacity in the task's
dominant dimension, largest first, and stops when load / capacity (a lower bound of the resulting
score) cannot beat the best any more, or after `BIG_WALK` servers. That finds the large servers
that the least-loaded order can miss when backgrounds differ. A walk that stops on its bound is
exact within the tolerance then in force; one that stops on its count is an approximation with a
bounded cost.

When nothing among the servers walked fits, the walk goes on to the end of the list. Two bounds
keep that rare, both upper bounds of the room under the high watermark that stay true while
placements only add load (a release, which frees room, refreshes them): the most free capacity in
each dimension (a task larger than it fails in O(1)), and, once a walk has failed in the group,
the *headroom frontier*: every server's free room as a (cpu, net) point, sorted by free CPU, with
the running maximum of free network. A task fits somewhere only if some server has room in both
dimensions at once, i.e. the most free network among the servers with at least its CPU free is at
least its network: one binary search. A failed walk rebuilds the frontier exactly
(O(servers log servers)); until the next failure, every task that fits nowhere costs O(log
servers) instead of a walk of the whole group (issue 16: a full group with 36,000 pending tasks
cost 2.5 s a round instead of 0.08 s). A queue longer than the group whose largest demand (the
most CPU and the most network of any of its tasks) fits nowhere is split first: what fits nowhere
is pending at once, in queue order, and only the rest is sorted and placed; the placements are
the same as without the split, since room only shrinks during placement. Per task the cost is
O(CANDIDATES + log servers) in the common case, and never more than O(servers log servers).

Task caps (`Server.max_tasks`, scheduler/utilisation.py). A server with no task slot left is
skipped by every walk and counts no room in the bounds, so a group whose servers are all full
fails in O(1) like a group without room; its pending tasks say so (`every schedulable server of
group g is at its task cap (8)`), and count in the advice as waiting for a task slot. Without
caps nothing here changes: the checks are behind `Cluster.capped`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from scheduler.estimates import MEASURED, SOURCE_NAMES
from scheduler.model import Pending, Placement
from scheduler.reasons import load, plural, rate, task_cap_full
from scheduler.utilisation import BIG, EPS, Cluster

CANDIDATES = 4      # servers evaluated per task before the wider tolerance applies
TOLERANCE = 0.01    # a server is skipped when it cannot beat the best by more than this ...
WIDE = 0.05         # ... or by more than this once CANDIDATES servers were evaluated
MOST = 64           # and the walk stops after this many once something fits
BIG_WALK = 64       # servers a big task's capacity walk evaluates at most
_SLACK = 1e-9       # relative to capacity: a bound rejects only what the exact test rejects too
_INF = float("inf")


class GroupPlacer:
    """The schedulable servers of one group, least loaded first (see the module docstring)."""

    def __init__(self, cl: Cluster, group: str, members: list[int]) -> None:
        self.cl = cl
        self.group = group
        self.hw = cl.cfg.high_watermark
        n = len(members)
        self.mean_cap_c = sum(cl.cap_c[i] for i in members) / n
        self.mean_cap_n = sum(cl.cap_n[i] for i in members) / n
        inv_mc = 1.0 / self.mean_cap_c if self.mean_cap_c > 0 else BIG
        inv_mn = 1.0 / self.mean_cap_n if self.mean_cap_n > 0 else BIG
        self.inv_mean_c, self.inv_mean_n = inv_mc, inv_mn

        def size(i: int) -> float:
            return min(cl.cap_c[i] * inv_mc, cl.cap_n[i] * inv_mn)

        self.by_rank = sorted(members, key=lambda i: (-size(i), cl.sids[i]))
        self.rank = {i: r for r, i in enumerate(self.by_rank)}
        self.by_cpu = sorted(members, key=lambda i: (-cl.cap_c[i], cl.sids[i]))
        self.by_net = sorted(members, key=lambda i: (-cl.cap_n[i], cl.sids[i]))
        score = cl.score
        self.order: list[tuple[float, int]] = sorted(
            (score[i], r) for r, i in enumerate(self.by_rank)
        )
        self.total = sum(score[i] for i in self.by_rank)
        self.free_c, self.free_n = self._exact_free()
        self.max_cap_c = cl.cap_c[self.by_cpu[0]]
        self.max_cap_n = cl.cap_n[self.by_net[0]]
        # The headroom frontier (module docstring): -free cpu ascending, and the most free net
        # among the servers up to there; empty until a walk fails (and after a release).
        self.front_c: list[float] = []
        self.front_n: list[float] = []
        # The group's part of a pending reason, for the bounds it was made with (placement).
        self.pending_texts: tuple[tuple[float, float, int], str, str, bool] | None = None
        # Task caps: the members' caps in words ("8", "4 to 8"), and how many members had no
        # slot left when the bounds were last made exact (-1: unknown since a release).
        caps = sorted({cl.cap[i] for i in members}) if cl.capped else []
        self.caps_text = (f"{caps[0]}" if len(caps) == 1
                          else f"{caps[0]} to {caps[-1]}" if caps else "")
        self.at_cap = self._at_cap()

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.order)

    def mean(self) -> float:
        return self.total / len(self.order)

    def size_of(self, lc: float, ln: float) -> float:
        """A task's load in units of this group's average server (for heaviest-first order)."""
        a = lc * self.inv_mean_c
        b = ln * self.inv_mean_n
        return a if a > b else b

    def _open(self) -> list[int]:
        """The members with a task slot left (all of them when no server has a cap)."""
        cl = self.cl
        return [i for i in self.by_rank if not cl.full(i)] if cl.capped else self.by_rank

    def _at_cap(self) -> int:
        cl = self.cl
        return sum(1 for i in self.by_rank if cl.full(i)) if cl.capped else 0

    def _exact_free(self) -> tuple[float, float]:
        """The most free room in each dimension, with the slack that keeps the bound safe;
        a server without a task slot has none."""
        cl, hw = self.cl, self.hw
        cap_c, cap_n, used_c, used_n = cl.cap_c, cl.cap_n, cl.used_c, cl.used_n
        members = self._open()
        fc = max(((hw + _SLACK) * cap_c[i] - used_c[i] for i in members), default=-_INF)
        fn = max(((hw + _SLACK) * cap_n[i] - used_n[i] for i in members), default=-_INF)
        return fc + EPS, fn + EPS

    def _build_front(self) -> None:
        """The headroom frontier, exact for the current loads (module docstring)."""
        cl, hw = self.cl, self.hw
        cap_c, cap_n, used_c, used_n = cl.cap_c, cl.cap_n, cl.used_c, cl.used_n
        points = sorted(
            (used_c[i] - (hw + _SLACK) * cap_c[i] - EPS, (hw + _SLACK) * cap_n[i] - used_n[i] + EPS)
            for i in self._open()
        )
        front_c, front_n = self.front_c, self.front_n
        front_c.clear()
        front_n.clear()
        most = -_INF
        for neg_c, free_n in points:
            if free_n > most:
                most = free_n
            front_c.append(neg_c)
            front_n.append(most)

    def drop_front(self) -> None:
        """Forget the frontier (room was freed, or it is not worth consulting per task)."""
        self.front_c.clear()
        self.front_n.clear()

    def may_fit(self, lc: float, ln: float) -> bool:
        """False only when no server of the group has room for the load in both dimensions
        (bounds that stay true while placements add load; module docstring)."""
        if lc > self.free_c or ln > self.free_n:
            return False
        if not self.front_c:
            return True
        n = bisect_right(self.front_c, -lc)  # servers with at least lc cores free
        return n > 0 and self.front_n[n - 1] >= ln

    def choose(self, lc: float, ln: float) -> tuple[int, int, float] | None:
        """(position in `order`, server, resulting score) of the best server for a load, or None
        when no schedulable server of the group can take it under the high watermark."""
        if not self.may_fit(lc, ln):
            return None
        cl, hw = self.cl, self.hw
        used_c, used_n, inv_c, inv_n = cl.used_c, cl.used_n, cl.inv_c, cl.inv_n
        by_rank, capped = self.by_rank, cl.capped
        best, bj, bi = _INF, -1, -1
        for j, (sc, r) in enumerate(self.order):
            if sc >= best - (TOLERANCE if j < CANDIDATES else WIDE) or (j >= MOST and bj >= 0):
                break
            i = by_rank[r]
            if capped and cl.full(i):
                continue
            rc = (used_c[i] + lc) * inv_c[i]
            rn = (used_n[i] + ln) * inv_n[i]
            if rc <= hw and rn <= hw:
                res = rc if rc > rn else rn
                if res < best:
                    best, bj, bi = res, j, i
        if bj < 0:
            self.note_failure()
            return None
        if best - self.order[0][0] > WIDE:
            better, bi = self.big_walk(lc, ln, best, bi)
            if better < best:
                best, bj = better, bisect_left(self.order, (cl.score[bi], self.rank[bi]))
        return bj, bi, best

    def big_walk(self, lc: float, ln: float, best: float, bi: int) -> tuple[float, int]:
        """A big task (it lifts even the best server found by more than WIDE over the least
        loaded one) mostly wants capacity: walk the servers by capacity in the task's dominant
        dimension, largest first. Its resulting score on a server is at least load / capacity
        there, which only grows along the walk, so the walk stops once that bound cannot beat
        the best by TOLERANCE (or after BIG_WALK servers)."""
        cl, hw = self.cl, self.hw
        used_c, used_n, inv_c, inv_n = cl.used_c, cl.used_n, cl.inv_c, cl.inv_n
        if lc * self.inv_mean_c >= ln * self.inv_mean_n:
            walk, inv_d, load_d = self.by_cpu, inv_c, lc
        else:
            walk, inv_d, load_d = self.by_net, inv_n, ln
        capped = cl.capped
        for n, i in enumerate(walk):
            if load_d * inv_d[i] >= best - TOLERANCE or n >= BIG_WALK:
                break
            if capped and cl.full(i):
                continue
            rc = (used_c[i] + lc) * inv_c[i]
            rn = (used_n[i] + ln) * inv_n[i]
            if rc <= hw and rn <= hw:
                res = rc if rc > rn else rn
                if res < best:
                    best, bi = res, i
        return best, bi

    def note_failure(self) -> None:
        """Nothing fits anywhere: make the bounds exact again (loads only grew since)."""
        self.free_c, self.free_n = self._exact_free()
        self._build_front()
        self.at_cap = self._at_cap()

    # -- writing -------------------------------------------------------------------------------

    def commit(self, j: int, i: int, lc: float, ln: float, new_score: float) -> None:
        """Add a load to server `i`, found at position `j` by `choose`."""
        cl, order = self.cl, self.order
        old, r = order[j]
        del order[j]
        cl.used_c[i] += lc
        cl.used_n[i] += ln
        cl.count[i] += 1
        cl.score[i] = new_score
        insort(order, (new_score, r))
        self.total += new_score - old

    def shift(self, i: int, dc: float, dn: float) -> None:
        """Change the load of member `i` by (dc, dn), either sign."""
        cl, order = self.cl, self.order
        r = self.rank[i]
        old = cl.score[i]
        j = bisect_left(order, (old, r))
        del order[j]
        cl.used_c[i] += dc
        cl.used_n[i] += dn
        new = cl.score[i] = cl.score_of(i)
        insort(order, (new, r))
        self.total += new - old
        if dc < 0.0 or dn < 0.0:  # room freed: the frontier is no longer an upper bound
            self.drop_front()
            self.at_cap = -1
            room = self.hw + _SLACK
            self.free_c = max(self.free_c, room * cl.cap_c[i] - cl.used_c[i] + EPS)
            self.free_n = max(self.free_n, room * cl.cap_n[i] - cl.used_n[i] + EPS)


def build_placers(cl: Cluster) -> dict[str, GroupPlacer]:
    placers: dict[str, GroupPlacer] = {}
    for group, members in cl.members.items():
        sched = [i for i in members if cl.sched[i]]
        if sched:
            placers[group] = GroupPlacer(cl, group, sched)
    return placers


def no_server_reason(cl: Cluster, group: str) -> str:
    """Why a group cannot take any task at all (no schedulable server)."""
    members = cl.members.get(group, [])
    if not members:
        return f"no server in group {group}"
    alive = [i for i in members if cl.alive[i]]
    if not alive:
        return f"no live server in group {group} ({len(members)} dead)"
    draining = sum(1 for i in alive if cl.draining[i])
    cordoned = sum(1 for i in alive if cl.cordoned[i])
    full = len(alive) - draining - cordoned
    return (
        f"no schedulable server in group {group}: {len(alive)} alive, "
        f"{cordoned} cordoned, {draining} draining"
        + (f", {full} full for lack of capacity (a dimension with none)" if full else "")
    )


class PlacementResult:
    def __init__(self) -> None:
        self.placements: list[Placement] = []
        # placements[queued_from:] were chosen by the placement rule (not reserved targets).
        self.queued_from = 0
        self.pending: list[Pending] = []
        # group -> [tasks pending, cpu, net, of which "no room" (capacity), of which "no task
        # slot" (every server at its cap); the rest "no server"]
        self.pending_by_group: dict[str, list[float]] = {}

    def add_pending(self, group: str, task: str, reason: str, lc: float, ln: float,
                    for_room: bool, for_slot: bool = False) -> None:
        self.pending.append(Pending(task, reason))
        acc = self.pending_by_group.get(group)
        if acc is None:  # not setdefault: a backlog adds thousands, so no list per call
            acc = self.pending_by_group[group] = [0, 0.0, 0.0, 0, 0]
        acc[0] += 1
        acc[1] += lc
        acc[2] += ln
        if for_slot:
            acc[4] += 1
        elif for_room:
            acc[3] += 1


def _reserved_problem(cl: Cluster, i: int, group: str, hw: float) -> str | None:
    """Why a reserved target can no longer take its task (its load is already counted on it)."""
    if not cl.alive[i]:
        return f"{cl.sids[i]} is dead"
    if cl.sgroup[i] != group:
        return f"{cl.sids[i]} is in group {cl.sgroup[i]}"
    if cl.lacks[i] and not (cl.draining[i] or cl.cordoned[i]):
        return f"{cl.sids[i]} has {cl.lacks[i]}"
    if not cl.sched[i]:
        return f"{cl.sids[i]} is {cl.state_word(i)}"
    if cl.used_c[i] * cl.inv_c[i] > hw or cl.used_n[i] * cl.inv_n[i] > hw:
        return f"{cl.sids[i]} would be above the high watermark {hw:.2f}"
    if cl.count[i] + cl.leaving[i] > cl.cap[i]:  # the task is counted there already
        return f"{cl.sids[i]} is at its task cap ({cl.cap[i]})"
    return None


def _prefix(origin: str) -> str:
    """What happened to a pending task before it became pending ("" for a plain new task)."""
    return "" if origin == "placed" else f"{origin}; pending: "


def place_unplaced(cl: Cluster, placers: dict[str, GroupPlacer]) -> PlacementResult:
    """Placements and pending entries for every unplaced task (module docstring)."""
    out = PlacementResult()
    tasks, load_c, load_n = cl.tasks, cl.load_c, cl.load_n
    hw = cl.cfg.high_watermark
    queues = {g: list(q) for g, q in cl.unplaced.items()}
    origin = cl.origin

    # 1. Moves in flight whose task has drained: their target already carries the load.
    for u in cl.landing:
        t = tasks[u.k]
        target = u.flight.target
        problem = (
            f"{target} is dead or unknown" if u.reserved < 0
            else _reserved_problem(cl, u.reserved, t.group, hw)
        )
        if problem is None:
            out.placements.append(Placement(
                t.id, target,
                f"{u.origin}: reserved target {target} (score {cl.score[u.reserved]:.2f}) "
                f"in group {t.group}",
            ))
            continue
        if u.reserved >= 0:  # the task never ran there
            release(cl, placers, u.reserved, load_c[u.k], load_n[u.k], running=False)
            u.reserved = -1
        origin[u.k] = f"{u.origin} abandoned ({problem})"
        queues.setdefault(t.group, []).append(u.k)

    # 2. Everything else, per group, heaviest first (ties by task id).
    out.queued_from = len(out.placements)
    for group in sorted(queues):
        queue = queues[group]
        placer = placers.get(group)
        if placer is None:
            reason = no_server_reason(cl, group)
            for k in queue:
                out.add_pending(group, tasks[k].id, _prefix(origin.get(k, "placed")) + reason,
                                load_c[k], load_n[k], False)
            continue
        _place_group(cl, placer, queue, out)
    return out


def _place_group(cl: Cluster, placer: GroupPlacer, queue: list[int],
                 out: PlacementResult) -> None:
    """`GroupPlacer.choose` + `commit` for a whole queue, inlined: this loop runs once per task."""
    tasks, load_c, load_n, est, origin = cl.tasks, cl.load_c, cl.load_n, cl.est, cl.origin
    used_c, used_n, inv_c, inv_n, score, sids, count = (
        cl.used_c, cl.used_n, cl.inv_c, cl.inv_n, cl.score, cl.sids, cl.count)
    capped, full = cl.capped, cl.full
    group, hw = placer.group, placer.hw
    imc, imn = placer.inv_mean_c, placer.inv_mean_n
    plain = "placed"
    if len(queue) > len(placer):
        placer.note_failure()  # exact bounds and frontier for the test of the largest demand
        if placer.may_fit(max(load_c[k] for k in queue), max(load_n[k] for k in queue)):
            placer.drop_front()  # all may fit: no frontier to consult per task until a walk fails
        else:
            # Perhaps a backlog: the tasks that fit nowhere now fit nowhere later in the round
            # either (placements only add load), so they are pending before the rest is sorted.
            may_fit, fits = placer.may_fit, []
            for k in queue:
                if may_fit(load_c[k], load_n[k]):
                    fits.append(k)
                else:
                    _pending_for_room(cl, placer, k, origin.get(k, plain), out)
            queue = fits
    keys = [-max(load_c[k] * imc, load_n[k] * imn) for k in queue]
    ordered = [k for _, k in sorted(zip(keys, queue, strict=True))]
    order, by_rank = placer.order, placer.by_rank
    total = placer.total
    append = out.placements.append
    tol, wide, cands, most, inf = TOLERANCE, WIDE, CANDIDATES, MOST, _INF
    front = placer.front_c  # filled in place by note_failure
    fc_lim, fn_lim = placer.free_c, placer.free_n
    why = origin.get if origin else None
    for k in ordered:
        lc = load_c[k]
        ln = load_n[k]
        if lc > fc_lim or ln > fn_lim or (front and not placer.may_fit(lc, ln)):
            _pending_for_room(cl, placer, k, origin.get(k, plain), out)
            continue
        best, bj, bi, br = inf, -1, -1, -1
        for j, (sc, r) in enumerate(order):
            if sc >= best - (tol if j < cands else wide) or (j >= most and bj >= 0):
                break
            i = by_rank[r]
            if capped and full(i):
                continue
            rc = (used_c[i] + lc) * inv_c[i]
            rn = (used_n[i] + ln) * inv_n[i]
            if rc <= hw and rn <= hw:
                res = rc if rc > rn else rn
                if res < best:
                    best, bj, bi, br = res, j, i, r
        if bj < 0:
            placer.note_failure()
            fc_lim, fn_lim = placer.free_c, placer.free_n
            _pending_for_room(cl, placer, k, origin.get(k, plain), out)
            continue
        if best - order[0][0] > wide:
            better, bi = placer.big_walk(lc, ln, best, bi)
            if better < best:
                best, br = better, placer.rank[bi]
                bj = bisect_left(order, (score[bi], br))
        total += best - order[bj][0]
        del order[bj]
        used_c[bi] += lc
        used_n[bi] += ln
        count[bi] += 1
        score[bi] = best
        insort(order, (best, br))
        sid = sids[bi]
        reason = (f"{why(k, plain) if why else plain}: lowest score {best:.2f} on {sid} "
                  f"in group {group}")
        e = est[k]
        if e != MEASURED:
            reason += f" (load from {SOURCE_NAMES[e]})"
        append(Placement(tasks[k].id, sid, reason))
    placer.total = total


def _pending_for_room(cl: Cluster, placer: GroupPlacer, k: int, origin: str,
                      out: PlacementResult) -> None:
    """A `Pending` for lack of room. A backlog makes this run for every task that waits, every
    round, so the parts that are the group's (not the task's) are formatted once per state of
    the bounds they print."""
    lc, ln = cl.load_c[k], cl.load_n[k]
    if placer.at_cap < 0:
        placer.at_cap = placer._at_cap()
    at_cap = placer.at_cap
    key = (placer.free_c, placer.free_n, at_cap)
    texts = placer.pending_texts
    if texts is None or texts[0] != key:
        if at_cap >= len(placer):
            texts = (key, task_cap_full(placer.group, placer.caps_text), "", True)
        else:
            fc, fn = max(placer.free_c, 0.0), max(placer.free_n, 0.0)
            head = (f"no room under the high watermark {placer.hw:.2f} in group {placer.group}: "
                    f"needs ")
            slot = " with a free task slot" if at_cap else ""
            full = (f"; {plural(at_cap, 'server')} of the group at its task cap" if at_cap
                    else "")
            tail = (f"; the most free on one server{slot} is at most cpu {fc:.2f}, "
                    f"net {rate(fn)}{full}; the group's advice asks for more servers")
            texts = (key, head, tail, False)
        placer.pending_texts = texts
    _, head, tail, for_slot = texts
    if for_slot:
        out.add_pending(placer.group, cl.tasks[k].id, f"{_prefix(origin)}{head}", lc, ln,
                        False, True)
        return
    if placer.max_cap_c <= 0.0 or placer.max_cap_n <= 0.0:
        missing = [word for need, cap, word in ((lc, placer.max_cap_c, "CPU"),
                                                (ln, placer.max_cap_n, "network"))
                   if need > 0.0 and cap <= 0.0]
        if missing:
            tail = (f"; its schedulable servers have no {' or '.join(missing)} capacity; "
                    f"the group's advice asks for more servers")
    out.add_pending(placer.group, cl.tasks[k].id, f"{_prefix(origin)}{head}{load(lc, ln)}{tail}",
                    lc, ln, True)


def release(cl: Cluster, placers: dict[str, GroupPlacer], i: int, lc: float, ln: float,
            running: bool = True) -> None:
    """Take a load off server `i` (a task leaves it), keeping its group's placer in step.
    `running`: the task runs there and keeps its task slot until it has drained (a move's
    source); False for a placement or reservation that never ran there."""
    cl.count[i] -= 1
    if running:
        cl.leaving[i] += 1
    p = placers.get(cl.sgroup[i])
    if p is not None and i in p.rank:
        p.shift(i, -lc, -ln)
    else:
        cl.used_c[i] -= lc
        cl.used_n[i] -= ln
        cl.score[i] = cl.score_of(i)
