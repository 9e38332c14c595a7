"""The planner's working copy of a `ClusterView`, and the pure `utilisation(view)` helper.

`Cluster` is built once per `plan()` call. It canonicalises the input (servers and tasks sorted by
id, first of any duplicate id kept, so the plan does not depend on input order), estimates every
task's load, and sorts each task into exactly one bucket:

- stopped (job paused or deleted) and still assigned: to be revoked; its load counts nowhere;
- unplaced (no server, or a dead or unknown server): to be placed; an in-flight move's reserved
  target is remembered and the load already counts on it while that target is alive;
- in flight (assigned to the move's source or target): its load counts on the target; never moved;
- misplaced (assigned to a live server of another group): handed off to its own group;
- on a draining server: handed off by the drain;
- running elsewhere: movable by the rebalancer unless it is in its cool-down.

A server with no capacity in a dimension (CPU or network) that carries load in it (background,
a task, a move in flight towards it) is *without capacity*: it is full, so it takes nothing new
and is not schedulable for this round, and it stays out of its group's mean and imbalance (its
utilisation there is unbounded, and one such server would otherwise make every other server look
idle and stop rebalancing for the whole group). The rebalancer moves its tasks that need the
missing dimension elsewhere (scheduler/rebalance.py); reasons say "no network capacity", never
a number. A server with no capacity in a dimension and no load in it takes tasks that need none
(and only those: every positive load is at least `estimates.RESOLUTION`).

A server with a task cap (`Server.max_tasks`) has that many *slots*: a task takes one on the
server its load counts on (running there, or in flight towards it) and, while it still runs on a
server it is leaving (a move's first step: in flight from there, or moved off this round), one
there too, since it holds its memory until it has drained. `full(i)`: no slot left. Nothing is
placed or moved onto a full server (scheduler/placement.py, rebalance.py, spread.py).

Server state is kept in parallel lists indexed by server position (id order): capacity,
1/capacity, used load (background plus counted tasks) and the dominant score. Parallel lists of
floats keep the hot loops free of attribute look-ups and object allocation.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import TypeVar

from scheduler.estimates import clean, clean_load, estimate_loads
from scheduler.model import ClusterView, MoveInFlight, Server, Task

BIG = 1e18          # 1/capacity of a zero-capacity dimension: any load there is "infinitely" full
# (every positive load is at least estimates.RESOLUTION, so at least 1e6 times the capacity)
EPS = 1e-9          # float slack for comparisons between sums built in different orders
_TINY_CAPACITY = 1e-12
NO_CAP = 1 << 62    # the task cap of a server without one

_T = TypeVar("_T", Server, Task)
_BY_ID = attrgetter("id")


def _unique(items: Iterable[_T]) -> list[_T]:
    """Sorted by id; of several items with one id, the first in that order is kept."""
    ordered = sorted(items, key=_BY_ID)  # stable: "first" is the first in input order
    ids = [item.id for item in ordered]
    if len(set(ids)) == len(ids):
        return ordered
    out: list[_T] = []
    last: str | None = None
    for item in ordered:
        if item.id != last:
            out.append(item)
            last = item.id
    return out


def _capacity(x: float) -> float:
    """A clean capacity; one too small to carry anything is none (0)."""
    cap = clean(x)
    return cap if cap > _TINY_CAPACITY else 0.0


def _inverse(capacity: float) -> float:
    return 1.0 / capacity if capacity > _TINY_CAPACITY else BIG


def _latest_flights(flights: Iterable[MoveInFlight]) -> dict[str, MoveInFlight]:
    """One in-flight entry per task: the latest started (ties: the largest target, then source)."""
    latest: dict[str, MoveInFlight] = {}
    for f in flights:
        old = latest.get(f.task)
        if old is None or (f.started_at, f.target, f.source or "") > (
            old.started_at, old.target, old.source or ""
        ):
            latest[f.task] = f
    return latest


class Landing:
    """A task that completes an in-flight move: it needs a server this round, and has a
    reserved one (or had)."""

    __slots__ = ("flight", "k", "origin", "reserved")

    def __init__(self, k: int, origin: str, reserved: int, flight: MoveInFlight) -> None:
        self.k = k                  # task position
        self.origin = origin        # "move from s1 to s3"
        self.reserved = reserved    # server position whose load already includes it, or -1
        self.flight = flight        # the in-flight move it completes


class Cluster:
    """Mutable working state for one planning round (see the module docstring)."""

    def __init__(self, view: ClusterView) -> None:
        cfg = self.cfg = view.config
        self.now = view.now
        servers = self.servers = _unique(view.servers)
        tasks = self.tasks = _unique(view.tasks)

        self.sids = [s.id for s in servers]
        self.sgroup = [s.group for s in servers]
        self.alive = [s.alive for s in servers]
        self.draining = [s.alive and s.draining for s in servers]
        self.cordoned = [s.alive and s.cordoned and not s.draining for s in servers]
        self.sched = [s.alive and not s.cordoned and not s.draining for s in servers]
        self.cap_c = [_capacity(s.capacity.cpu) for s in servers]
        self.cap_n = [_capacity(s.capacity.net) for s in servers]
        self.inv_c = [_inverse(c) for c in self.cap_c]
        self.inv_n = [_inverse(c) for c in self.cap_n]
        self.bg_c = [clean_load(s.background.cpu) for s in servers]
        self.bg_n = [clean_load(s.background.net) for s in servers]
        self.used_c = list(self.bg_c)
        self.used_n = list(self.bg_n)
        self.sindex = {sid: i for i, sid in enumerate(self.sids)}
        # Task slots (module docstring): the cap, and the tasks still running on a server that
        # their load no longer counts on (leaving it); `count` + `leaving` is what a cap bounds.
        self.cap = [s.max_tasks if s.max_tasks is not None and s.max_tasks >= 1 else NO_CAP
                    for s in servers]
        self.capped = any(c < NO_CAP for c in self.cap)
        self.leaving = [0] * len(servers)
        self.members: dict[str, list[int]] = {}
        for i, g in enumerate(self.sgroup):
            self.members.setdefault(g, []).append(i)

        self.load_c, self.load_n, self.est = estimate_loads(
            tasks, cfg.default_estimate, cfg.task_cpu_floor)
        # Tasks counted on each server (where their load counts); kept in step with the load by
        # every placement, move and release, for count balance (scheduler/spread.py).
        self.count = [0] * len(servers)
        self.revoke: list[int] = []
        # Unplaced tasks: per group, positions in id order; why they have no server when it is
        # not simply "new" (evacuated ...); in-flight moves whose task is unplaced, separately.
        self.unplaced: dict[str, list[int]] = {}
        self.origin: dict[int, str] = {}
        self.lost: list[int] = []   # unplaced because their server is dead or unknown
        self.landing: list[Landing] = []
        self.misplaced: list[int] = []
        self.drain_tasks: dict[int, list[int]] = {}
        self.movable: list[list[int]] = [[] for _ in servers]
        self.cooling: dict[str, int] = {}     # group -> tasks held back by their cool-down
        self.flight_sources: dict[str, int] = {}  # source -> handoffs under way from it
        self._classify(_latest_flights(view.in_flight) if view.in_flight else {})
        self.score = [self.score_of(i) for i in range(len(servers))]
        # Per server: "" or what it lacks ("no network capacity") for the load it carries; such a
        # server is not schedulable this round (module docstring).
        self.lacks = [self._lacks(i) for i in range(len(servers))]
        self.sched = [ok and not word for ok, word in zip(self.sched, self.lacks, strict=True)]

    # -- helpers -------------------------------------------------------------------------------

    def score_of(self, i: int) -> float:
        """Dominant utilisation of server `i` from its current used load."""
        c = self.used_c[i] * self.inv_c[i]
        n = self.used_n[i] * self.inv_n[i]
        return c if c > n else n

    def full(self, i: int) -> bool:
        """Server `i` has no task slot left."""
        return self.count[i] + self.leaving[i] >= self.cap[i]

    def _lacks(self, i: int) -> str:
        cpu = self.inv_c[i] >= BIG and self.used_c[i] > 0.0
        net = self.inv_n[i] >= BIG and self.used_n[i] > 0.0
        if cpu and net:
            return "no CPU or network capacity"
        return "no CPU capacity" if cpu else ("no network capacity" if net else "")

    def state_word(self, i: int) -> str:
        if not self.alive[i]:
            return "dead"
        if self.draining[i]:
            return "draining"
        if self.cordoned[i]:
            return "cordoned"
        if self.lacks[i]:
            return f"full ({self.lacks[i]})"
        return "schedulable"

    def groups_seen(self) -> list[str]:
        seen = set(self.sgroup)
        seen.update(t.group for t in self.tasks)
        return sorted(seen)

    # -- classification ------------------------------------------------------------------------

    def _classify(self, flights: dict[str, MoveInFlight]) -> None:
        tasks = self.tasks
        sindex, alive, draining, sgroup = self.sindex, self.alive, self.draining, self.sgroup
        used_c, used_n, load_c, load_n = self.used_c, self.used_n, self.load_c, self.load_n
        movable, unplaced = self.movable, self.unplaced
        now, cooldown = self.now, self.cfg.cooldown_s
        cooling, flight_sources, count = self.cooling, self.flight_sources, self.count
        for k, t in enumerate(tasks):
            s = t.server
            if t.stopped:
                if s is not None:
                    self.revoke.append(k)
                continue
            fl = flights.get(t.id) if flights else None
            if s is None:
                if fl is None:
                    queue = unplaced.get(t.group)
                    if queue is None:
                        queue = unplaced[t.group] = []
                    queue.append(k)
                else:
                    self._add_landing(k, fl)
                continue
            i = sindex.get(s)
            if i is None or not alive[i]:
                self.lost.append(k)
                if fl is not None and fl.source == s:
                    # A move whose source died mid-handoff still owns its reserved target.
                    self._add_landing(k, fl)
                else:
                    why = "unknown server" if i is None else "dead"
                    self.origin[k] = f"evacuated from {s} ({why})"
                    unplaced.setdefault(t.group, []).append(k)
                continue
            if fl is not None and (s == fl.target or s == fl.source):
                # In flight: counts on the target (while the target lives), never moves again.
                j = i if s == fl.target else sindex.get(fl.target, -1)
                if j < 0 or not alive[j]:
                    j = i
                used_c[j] += load_c[k]
                used_n[j] += load_n[k]
                count[j] += 1
                if j != i:  # still draining here: it holds its slot until it has left
                    self.leaving[i] += 1
                src = fl.source or ""
                flight_sources[src] = flight_sources.get(src, 0) + 1
                continue
            used_c[i] += load_c[k]
            used_n[i] += load_n[k]
            count[i] += 1
            if sgroup[i] != t.group:
                self.misplaced.append(k)
            elif draining[i]:
                self.drain_tasks.setdefault(i, []).append(k)
            else:
                moved = t.last_moved_at
                if moved is None or now - moved >= cooldown:
                    movable[i].append(k)
                else:
                    cooling[t.group] = cooling.get(t.group, 0) + 1

    def _add_landing(self, k: int, fl: MoveInFlight) -> None:
        reserved = -1
        j = self.sindex.get(fl.target, -1)
        if j >= 0 and self.alive[j]:
            reserved = j
            self.used_c[j] += self.load_c[k]
            self.used_n[j] += self.load_n[k]
            self.count[j] += 1
        origin = f"move from {fl.source or 'nowhere'} to {fl.target}"
        self.landing.append(Landing(k, origin, reserved, fl))
        src = fl.source or ""
        self.flight_sources[src] = self.flight_sources.get(src, 0) + 1


def utilisation(view: ClusterView) -> dict[str, tuple[float, float]]:
    """(cpu, net) utilisation of every server in `view` as the planner sees it before planning.

    Load is background plus the tasks counted on the server: its running tasks, and tasks in
    flight towards it (a move's load counts on its target, not its source). Tasks on dead or
    unknown servers and tasks of stopped jobs count nowhere. Dead servers report (0.0, 0.0)
    unless they carry background; a zero capacity with load on it reports `inf`. Pure.
    """
    cl = Cluster(view)
    out: dict[str, tuple[float, float]] = {}
    for i, sid in enumerate(cl.sids):
        out[sid] = (
            _ratio(cl.used_c[i], cl.cap_c[i]),
            _ratio(cl.used_n[i], cl.cap_n[i]),
        )
    return out


def _ratio(used: float, capacity: float) -> float:
    if capacity > _TINY_CAPACITY:
        return used / capacity
    return 0.0 if used <= 0.0 else float("inf")
