"""The file sink's root on a real file system: a relative directory lands below the root, and a
directory that leads out of it through a symlink is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.egress import EgressRefused
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    json_records,
    produce,
    run_until_committed,
    runner,
    unique,
)


async def test_a_relative_directory_lands_below_the_root(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("root"))
    produce(kafka, topic, json_records(0, 20))
    spec = job(topic, {"type": "file", "directory": "exports/a"}, rotation={"max_records": 10})
    await run_until_committed(runner(environment(kafka, tmp_path), spec), 20)
    assert len(list((tmp_path / "exports" / "a").rglob("*.ndjson"))) == 2


def test_a_symlink_out_of_the_root_is_refused(kafka: str, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    for sink, dead in [({"type": "file", "directory": "link/x"}, None),
                       ({"type": "s3", "bucket": "bkt"}, {"type": "file", "directory": "link"})]:
        spec = job("t", sink, **({"dead_letter": dead} if dead else {}))
        with pytest.raises(EgressRefused, match="leads outside the file root"):
            runner(environment(kafka, tmp_path), spec)
    assert list(outside.iterdir()) == []
