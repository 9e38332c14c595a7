"""A real task (tasks/sinks/iceberg.py, real Kafka) writes an Iceberg job's chunks; the leader's
committer commits them; a pyiceberg reader sees every record once — also through filters that
prune by the day and bucket partitions, which only works when each DataFile's partition record
is the report's values."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from master.iceberg.committer import TableCommitter
from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tasks.iceberg.layout import REPORTS_DIR
from tasks.iceberg.spec import IcebergSink
from tests.integration.iceberg.test_sink import COUNTRIES, _env, _job, _record, _store
from tests.integration.pipeline.kit import (
    create_topic,
    produce,
    run_until_committed,
    runner,
    unique,
)


@pytest.mark.parametrize("where", ["s3_catalog", "file_catalog"])
async def test_commit_what_a_real_task_wrote(kafka: str, tmp_path: Path, where: str,
                                             request: pytest.FixtureRequest) -> None:
    catalog: CatalogSettings = request.getfixturevalue(where)
    topic = create_topic(kafka, unique("icec"))
    n = 230
    produce(kafka, topic, [_record(i) for i in range(n)])
    spec = _job(topic, tmp_path)
    await run_until_committed(runner(_env(kafka, tmp_path, catalog), spec), n)
    sink = spec.sink
    assert isinstance(sink, IcebergSink)

    result = TableCommitter(spec.id, sink, catalog, epoch=1).round(lambda: None)
    assert not result.error and not result.refused and not result.blocked, result
    assert result.committed_records == n and result.pending.reports == 0
    table = open_catalog("test", catalog).load_table(sink.identifier)
    ids = [int(v) for v in pc.cast(table.scan().to_arrow()["id"], "int64").to_pylist()]
    assert len(ids) == len(set(ids)) == n and set(ids) == set(range(n))
    for country in COUNTRIES:     # pruned by the bucket partition: right values or lost rows
        rows = table.scan(row_filter=f"country == '{country}'").to_arrow()
        assert rows.num_rows == len([i for i in range(n) if COUNTRIES[i % 3] == country])
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.additional_properties[f"exportd.offset.0.{topic}"] == str(n)
    assert _store(spec, catalog).list(REPORTS_DIR) == []
