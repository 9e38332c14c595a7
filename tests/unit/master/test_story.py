"""The persisted story (master/story.py, master/store.py): bounded per task and per node,
decoded back to the same events; a new error is an event once; changed tasks are tracked."""

from __future__ import annotations

import random
import string

from master.api.ports import TaskEvent
from master.records import TaskRecord
from master.state import LiveState
from master.store import (
    STORY_EVENTS,
    Snapshot,
    StoredStory,
    decode_stories,
    encode_stories,
    shard_of,
)
from master.story import MAX_SHARDS_PER_WRITE, StoryBook, StoryHistory, install, note_errors


def _events(n: int, reason: str = "placed: lowest score 0.03 on s1") -> tuple[TaskEvent, ...]:
    return tuple(TaskEvent(1000.0 + i, "placed", f"{reason} #{i}", "s1", i) for i in range(n))


def test_round_trip_keeps_the_last_events() -> None:
    items = {"j:t:0": StoredStory(1234.5, _events(40)), "j:t:1": StoredStory(None, ())}
    back = decode_stories(encode_stories(items))
    assert back["j:t:0"].since_unix == 1234.5
    assert back["j:t:0"].events == _events(40)[-STORY_EVENTS:]
    assert back["j:t:1"] == StoredStory(None, ())


def test_a_node_never_exceeds_its_bound() -> None:
    rng = random.Random(7)

    def noise() -> str:   # incompressible reasons: the worst case for the bound
        return "".join(rng.choice(string.ascii_letters) for _ in range(300))

    items = {f"j:t:{p}": StoredStory(1.0, tuple(TaskEvent(float(i), "moved", noise(), "s2", i)
                                               for i in range(STORY_EVENTS)))
             for p in range(300)}
    limit = 64 * 1024
    raw = encode_stories(items, limit)
    assert len(raw) <= limit
    back = decode_stories(raw)
    assert set(back) == set(items)
    # Fewer events per task, the newest kept first.
    for tid, st in back.items():
        if st.events:
            assert st.events[-1].at_unix == items[tid].events[-1].at_unix


def test_an_error_is_an_event_once() -> None:
    history = StoryHistory(10)
    rec = TaskRecord("j:t:0", "j", "t", 0, "default", 0, server="s1", generation=2,
                     last_error="NoSuchBucket")
    seen: dict[str, str] = {}
    note_errors([rec], history, seen, 5.0)
    note_errors([rec], history, seen, 6.0)
    rec.last_error = ""
    note_errors([rec], history, seen, 7.0)
    assert [(e.kind, e.reason, e.server, e.generation) for e in history.of("j:t:0")] == [
        ("error", "NoSuchBucket", "s1", 2)]
    assert history.dirty == {"j:t:0"}


def test_repeated_pending_does_not_mark_changed() -> None:
    history = StoryHistory(10)
    history.add("a", TaskEvent(1.0, "pending", "no room"))
    history.dirty.clear()
    history.add("a", TaskEvent(2.0, "pending", "no room"))
    assert not history.dirty
    history.restore("b", _events(3))
    assert not history.dirty and len(history.of("b")) == 3
    history.forget("b")
    assert history.dirty == {"b"}


def test_a_write_takes_a_bounded_number_of_shards_round_robin() -> None:
    state = LiveState(Snapshot({}, {}, {}, {}, 64), 0.0)
    book = StoryBook(state, install(state, {}, 10), interval=5.0)
    for p in range(500):                          # 500 `created` events over all 64 shards
        tid = f"j:t:{p}"
        state.tasks[tid] = TaskRecord(tid, "j", "t", p, "default", shard_of(tid, 64))
        state.history.add(tid, TaskEvent(1.0, "created", f"partition {p}"))
    written: set[str] = set()
    for n in range(1, 100):
        assert book.due(n * 5.0)
        contents = book.collect(n * 5.0, 1.0)
        if not contents:
            break
        assert len(contents) <= MAX_SHARDS_PER_WRITE
        written |= {t for shard in contents.values() for t in shard}
    assert written == set(state.tasks) and not book.history.dirty
    assert n - 1 == -(-64 // MAX_SHARDS_PER_WRITE)
