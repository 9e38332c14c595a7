"""Scheduler benchmark: `.venv/bin/python -m tools.bench.scheduler_bench [--seed N] [--json]`.

Not a timed test: it prints a report (and the machine) for docs/benchmarks/scheduler.md.

The cluster: 1,000 servers in 4 groups of 250, each server's capacity a random factor of 1-4x a
base (8 cores, 250 MB/s; the two dimensions vary independently by +-25 % on top), 2 % background;
100,000 measured tasks (100 jobs of 1,000 partitions, each job in one group) with log-normal
loads, CPU and network independent, and 5 hot partitions per group at 100x the median in both
dimensions. Scenarios, each starting from the previous one's applied result:

(a) placement from empty;
(b) one server dies (a random one, and separately the worst case: one carrying a hot partition);
(c) 50 servers join (spread over the groups; and separately all into one group), planned round
    after round (moves applied, 60 s apart) until a round proposes nothing;
(d) every load drifts by a random factor in [0.7, 1.3];
(e) a backlog: 60,000 new tasks (60 more jobs like the others) join the placed cluster of (a);
    the first round places what fits and leaves the rest pending (about 36,000); then the round
    with that backlog and the same cluster without the pending tasks are timed side by side,
    interleaved (`--backlog-pairs` pairs), so a busy machine slows both alike; the report gives
    the ratio of the median CPU times. `--scenario backlog` runs (a) and (e) only.

Reported per scenario: wall time of `plan()` (median of 3 runs, without tracemalloc), peak memory
of one `plan()` under tracemalloc, imbalance (max / mean dominant utilisation over each group's
schedulable servers, the worst group), moves made and a lower bound of the moves needed (for each
server above its group's `mean + threshold` or the high watermark: the fewest of its movable
tasks, largest first, whose removal brings it under that limit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import statistics
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import scheduler
from scheduler import ClusterView, Config, Plan, Resources, Server, Task

GROUPS = 4
SERVERS = 1_000
JOBS = 100
PARTITIONS = 1_000
HOT_PER_GROUP = 5
BASE_CPU = 8.0
BASE_NET = 250e6
MEDIAN_CPU = 0.09
MEDIAN_NET = 3.0e6
SIGMA_CPU = 0.8
SIGMA_NET = 0.6
ROUND_S = 60.0
BACKLOG_JOBS = 60


@dataclass
class Result:
    name: str
    wall_s: float                 # plan(), median of 3 (first round only for multi-round)
    cpu_s: float                  # process CPU time of the same runs (the machine is shared)
    peak_mib: float               # tracemalloc peak of one plan()
    imbalance_before: float       # max / mean dominant utilisation, worst group
    imbalance_after: float
    placements: int
    moves: int
    least_moves: int              # lower bound to get under mean + threshold
    least_to_goal: int            # lower bound to get to the planner's goal
    above_before: int             # servers above mean + threshold or the high watermark
    above_after: int
    pending: int
    rounds: int = 1
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def draw_jobs(rng: random.Random, prefix: str, jobs: int) -> list[Task]:
    """`jobs` jobs of PARTITIONS partitions over the groups in turn, every load drawn around the
    medians (cpu, then net, task after task)."""
    return [
        Task(id=f"{prefix}{j:03d}:events:{p:04d}", job=f"{prefix}{j:03d}", group=f"g{j % GROUPS}",
             load=Resources(MEDIAN_CPU * rng.lognormvariate(0.0, SIGMA_CPU),
                            MEDIAN_NET * rng.lognormvariate(0.0, SIGMA_NET)), measured=True)
        for j in range(jobs) for p in range(PARTITIONS)
    ]


def make_cluster(seed: int) -> tuple[list[Server], list[Task]]:
    rng = random.Random(seed)
    servers = []
    for n in range(SERVERS):
        f = rng.uniform(1.0, 4.0)
        cpu = BASE_CPU * f * rng.uniform(0.8, 1.25)
        net = BASE_NET * f * rng.uniform(0.8, 1.25)
        servers.append(Server(
            id=f"s{n:04d}", group=f"g{n % GROUPS}", capacity=Resources(cpu, net),
            background=Resources(cpu * 0.02, net * 0.02),
        ))
    tasks = draw_jobs(rng, "job", JOBS)
    # A few hot partitions: 100x the median in both dimensions.
    by_group: dict[str, list[int]] = {}
    for k, t in enumerate(tasks):
        by_group.setdefault(t.group, []).append(k)
    for ks in by_group.values():
        for k in rng.sample(ks, HOT_PER_GROUP):
            tasks[k] = replace(tasks[k], load=Resources(MEDIAN_CPU * 100, MEDIAN_NET * 100))
    return servers, tasks


def apply(view: ClusterView, plan: Plan, now: float) -> ClusterView:
    """The view after the plan: placements and moves done (moves land at once), stopped tasks
    revoked."""
    where: dict[str, str | None] = {p.task: p.server for p in plan.placements}
    moved = {m.task: m.target for m in plan.moves}
    where.update(moved)
    where.update({r.task: None for r in plan.revocations})
    tasks = tuple(
        t if t.id not in where else replace(
            t, server=where[t.id],
            last_moved_at=now if t.id in moved else t.last_moved_at,
        )
        for t in view.tasks
    )
    return replace(view, tasks=tasks, in_flight=())


def group_stats(view: ClusterView) -> dict[str, tuple[float, float]]:
    """Per group: (mean, max) dominant utilisation over schedulable servers."""
    util = scheduler.utilisation(view)
    scores: dict[str, list[float]] = {}
    for s in view.servers:
        if s.alive and not s.cordoned and not s.draining:
            c, n = util[s.id]
            scores.setdefault(s.group, []).append(max(c, n))
    return {g: (statistics.fmean(v), max(v)) for g, v in scores.items()}


def imbalance_ratio(view: ClusterView) -> float:
    return max(mx / mean for mean, mx in group_stats(view).values() if mean > 0)


def least_moves(view: ClusterView, to_goal: bool = False) -> int:
    """A lower bound of the moves that bring every server under its group's limit:
    mean + imbalance threshold (or the high watermark; only that for a cordoned server), or, with
    `to_goal`, the planner's goal mean + (1 - hysteresis) * threshold. Per server and dimension
    over the limit, the fewest of its tasks (largest first in that dimension) that carry the
    excess; the larger of the two dimensions; summed over servers. It ignores cool-downs and
    whether targets have room, so it is a true lower bound, usually not reachable."""
    cfg = view.config
    util = scheduler.utilisation(view)
    est = scheduler.estimates(view)
    stats = group_stats(view)
    margin = cfg.imbalance_threshold * ((1.0 - cfg.hysteresis) if to_goal else 1.0)
    flying = {f.task for f in view.in_flight}
    on: dict[str, list[scheduler.Estimate]] = {}
    for t in view.tasks:
        if t.server is not None and not t.stopped and t.id not in flying:
            on.setdefault(t.server, []).append(est[t.id])
    total = 0
    for s in view.servers:
        if not s.alive or s.draining or s.group not in stats:
            continue
        mean, _ = stats[s.group]
        limit = cfg.high_watermark if s.cordoned else min(mean + margin, cfg.high_watermark)
        c, n = util[s.id]
        need = 0
        for u, cap, dim in ((c, s.capacity.cpu, "cpu"), (n, s.capacity.net, "net")):
            excess = (u - limit) * cap
            if excess <= 1e-9 * cap:
                continue
            count = 0
            loads = [float(getattr(e, dim)) for e in on.get(s.id, ())]
            for load in sorted(loads, reverse=True):
                excess -= load
                count += 1
                if excess <= 1e-9 * cap:
                    break
            need = max(need, count)
        total += need
    return total


def above_limit(view: ClusterView) -> int:
    """Schedulable servers still above mean + threshold or the high watermark."""
    cfg = view.config
    s = {sid: max(c, n) for sid, (c, n) in scheduler.utilisation(view).items()}
    stats = group_stats(view)
    return sum(
        1 for x in view.servers
        if x.alive and not x.cordoned and not x.draining and x.group in stats
        and s[x.id] > min(stats[x.group][0] + cfg.imbalance_threshold, cfg.high_watermark) + 1e-9
    )


def timed(view: ClusterView, runs: int = 3) -> tuple[Plan, float, float, float]:
    walls, cpus = [], []
    out = scheduler.plan(view)  # warm-up
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        out = scheduler.plan(view)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    tracemalloc.start()
    scheduler.plan(view)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, statistics.median(walls), statistics.median(cpus), peak / 2**20


def scenario(name: str, view: ClusterView) -> tuple[Result, Plan]:
    placed_before = any(t.server for t in view.tasks)
    before = imbalance_ratio(view) if placed_before else float("nan")
    out, wall, cpu, peak = timed(view)
    after_view = apply(view, out, view.now)
    return Result(
        name=name, wall_s=wall, cpu_s=cpu, peak_mib=peak, imbalance_before=before,
        imbalance_after=imbalance_ratio(after_view), placements=len(out.placements),
        moves=len(out.moves), least_moves=least_moves(view),
        least_to_goal=least_moves(view, to_goal=True),
        above_before=above_limit(view) if placed_before else 0,
        above_after=above_limit(after_view), pending=len(out.pending),
    ), out


def rounds_until_quiet(name: str, view: ClusterView, max_rounds: int = 100
                       ) -> tuple[Result, ClusterView]:
    start_view = view
    first_wall = first_cpu = peak = 0.0
    moves = rounds = 0
    walls = []
    for rounds in range(1, max_rounds + 1):
        if rounds == 1:
            out, first_wall, first_cpu, peak = timed(view, runs=3)
            walls.append(first_wall)
        else:
            start = time.perf_counter()
            out = scheduler.plan(view)
            walls.append(time.perf_counter() - start)
        if out.is_empty():
            break
        moves += len(out.moves)
        view = apply(view, out, view.now)
        view = replace(view, now=view.now + ROUND_S)
    result = Result(
        name=name, wall_s=first_wall, cpu_s=first_cpu, peak_mib=peak,
        imbalance_before=imbalance_ratio(start_view), imbalance_after=imbalance_ratio(view),
        placements=0, moves=moves, least_moves=least_moves(start_view),
        least_to_goal=least_moves(start_view, to_goal=True),
        above_before=above_limit(start_view), above_after=above_limit(view),
        pending=0, rounds=rounds,
        note=f"rounds until one proposes nothing: {rounds} (that last one included), "
             f"{ROUND_S:.0f} s apart; plan() per round median {statistics.median(walls):.3f} s",
    )
    return result, view


def run(seed: int, report: Callable[[Result], None], only_backlog: bool = False,
        pairs: int = 7) -> list[Result]:
    results: list[Result] = []
    rng = random.Random(seed + 1)
    servers, tasks = make_cluster(seed)
    config = Config()
    view = ClusterView(now=10_000.0, servers=tuple(servers), tasks=tuple(tasks), config=config)

    def keep(r: Result) -> None:
        results.append(r)
        report(r)

    # (a) placement from empty
    r, out = scenario("(a) placement from empty", view)
    keep(r)
    placed = apply(view, out, view.now)
    if only_backlog:
        keep(backlog(placed, seed, pairs))
        return results

    # (b) one server dies: a random one, then the worst case (one with a hot partition)
    hot = {t.id for t in tasks if t.load is not None and t.load.cpu >= MEDIAN_CPU * 100}
    hosts_hot = {t.server for t in placed.tasks if t.id in hot and t.server is not None}
    victim = rng.choice([s.id for s in servers if s.id not in hosts_hot])
    after_b = placed
    for label, sid in (("random", victim), ("worst case, hosting a hot partition",
                                            sorted(hosts_hot)[0])):
        dead = replace(placed, servers=tuple(
            replace(s, alive=False) if s.id == sid else s for s in placed.servers))
        r, out = scenario(f"(b) one server dies ({label}: {sid})", dead)
        on_dead = {t.id for t in placed.tasks if t.server == sid}
        exact = {p.task for p in out.placements} == on_dead and not out.moves
        r.least_moves = len(on_dead)
        r.note = (f"{len(on_dead)} tasks on the dead server; the placements are exactly those "
                  f"and there is no move: {exact}")
        keep(r)
        if sid == victim:  # the random case carries on to (c)
            after_b = replace(apply(dead, out, dead.now), now=dead.now + ROUND_S)

    # (c) 50 servers join: spread over the groups, then all into one group
    def joined(base: ClusterView, groups: Sequence[str]) -> ClusterView:
        new = []
        for n in range(50):
            f = rng.uniform(1.0, 4.0)
            cpu = BASE_CPU * f * rng.uniform(0.8, 1.25)
            net = BASE_NET * f * rng.uniform(0.8, 1.25)
            new.append(Server(
                id=f"t{n:04d}", group=groups[n % len(groups)], capacity=Resources(cpu, net),
                background=Resources(cpu * 0.02, net * 0.02),
            ))
        return replace(base, servers=base.servers + tuple(new))

    spread = joined(after_b, [f"g{g}" for g in range(GROUPS)])
    r, after_c = rounds_until_quiet("(c) 50 servers join, spread over the 4 groups", spread)
    keep(r)
    one = joined(after_b, ["g0"])
    r, _ = rounds_until_quiet("(c') 50 servers join, all into group g0", one)
    keep(r)
    tight = replace(spread, config=replace(config, imbalance_threshold=0.03))
    r, _ = rounds_until_quiet("(c'') 50 servers join, spread, imbalance threshold 0.03", tight)
    keep(r)

    # (d) every load drifts +-30 %
    drift = random.Random(seed + 2)
    drifted = replace(after_c, now=after_c.now + ROUND_S, tasks=tuple(
        replace(t, load=t.load.scaled(drift.uniform(0.7, 1.3))) if t.load is not None else t
        for t in after_c.tasks
    ))
    r, _ = scenario("(d) every load drifts +-30 %", drifted)
    keep(r)
    r, _ = rounds_until_quiet("(d') after the drift, round after round", drifted)
    keep(r)

    # (e) a backlog of tasks that fit nowhere, against the same round without it
    keep(backlog(placed, seed, pairs))
    return results


def backlog_tasks(seed: int) -> list[Task]:
    """60 more jobs of 1,000 partitions, drawn like make_cluster's (no hot partitions)."""
    return draw_jobs(random.Random(seed + 3), "new", BACKLOG_JOBS)


def backlog(placed: ClusterView, seed: int, pairs: int) -> Result:
    """(e): the cost of a round with a backlog against the same round without it (module
    docstring). Both views hold the same running tasks; one also holds the pending ones."""
    view = replace(placed, tasks=placed.tasks + tuple(backlog_tasks(seed)))
    start = time.process_time()
    first = scheduler.plan(view)
    first_cpu = time.process_time() - start
    with_backlog = apply(view, first, view.now)
    without = replace(with_backlog, tasks=tuple(
        t for t in with_backlog.tasks if t.server is not None))
    scheduler.plan(without)  # warm-up
    out = scheduler.plan(with_backlog)
    walls: dict[str, list[float]] = {"with": [], "without": []}
    cpus: dict[str, list[float]] = {"with": [], "without": []}
    for n in range(pairs):
        order = (("with", with_backlog), ("without", without))
        for name, v in order if n % 2 == 0 else order[::-1]:
            start, cpu = time.perf_counter(), time.process_time()
            scheduler.plan(v)
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - cpu)
    tracemalloc.start()
    scheduler.plan(with_backlog)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cpu_with, cpu_without = statistics.median(cpus["with"]), statistics.median(cpus["without"])
    wall_with = statistics.median(walls["with"])
    wall_without = statistics.median(walls["without"])
    per_pair = sorted(a / b for a, b in zip(cpus["with"], cpus["without"], strict=True) if b > 0)
    ratio = cpu_with / cpu_without if cpu_without > 0 else float("nan")
    return Result(
        name=(f"(e) backlog: {len(placed.tasks):,} placed + {BACKLOG_JOBS * PARTITIONS:,} new, "
              f"{len(out.pending):,} stay pending"),
        wall_s=wall_with, cpu_s=cpu_with, peak_mib=peak / 2**20,
        imbalance_before=imbalance_ratio(with_backlog), imbalance_after=imbalance_ratio(
            apply(with_backlog, out, with_backlog.now)),
        placements=len(out.placements), moves=len(out.moves), least_moves=0, least_to_goal=0,
        above_before=0, above_after=0, pending=len(out.pending),
        note=(f"first round (places {len(first.placements):,}, leaves {len(first.pending):,} "
              f"pending) {first_cpu:.3f} s CPU; then {pairs} interleaved pairs, median CPU "
              f"with the backlog {cpu_with:.3f} s, without {cpu_without:.3f} s: ratio "
              f"{ratio:.2f} (per pair {per_pair[0]:.2f}-{per_pair[-1]:.2f}); wall "
              f"{wall_with:.3f} s / {wall_without:.3f} s"),
        extra={"first_round_cpu_s": first_cpu, "cpu_without_s": cpu_without,
               "wall_without_s": wall_without, "ratio": ratio, "pairs": pairs},
    )


def machine() -> dict[str, str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:  # pragma: no cover
            return "?"

    return {
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | grep 'Model name'").split(":", 1)[-1].strip(),
        "python": platform.python_version(),
        "load average": sh("cut -d' ' -f1-3 /proc/loadavg"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON document at the end")
    parser.add_argument("--scenario", choices=("all", "backlog"), default="all",
                        help="backlog: (a) and the backlog round (e) only")
    parser.add_argument("--backlog-pairs", type=int, default=7,
                        help="interleaved with/without pairs timed for (e)")
    args = parser.parse_args(argv)
    info = machine()

    def report(r: Result) -> None:
        if args.json:
            return
        print(f"{r.name}\n"
              f"  plan() {r.wall_s:.3f} s wall, {r.cpu_s:.3f} s CPU, peak {r.peak_mib:.1f} MiB; "
              f"imbalance (max/mean, worst group) {r.imbalance_before:.3f} -> "
              f"{r.imbalance_after:.3f}\n"
              f"  placements {r.placements}, pending {r.pending}, moves {r.moves} "
              f"(least needed: >= {r.least_moves} under the threshold, >= {r.least_to_goal} "
              f"to the goal), servers over the limit {r.above_before} -> {r.above_after}, "
              f"rounds {r.rounds}")
        if r.note:
            print(f"  {r.note}")

    if not args.json:
        print(f"machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
              f"load average {info['load average']}; seed {args.seed}")
    results = run(args.seed, report, only_backlog=args.scenario == "backlog",
                  pairs=max(args.backlog_pairs, 1))
    if args.json:
        print(json.dumps({"machine": info, "seed": args.seed,
                          "results": [dataclasses.asdict(r) for r in results]}, indent=2))


if __name__ == "__main__":
    main()
