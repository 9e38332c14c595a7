"""tasks/deadletter_rules.py: what fits a dead-letter destination, and which dead letters are
still due after restarts (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tasks.deadletter import file_marks
from tasks.deadletter_rules import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEADROOM,
    MIN_VALUE_BUDGET,
    Marks,
    Stage,
    fitted,
    halved,
    max_message_bytes,
    pending,
    value_budget,
)
from tasks.transforms.batch import DeadRecord


def dead(*offsets: int) -> list[DeadRecord]:
    return [DeadRecord(o, 0, b"v", "bad") for o in offsets]


def test_the_limit_is_the_smaller_known_one() -> None:
    assert max_message_bytes(None, None) == DEFAULT_MAX_MESSAGE_BYTES
    assert max_message_bytes(None, 4_000_000) == 4_000_000
    assert max_message_bytes(2_000_000, 4_000_000) == 2_000_000
    assert max_message_bytes(2_000_000, 500_000) == 500_000
    assert max_message_bytes(0, -1) == DEFAULT_MAX_MESSAGE_BYTES


def test_the_budget_leaves_room_for_key_headers_and_framing() -> None:
    headers = [("reason", b"x" * 100), ("source_offset", b"12")]
    budget = value_budget(1_000_000, b"k" * 50, headers)
    assert budget == 1_000_000 - HEADROOM - 50 - (6 + 100 + 8) - (13 + 2 + 8)
    assert value_budget(100, b"", []) == 0


def test_a_value_that_fits_is_kept_whole_and_says_its_size() -> None:
    fit = fitted(b"abc", 10, limit=100, destination="dead-letter topic t")
    assert fit.value == b"abc"
    assert fit.headers == (("original_size", b"3"),)


def test_a_value_too_large_is_cut_and_says_so() -> None:
    fit = fitted(b"x" * 1_500_000, 900_000, limit=1_000_000, destination="dead-letter topic t")
    assert fit.value == b"x" * 900_000
    headers = dict(fit.headers)
    assert headers["original_size"] == b"1500000"
    assert headers["truncated"] == (b"kept 900000 of 1500000 bytes: dead-letter topic t takes "
                                    b"messages of at most 1000000 bytes")


def test_halving_is_bounded_below() -> None:
    assert halved(1_000_000) == 500_000
    assert halved(MIN_VALUE_BUDGET + 1) == MIN_VALUE_BUDGET
    assert halved(0) == MIN_VALUE_BUDGET


def test_marks_move_per_stream_and_only_forward() -> None:
    marks = Marks().after(Stage.TRANSFORM, dead(3, 7))
    assert marks == Marks(transform=8, sink=0)
    marks = marks.after(Stage.SINK, dead(1, 2)).after(Stage.TRANSFORM, dead(5))
    assert marks == Marks(transform=8, sink=3)
    assert marks.after(Stage.SINK, []) is marks


def test_a_sink_refusal_behind_the_transform_mark_is_still_due() -> None:
    # Transforms dead-lettered up to offset 160 while the chunk 100-150 was being delivered;
    # the receiver then refuses that chunk: its records are another stream's, not written yet.
    marks = Marks().after(Stage.TRANSFORM, dead(152, 160))
    assert [r.offset for r in pending(dead(100, 120, 149), Stage.SINK, marks)] == [100, 120, 149]
    assert pending(dead(152, 155), Stage.TRANSFORM, marks) == []
    assert [r.offset for r in pending(dead(159, 161), Stage.TRANSFORM, marks)] == [161]


def test_marks_round_trip_through_commit_metadata() -> None:
    marks = Marks(transform=42, sink=7)
    assert Marks.from_metadata(marks.metadata()) == marks
    for stored in (None, "", "garbage", "[]", '{"v":1}', '{"transform":"x","sink":1}'):
        assert Marks.from_metadata(stored) == Marks()


def test_file_marks_read_complete_lines_of_both_streams() -> None:
    lines = [b'{"offset": 3, "stage": "transform"}', b'{"offset": 9}',   # before streams
             b'{"offset": 5, "stage": "sink"}', b'not json', b'{"stage": "sink"}',
             b'{"offset": 1, "stage": "other"}']
    assert file_marks(lines) == Marks(transform=10, sink=6)


@given(st.lists(st.integers(0, 40), unique=True, max_size=30).map(sorted),
       st.integers(1, 8),
       st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), max_size=6))
def test_restarts_anywhere_write_every_dead_letter_once(
        offsets: list[int], batch: int, owners: list[tuple[int, int]]) -> None:
    """Owners in turn resume at some offset no later than what was read before (the committed
    offset lags behind the dead letters), write batches through `pending` with the marks they
    read, and crash after some batches; the last one runs to the end. Every dead letter is
    written exactly once, in order."""
    written: list[int] = []
    stored = Marks()        # what the destination holds: written atomically with the letters
    read_up_to = 0
    for resume, batches in [*owners, (0, len(offsets) + 1)]:
        todo = [o for o in offsets if o >= min(resume, read_up_to)]
        marks = stored      # read after fencing the previous owner
        for _ in range(batches):
            if not todo:
                break
            now, todo = dead(*todo[:batch]), todo[batch:]
            due = pending(now, Stage.TRANSFORM, marks)
            written.extend(r.offset for r in due)
            marks = stored = marks.after(Stage.TRANSFORM, due)
            read_up_to = max(read_up_to, now[-1].offset + 1)
    assert written == offsets
