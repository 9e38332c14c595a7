"""A backtracking-prone `parse.regex` on hostile records cannot hold a task (issue 16, failure 4):
a real Kafka topic with records that make `(?P<x>(a+)+$)` take ~15 s each under Python's `re`
(28 bytes; doubling per byte) and one of 10,000 bytes (which never finishes there), between
records that match. With RE2 the task goes through all of them at once: the matching records
are exported, the others dead-lettered with the reason. pytest-timeout is the guard, not a
clock assertion."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    lines,
    produce,
    run_until_committed,
    runner,
    unique,
)

HOSTILE = [b"a" * 27 + b"!", b"a" * 9_999 + b"!"]


@pytest.mark.timeout(120)
async def test_hostile_records_do_not_hold_a_regex_task(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("redos"))
    values = [HOSTILE[i % 2] if i % 5 == 0 else b"a" * (i % 7 + 1) for i in range(100)]
    produce(kafka, topic, values)
    out, dlq = tmp_path / "out", tmp_path / "dlq"
    spec = job(topic, {"type": "file", "directory": str(out)},
               transform={"parse": {"format": "regex", "pattern": r"(?P<x>(a+)+$)"}},
               dead_letter={"type": "file", "directory": str(dlq)})
    r = runner(environment(kafka, tmp_path), spec)
    await run_until_committed(r, 100)

    exported = lines(p.read_bytes() for p in out.rglob("*.ndjson"))
    assert [e["x"] for e in exported] == [v.decode() for i, v in enumerate(values) if i % 5]
    dead = lines(p.read_bytes() for p in dlq.rglob("*.ndjson"))
    assert sorted(d["offset"] for d in dead) == list(range(0, 100, 5))
    assert all("does not match pattern" in d["reason"] for d in dead)
    assert r.stats().dead_letters_total == 20
