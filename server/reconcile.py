"""Pure decisions of the server: which leader messages to obey, and what to start and stop.

No I/O and no clocks: the host passes in what it knows (the desired set from the last accepted
directive, what runs, the generations already run, `now`) and carries out the returned plan.
The host calls `plan_reconcile` after every directive, ack and finished start/stop, so the set
of running tasks converges on the desired one like a kubelet's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tasks.runner import TaskState

T = TypeVar("T")

ACTIVE = frozenset({TaskState.STARTING, TaskState.RUNNING})


def accept_epoch(highest_seen: int, epoch: int) -> tuple[bool, int]:
    """(obey the message?, new highest epoch seen). A message from an older epoch comes from a
    deposed leader: it is ignored, acks included (they must not renew the lease)."""
    if epoch < highest_seen:
        return False, highest_seen
    return True, epoch


Version = tuple[int, int]
"""(incarnation, generation) of a task. Generations count from 1 again when a job is deleted and
submitted again under its id (same task ids, new incarnation), so they are compared only within
one incarnation: a different incarnation is another task that happens to share the id."""


@dataclass(frozen=True, slots=True)
class Desired(Generic[T]):
    """One task the leader wants here; `payload` is whatever the host needs to build it.
    `incarnation` tells a job deleted and submitted again from the one before (see Version)."""

    task_id: str
    generation: int
    payload: T
    incarnation: int = 0

    @property
    def version(self) -> Version:
        return self.incarnation, self.generation


@dataclass(frozen=True, slots=True)
class Running:
    """One task the host holds. `state` is STOPPED once the host has stopped its runner, FAILED
    when it failed by itself and has not been released yet. `busy`: a start or stop is under way
    (left alone until done). `failed_at`: when it entered FAILED (host clock), for the restart
    back-off."""

    task_id: str
    generation: int
    state: TaskState
    busy: bool = False
    failed_at: float | None = None
    # Its final state (STOPPED) reached the leader in an acknowledged report.
    final_acked: bool = False
    incarnation: int = 0

    @property
    def version(self) -> Version:
        return self.incarnation, self.generation


@dataclass(frozen=True, slots=True)
class Stop:
    task_id: str
    generation: int
    drain: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    task_id: str
    generation: int
    reason: str


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """Stops come first: a task being replaced by a newer generation is stopped in this round
    and started in a later one, once its stop has finished (it is `busy` meanwhile)."""

    stop: tuple[Stop, ...] = ()
    start: tuple[Desired[T], ...] = ()
    # Entries to drop from the host's table: stopped, not wanted, and the leader has seen it.
    forget: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    # Generations to remember as run (task_id -> (incarnation, generation)), after this plan's
    # starts.
    generations: Mapping[str, Version] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.stop or self.start or self.forget or self.refused)


def plan_reconcile(
    desired: Mapping[str, Desired[T]],
    running: Mapping[str, Running],
    generations_run: Mapping[str, Version],
    *,
    may_start: bool,
    now: float,
    restart_backoff_s: float,
) -> Plan[T]:
    """What to do to bring `running` to `desired`.

    - `may_start` is False while the server holds no lease or is draining: nothing new starts
      (whatever runs and is still desired is left alone; self-fencing is the host's, not ours).
    - A desired generation lower than one already run for the task (same incarnation) is
      refused: it comes from a stale view, and the newer assignment may already run elsewhere.
    - A task running at another version (an older generation, or the job's previous
      incarnation) is stopped with drain, then started at the new one.
    - A task not desired any more is stopped with drain (a handoff: flush, commit, STOPPED).
    - A desired task that FAILED is restarted after `restart_backoff_s`.
    """
    stops: list[Stop] = []
    starts: list[Desired[T]] = []
    forget: list[str] = []
    refused: list[Refusal] = []
    generations = dict(generations_run)

    for task_id in sorted(desired):
        want = desired[task_id]
        have = running.get(task_id)
        ran = generations.get(task_id)
        if ran is not None and ran[0] == want.incarnation and want.generation < ran[1]:
            refused.append(Refusal(task_id, want.generation,
                                   f"stale generation {want.generation}: {ran[1]} already run"))
            continue
        if have is not None and have.busy:
            continue
        if have is not None and have.version == want.version:
            if have.state in ACTIVE or have.state is TaskState.DRAINING:
                continue
            if have.state is TaskState.FAILED and not _backoff_over(have, now, restart_backoff_s):
                continue
            # STOPPED or FAILED: the host drops the old runner and starts a fresh one.
        elif have is not None and have.state in ACTIVE:
            replaced = (f"replaced by generation {want.generation}"
                        if have.incarnation == want.incarnation
                        else "replaced by a new incarnation of its job")
            stops.append(Stop(task_id, have.generation, drain=True, reason=replaced))
            continue
        if may_start:
            starts.append(want)
            generations[task_id] = want.version

    for task_id in sorted(running):
        have = running[task_id]
        if task_id in desired or have.busy:
            continue
        if have.state in ACTIVE:
            stops.append(Stop(task_id, have.generation, drain=True, reason="not desired"))
        elif have.state is TaskState.FAILED:
            # Nothing to drain: the runner is released without committing more.
            stops.append(Stop(task_id, have.generation, drain=False, reason="failed, not desired"))
        elif have.state is TaskState.STOPPED and have.final_acked:
            forget.append(task_id)

    return Plan(stop=tuple(stops), start=tuple(starts), forget=tuple(forget),
                refused=tuple(refused), generations=generations)


def _backoff_over(have: Running, now: float, backoff_s: float) -> bool:
    return have.failed_at is None or now - have.failed_at >= backoff_s


def fence_plan(running: Mapping[str, Running]) -> tuple[Stop, ...]:
    """Self-fencing: stop every task that may still write, at once and without committing."""
    return tuple(
        Stop(task_id, have.generation, drain=False, reason="lease expired: self-fencing")
        for task_id, have in sorted(running.items())
        if have.state in ACTIVE or have.state is TaskState.DRAINING
    )

