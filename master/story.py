"""A task's story across leader changes: its recent history, persisted for the next leader.

The leader keeps every task's last `task_history` events in memory (master/records.py,
`History`); `explain` prints them. Without this module a new leader would start with none and
`since` unknown. Here:

- `StoryHistory` is that history plus the set of tasks whose story changed since the last write
  (an event added, a task forgotten).
- `StoryBook.collect` (on the event loop, every `story_flush_interval`): first turns each task's
  new `last_error`, as its server reports it, into an `error` event (so the last errors are in
  the story), then returns the full content of the story shards holding a changed task, at most
  MAX_SHARDS_PER_WRITE of them (round-robin; the rest wait for the next flush). The leader writes
  those shards (`Store.story_ops`: bounded per task and per node, in transactions
  under ZooKeeper's request limit) through its fenced commit, after the assignments: a deposed
  leader cannot write a story, and a failover loses at most the last interval's events.
- `install` (a new leader, and a standby's view) puts the stored stories into the history and
  each task's `since_unix` before anything is served.

Layout and bounds: master/store.py (`stories/<shard>`, STORY_EVENTS, STORY_NODE_BYTES).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from master.api.ports import TaskEvent
from master.records import History, TaskRecord
from master.state import LiveState
from master.store import REASON_CHARS, StoredStory, shard_of

# Story shards written per flush at most (the rest wait for the next flush, round-robin).
MAX_SHARDS_PER_WRITE = 8


class StoryHistory(History):
    """`History` that remembers which tasks' stories changed since they were last written."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.dirty: set[str] = set()

    def add(self, task: str, event: TaskEvent) -> None:
        events = self._events.get(task)
        last = events[-1] if events else None
        super().add(task, event)
        events = self._events.get(task)
        if events and events[-1] is not last:     # not a repeated `pending`, dropped
            self.dirty.add(task)

    def forget(self, task: str) -> None:
        super().forget(task)
        self.dirty.add(task)

    def restore(self, task: str, events: Iterable[TaskEvent]) -> None:
        """Stored events back in, oldest first, without marking the task changed."""
        for event in events:
            super().add(task, event)


def install(state: LiveState, stories: Mapping[str, StoredStory], limit: int) -> StoryHistory:
    """Give `state` a StoryHistory holding the stored stories of the tasks it has."""
    history = StoryHistory(limit)
    for tid, story in stories.items():
        rec = state.tasks.get(tid)
        if rec is None:
            continue
        history.restore(tid, story.events)
        if rec.since_unix is None:
            rec.since_unix = story.since_unix
    state.history = history
    return history


def last_errors(history: History, tasks: Iterable[str]) -> dict[str, str]:
    """The newest `error` event's text of each task (what a new leader has already recorded)."""
    out: dict[str, str] = {}
    for tid in tasks:
        for event in reversed(history.of(tid)):
            if event.kind == "error":
                out[tid] = event.reason
                break
    return out


def note_errors(tasks: Iterable[TaskRecord], history: History, seen: dict[str, str],
                now_unix: float) -> None:
    """A task whose reported `last_error` is new (not the one recorded last) gets an `error`
    event; `seen` (task -> last recorded error) is updated. An error that clears is not an
    event: the story keeps the last one."""
    for rec in tasks:
        error = rec.last_error[:REASON_CHARS]
        if error and seen.get(rec.id) != error:
            seen[rec.id] = error
            history.add(rec.id, TaskEvent(now_unix, "error", error, rec.server, rec.generation))


class StoryBook:
    """When to write stories and what: owned by one leadership term, used on its event loop."""

    def __init__(self, state: LiveState, history: StoryHistory, interval: float) -> None:
        self.state = state
        self.history = history
        self.interval = interval
        self.written_at = float("-inf")
        self.errors = last_errors(history, state.tasks)
        self._in_flight: set[str] = set()
        self._next_shard = 0      # round-robin start, so no shard waits forever

    def due(self, now: float) -> bool:
        return now - self.written_at >= self.interval

    def collect(self, now: float, now_unix: float) -> dict[int, dict[str, StoredStory]]:
        """Record new errors, then the whole content of each shard with a changed story (the
        changed set is cleared; `give_back` after a failed write)."""
        self.written_at = now
        tasks = self.state.tasks
        note_errors(tasks.values(), self.history, self.errors, now_unix)
        for gone in [t for t in self.errors if t not in tasks]:
            del self.errors[gone]
        by_shard: dict[int, set[str]] = {}
        for tid in self.history.dirty:
            rec = tasks.get(tid)
            shard = rec.shard if rec is not None else shard_of(tid, self.state.shards)
            by_shard.setdefault(shard, set()).add(tid)
        # A bounded amount of work per write (encoding a shard of a 100k-task cluster takes
        # ~0.1 s of CPU): the other shards stay changed for the next one.
        count = max(1, self.state.shards)
        order = sorted(by_shard, key=lambda i: (i - self._next_shard) % count)
        taken = order[:MAX_SHARDS_PER_WRITE]
        if taken:
            self._next_shard = (taken[-1] + 1) % count
        shards = set(taken)
        changed = set().union(*(by_shard[i] for i in shards)) if shards else set()
        self.history.dirty -= changed
        self._in_flight = changed
        if not shards:
            return {}
        out: dict[int, dict[str, StoredStory]] = {s: {} for s in shards}
        for rec in tasks.values():
            if rec.shard in out:
                out[rec.shard][rec.id] = StoredStory(rec.since_unix, self.history.of(rec.id))
        return out

    def give_back(self) -> None:
        """The write failed: those stories are still to be written."""
        self.history.dirty |= self._in_flight
        self.written_at = float("-inf")
