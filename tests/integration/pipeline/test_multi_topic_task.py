"""A task of a multi-topic job reads the topic of its id (not the spec's first or only topic),
names its files after it, and says so in `_topic`."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.factory import build_runner
from tasks.runner import Assignment, task_id
from tasks.spec import parse_job_spec
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    produce,
    run_until_committed,
    unique,
)


async def test_each_task_reads_its_own_topic(kafka: str, tmp_path: Path) -> None:
    prefix = unique("mtt")
    a, b = create_topic(kafka, f"{prefix}.a"), create_topic(kafka, f"{prefix}.b")
    produce(kafka, a, (f"a{i}".encode() for i in range(10)))
    produce(kafka, b, (json.dumps({"n": i}).encode() for i in range(25)))
    spec = parse_job_spec({
        "id": "multi", "source": {"topic_pattern": rf"{prefix}\..*"},
        "transform": {"parse": {"format": "json"}, "add_fields": {"source": True}},
        "sink": {"type": "file", "directory": str(tmp_path / "out")}})
    runner = build_runner(environment(kafka, tmp_path),
                          Assignment(task_id("multi", b, 0), 1, spec, 0, job_tasks=2))
    await run_until_committed(runner, 25)
    files = sorted((tmp_path / "out").rglob("*.ndjson"))
    assert files and all(f.name.startswith(f"{b}+0+") for f in files), files
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [r["n"] for r in records] == list(range(25))
    assert {r["_topic"] for r in records} == {b}
