"""Directories from record content (tasks/partitioning.py), the chunk split and claims
(tasks/sinks/partitioned.py), and the Batcher's cut at a claimed end: pure logic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.batching import Batcher, Chunk, Limits
from tasks.errors import RecordError, ValidationError
from tasks.partitioning import PathRenderer, check_template, segment
from tasks.sinks.partitioned import claim_conflict, claim_name, split
from tasks.spec import Partitioning, parse_job_spec
from tasks.transforms.batch import Columns, TransformOutput

T0 = 1_796_464_800_000   # 2026-12-05T10:00:00Z


@pytest.mark.parametrize(("value", "expected"), [
    ("eu", "eu"), ("a/b", "a%2Fb"), ("..", "%2E."), ("../x", "%2E.%2Fx"), ("", "_empty_"),
    (None, "null"), (7, "7"), (True, "true"), ({"a": 1}, "%7B%22a%22:1%7D"), ("ü", "%C3%BC"),
])
def test_a_value_is_one_safe_segment(value: Any, expected: str) -> None:
    assert segment(value) == expected
    assert "/" not in segment(value) and segment(value) not in (".", "..")


def test_templates_are_checked() -> None:
    check_template("{topic}/k={field:customer.region}/dt={dt}/h={hour}")
    for bad in ("{nope}", "{field}", "{field:a[}", "{dt:%Y}", "{topic!r}", "{"):
        with pytest.raises(ValueError):
            check_template(bad)


def test_event_time_zone_and_lateness() -> None:
    spec = Partitioning(time_field="at", time_format="epoch_ms", time_zone="Asia/Tokyo",
                        lateness=3600, late_prefix="late")
    renderer = PathRenderer("r={field:r}/dt={dt}/h={hour}", "t", 0, spec)
    # 10:00 UTC is 19:00 in Tokyo; arriving 30 min later is on time, 2 h later is late.
    assert renderer.path({"r": "eu", "at": T0}, T0 + 1_800_000) == "r=eu/dt=2026-12-05/h=19"
    assert renderer.path({"r": "eu", "at": T0}, T0 + 7_200_000) == \
        "late/r=eu/dt=2026-12-05/h=19"
    with pytest.raises(RecordError, match="missing"):
        renderer.path({"r": "eu"}, T0)
    with pytest.raises(RecordError, match="not epoch milliseconds"):
        renderer.path({"at": "soon"}, T0)
    iso = PathRenderer("{dt}/{hour}", "t", 0, Partitioning(time_field="ts"))
    assert iso.path({"ts": "2026-12-05T23:59:59+01:00"}, 0) == "2026-12-05/22"
    pattern = PathRenderer("{dt}", "t", 0, Partitioning(time_field="ts",
                                                         time_format="%d/%b/%Y:%H:%M:%S"))
    assert pattern.path({"ts": "05/Dec/2026:10:00:00"}, 0) == "2026-12-05"
    # Without a time field: the Kafka timestamp.
    assert PathRenderer("{dt}", "t", 0, None).path({}, T0) == "2026-12-05"


def test_the_spec_accepts_partitioning_and_refuses_csv_with_it() -> None:
    base = {"id": "j", "source": {"topic": "t"}}
    spec = parse_job_spec({**base, "sink": {"type": "s3", "bucket": "bkt",
                                            "path": "r={field:r}",
                                            "partitioning": {"time_field": "at"}}})
    assert spec.sink.partitioning is not None   # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="CSV line cannot be read back"):
        parse_job_spec({**base, "sink": {"type": "s3", "bucket": "bkt", "path": "{field:r}"},
                        "format": {"type": "csv", "columns": ["r"]}})
    with pytest.raises(ValidationError, match="unknown time zone"):
        parse_job_spec({**base, "sink": {"type": "file", "directory": "d",
                                         "partitioning": {"time_zone": "Mars/Base"}}})


def _chunk(records: list[dict[str, Any]], start: int = 10) -> Chunk:
    chunk = Chunk(start, start + len(records))
    chunk.rows.offsets.extend(range(start, start + len(records)))
    chunk.rows.timestamps.extend([T0] * len(records))
    chunk.rows.values.extend(json.dumps(r).encode() for r in records)
    chunk.records = len(records)
    return chunk


def test_split_groups_in_offset_order_and_dead_letters_what_has_no_path() -> None:
    renderer = PathRenderer("k={field:k}", "t", 3, Partitioning(time_field="at"))
    chunk = _chunk([{"k": "b", "at": "2026-12-05T10:00:00Z"}, {"k": "a", "at": "x"},
                    {"k": "a", "at": "2026-12-05T10:00:00Z"},
                    {"k": "b", "at": "2026-12-05T11:00:00Z"}])
    files, dead = split(chunk, renderer, "ndjson")
    name = "t+3+00000000000000000010.ndjson"
    assert [(path, len(items)) for path, items in files] == [(f"k=a/{name}", 1),
                                                             (f"k=b/{name}", 2)]
    assert json.loads(files[1][1][1])["at"] == "2026-12-05T11:00:00Z"  # type: ignore[arg-type]
    assert [(d.offset, d.reason.split(":")[0]) for d in dead] == [(11, "partitioning")]
    assert claim_name("t", 3, 10) == "_exportd/claims/t+3+00000000000000000010.claim"


def test_a_claim_decides_the_chunk() -> None:
    chunk = _chunk([{"k": 1}] * 5)
    assert claim_conflict("c", chunk, chunk.end_offset) is None     # ours, or the same cut
    assert claim_conflict("c", chunk, None) is None                 # a store that replaced it
    conflict = claim_conflict("c", chunk, 12)
    assert conflict is not None and (conflict.start_offset, conflict.end_offset) == (10, 12)


def _batch(offsets: list[int]) -> TransformOutput:
    out = TransformOutput()
    out.records = Columns(list(offsets), [T0] * len(offsets), [b"x"] * len(offsets))
    return out


def test_the_batcher_cuts_a_claimed_chunk_exactly_at_its_end() -> None:
    # Limits would close after 2 records; the claim says [0, 5).
    batcher = Batcher(Limits(max_records=2, max_bytes=None, max_seconds=1.0), 0,
                      hold_empty=True, cut_at=5)
    assert batcher.add(_batch([0, 1, 2]), 3, now=0.0) == []
    assert not batcher.due(now=100.0) and batcher.flush() is None
    closed = batcher.add(_batch([3, 4, 5, 6, 7]), 8, now=0.0)
    assert [(c.start_offset, c.end_offset, c.records) for c in closed] == [(0, 5, 5), (5, 7, 2)]
    # After the claimed chunk the limits apply again.
    assert batcher.current.start_offset == 7 and batcher.cut_at is None


def test_a_claimed_end_in_a_gap_of_offsets_is_cut_there() -> None:
    batcher = Batcher(Limits(max_records=100, max_bytes=None, max_seconds=None), 0,
                      hold_empty=True, cut_at=4)
    assert batcher.add(_batch([0, 1]), 2, now=0.0) == []
    (claimed,) = batcher.add(_batch([6]), 7, now=0.0)    # offsets 2-5 were compacted away
    assert (claimed.start_offset, claimed.end_offset, claimed.records) == (0, 4, 2)
    assert batcher.current.start_offset == 4 and batcher.current.records == 1
