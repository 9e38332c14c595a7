"""Pure decisions of the server: which leader to follow, which of its messages to obey, and
what to start and stop.

No I/O and no clocks: the host passes in what it knows (the `epoch` znode as last read, the
`leader` znode, the desired set from the last accepted directive, what runs, the generations
already run, `now`) and carries out the returned plan. The host calls `plan_reconcile` after
every directive, ack and finished start/stop, so the set of running tasks converges on the
desired one like a kubelet's.

Epochs are believed only when ZooKeeper's `epoch` znode confirms them (its version IS the
leader's fencing token). A `leader` znode or a message claiming a higher epoch than the znode's
is refused, re-checked against ZooKeeper, and never remembered: a forged `leader` znode can
neither take a server over nor leave it ignoring the real leader afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tasks.cluster import LeaderInfo
from tasks.runner import TaskState

T = TypeVar("T")

ACTIVE = frozenset({TaskState.STARTING, TaskState.RUNNING})
# A task that fails again and again waits restart_backoff, then twice that, ... up to this many
# doublings (5 s: 10, 20, 40, 80 s): bounded so that tasks that failed through a long outage (a
# broker away) start again at most 80 s after its end. A run that lasted STABLE_RUN_S
# starts the count again.
RESTART_DOUBLINGS = 4
STABLE_RUN_S = 600.0


@dataclass(frozen=True, slots=True, order=True)
class EpochRead:
    """The `epoch` znode as read: (czxid, version). A node deleted and created again has a
    newer czxid, so it orders after every version of the old one (`newer_epoch`)."""

    czxid: int
    version: int


def newer_epoch(known: EpochRead | None, read: EpochRead | None) -> EpochRead | None:
    """What the host keeps after a read (a watch or a re-check may deliver them out of order):
    the later of the two; a read of a missing node changes nothing."""
    if read is None:
        return known
    return read if known is None or read > known else known


def judge_epoch(epoch: int, confirmed: EpochRead | None) -> str:
    """What to do with a leader message of `epoch`:

    - "obey": it is the epoch ZooKeeper confirms;
    - "stale": lower: a deposed leader's; ignored, acks included (they must not renew the lease);
    - "unconfirmed": higher than ZooKeeper says (or nothing read yet): refused, not remembered,
      and the host re-reads the znode."""
    if confirmed is None or epoch > confirmed.version:
        return "unconfirmed"
    return "stale" if epoch < confirmed.version else "obey"


def choose_leader(announced: LeaderInfo | None, confirmed: EpochRead | None,
                  following: LeaderInfo | None) -> str:
    """Given the `leader` znode (`announced`), the confirmed epoch and the leader the session
    follows now:

    - "follow" `announced`: its epoch is the confirmed one, and it is not the leader followed
      already (or that one's term is another epoch);
    - "recheck": it claims an epoch ZooKeeper has not confirmed to us (yet): keep following whom
      we follow, re-read the `epoch` znode;
    - "keep": nothing to change (no leader node: its successor will bump the epoch; an older
      epoch's node; or a second address for the epoch we follow, which no master writes: a term
      writes its `leader` node once)."""
    if announced is None:
        return "keep"
    if confirmed is None or announced.epoch > confirmed.version:
        return "recheck"
    if announced.epoch < confirmed.version:
        return "keep"
    if following is None or following.epoch != announced.epoch:
        return "follow"
    return "keep"


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
    back-off; `failures`: the task's failed runs in a row, this one included."""

    task_id: str
    generation: int
    state: TaskState
    busy: bool = False
    failed_at: float | None = None
    # Its final state (STOPPED) reached the leader in an acknowledged report.
    final_acked: bool = False
    incarnation: int = 0
    failures: int = 1

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
    - A desired task that FAILED is restarted after `restart_delay` (restart_backoff_s,
      doubling with each failure in a row, bounded): a sink error that repeats is a task FAILED
      with its error most of the time, not a restart every few seconds.
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
    return have.failed_at is None or now - have.failed_at >= restart_delay(backoff_s,
                                                                           have.failures)


def restart_delay(backoff_s: float, failures: int) -> float:
    """How long a task FAILED `failures` times in a row waits before its next start."""
    return backoff_s * (1 << min(max(failures - 1, 0), RESTART_DOUBLINGS))


def failures_in_a_row(previous: int, ran_s: float | None) -> int:
    """The failure count of a run that failed after `ran_s` seconds (None: unknown), given
    the count of the run before it: a run that lasted STABLE_RUN_S starts it again."""
    if ran_s is not None and ran_s >= STABLE_RUN_S:
        return 1
    return previous + 1


def fence_plan(running: Mapping[str, Running]) -> tuple[Stop, ...]:
    """Self-fencing: stop every task that may still write, at once and without committing."""
    return tuple(
        Stop(task_id, have.generation, drain=False, reason="lease expired: self-fencing")
        for task_id, have in sorted(running.items())
        if have.state in ACTIVE or have.state is TaskState.DRAINING
    )

