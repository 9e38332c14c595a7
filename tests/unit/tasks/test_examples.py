"""Every example job in examples/ is a valid job spec (make dev submits them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.spec import parse_job_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_a_valid_job(path: Path) -> None:
    job = parse_job_spec(yaml.safe_load(path.read_text()))
    if job.sink.type == "iceberg":
        assert job.format.type == "parquet" and job.format.compression == "zstd"
