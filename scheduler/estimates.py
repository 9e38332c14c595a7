"""A load vector for every task: measured, else the job's hint, else the median of measured
siblings (same job), else the configured default; a rate-limited task's network load is then at
most its share of the job's bytes/s (`Task.net_cap`).

`measured` tasks use `Task.load` (the EWMA of what their server reports). A task that is not
measured ignores `Task.load`: the caller's contract is that `load` is only filled when measured.
The median is taken per dimension over the job's measured tasks (any group, any state), so an
unmeasured partition of a busy job is not assumed to be as light as the default.

Numbers are sanitised once here: negative or NaN loads count as 0, absurdly large ones are clamped,
so the rest of the planner can do plain float arithmetic. A positive load smaller than
`RESOLUTION` counts as `RESOLUTION`: far below anything measurable, and it keeps "some load" apart
from "no load" in the arithmetic, so that a load of 1e-20 B/s on a server without network
capacity is "does not fit" (RESOLUTION / 0 capacity is far above any watermark), not a score of
0.01. Then every task's CPU is at least `Config.task_cpu_floor`: a running task is never free, and
a task that costs nothing would leave its server's score unchanged, so every idle task would go to
the same server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.model import ClusterView, Resources, Task

MEASURED = 0
HINT = 1
MEDIAN = 2
DEFAULT = 3

SOURCE_NAMES = ("measured", "job hint", "median of measured siblings", "default estimate")

_CLAMP = 1e15  # far above any real CPU count or byte rate; keeps arithmetic finite
RESOLUTION = 1e-12  # the smallest positive load (cores or bytes/s) the planner counts


def clean(x: float) -> float:
    """A finite, non-negative number (NaN and negatives → 0, huge values and inf → 1e15)."""
    if x > 0.0:
        return x if x < _CLAMP else _CLAMP
    return 0.0


def clean_load(x: float) -> float:
    """`clean`, and a positive load below RESOLUTION counts as RESOLUTION (module docstring)."""
    if x > 0.0:
        return x if RESOLUTION <= x < _CLAMP else (RESOLUTION if x < RESOLUTION else _CLAMP)
    return 0.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """The load the planner uses for a task, and where it came from."""

    cpu: float
    net: float
    source: str  # one of SOURCE_NAMES


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def estimate_loads(
    tasks: Sequence[Task], default: Resources, cpu_floor: float = 0.0
) -> tuple[list[float], list[float], list[int]]:
    """Per task (same order): cpu load (at least `cpu_floor`), net load and the source code
    (MEASURED, HINT, ...).

    Stopped tasks get an estimate too (cheap, and `estimates()` shows it); the planner ignores it.
    """
    floor = clean(cpu_floor)
    low = max(floor, RESOLUTION)
    n = len(tasks)
    cpu = [0.0] * n
    net = [0.0] * n
    src = [MEASURED] * n
    unresolved: list[int] = []
    for k, t in enumerate(tasks):
        load = t.load
        if not (t.measured and load is not None):
            load = t.hint
            if load is None:
                unresolved.append(k)
                continue
            src[k] = HINT
        c, m = load.cpu, load.net
        cpu[k] = c if low <= c < _CLAMP else max(clean_load(c), floor)
        net[k] = m if RESOLUTION <= m < _CLAMP else clean_load(m)
    if not unresolved:
        _cap(tasks, net)
        return cpu, net, src

    jobs = {tasks[k].job for k in unresolved}
    siblings: dict[str, tuple[list[float], list[float]]] = {}
    for k, t in enumerate(tasks):
        if t.measured and t.load is not None and t.job in jobs:
            entry = siblings.get(t.job)
            if entry is None:
                entry = siblings[t.job] = ([], [])
            entry[0].append(cpu[k])
            entry[1].append(net[k])
    medians = {job: (_median(c), _median(m)) for job, (c, m) in siblings.items()}
    dc, dn = max(clean_load(default.cpu), floor), clean_load(default.net)
    for k in unresolved:
        med = medians.get(tasks[k].job)
        if med is not None:
            cpu[k], net[k] = med
            src[k] = MEDIAN
        else:
            cpu[k], net[k] = dc, dn
            src[k] = DEFAULT
    _cap(tasks, net)
    return cpu, net, src


def _cap(tasks: Sequence[Task], net: list[float]) -> None:
    """A rate-limited task reads no more bytes/s than its share of the job's limit."""
    for k, t in enumerate(tasks):
        cap = t.net_cap
        if cap is not None and net[k] > cap:
            net[k] = clean_load(cap)


def estimates(view: ClusterView) -> dict[str, Estimate]:
    """The load the planner would use for each task of `view`, by task id, with its source.

    Pure; for `exportctl explain` and dry runs.
    """
    tasks = view.tasks
    cpu, net, src = estimate_loads(tasks, view.config.default_estimate,
                                   view.config.task_cpu_floor)
    return {
        t.id: Estimate(cpu[k], net[k], SOURCE_NAMES[src[k]]) for k, t in enumerate(tasks)
    }
