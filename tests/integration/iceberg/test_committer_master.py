"""The committer inside real masters (ZooKeeper election, the live view, the API's views): the
leader commits an Iceberg job's table, shows it in the job's `table` block, in explain and in
metrics, and a partition whose chunk cannot be committed makes its task `stalled` with the
reason. Chunks are written by the test at the layout's keys (tests/integration/iceberg/
test_committer.py); the servers are simulated (they report their tasks running)."""

from __future__ import annotations

import pyarrow as pa

from master.api.ports import TaskFilter
from master.metrics import REGISTRY
from tasks.iceberg.catalogs import CatalogSettings, IcebergSettings
from tasks.iceberg.warehouse import open_warehouse
from tasks.runner import task_id
from tasks.spec import parse_job_spec
from tests.integration.iceberg.test_committer import chunk, make_table
from tests.integration.master.conftest import (  # noqa: F401 - fixtures
    PARTITIONS,
    StartMaster,
    StartSim,
    start_master,
    start_sim,
    topic,
    until,
)


async def test_leader_commits_and_shows_the_table(
        start_master: StartMaster,  # noqa: F811 - the master tests' fixtures
        start_sim: StartSim, topic: str,  # noqa: F811
        file_catalog: CatalogSettings) -> None:
    iceberg = IcebergSettings(catalogs={"test": file_catalog})
    m1 = await start_master("m1", iceberg=iceberg)
    await m1.wait_leading(30)
    m2 = await start_master("m2", iceberg=iceberg)    # a standby: it must not commit
    await start_sim("s1")
    job = parse_job_spec({"id": "ice", "source": {"topic": topic}, "sink": {
        "type": "iceberg", "catalog": "test", "namespace": "ns", "table": "t",
        "partition_by": [{"field": "kp"}], "commit_interval": "0.3s"}})
    await m1.control.create_job(job)
    await until(lambda: {t.state for t in m1.control.list_tasks(TaskFilter(job="ice"))}
                == {"running"}, 90, "the job's tasks running")
    # No table yet: the block says so.
    await until(lambda: m1.control.get_job("ice").table is not None, 60, "a table block")
    assert m1.control.get_job("ice").table.exists is False   # type: ignore[union-attr]

    table = make_table(file_catalog)
    store = open_warehouse(table.location(), file_catalog)
    for p in range(PARTITIONS):
        chunk(store, p, 0, 10, topic=topic)

    def committed() -> bool:
        view = m1.control.get_job("ice").table
        return view is not None and view.committed_total == 10 * PARTITIONS

    await until(committed, 90, "the leader's commit")
    view = m1.control.get_job("ice").table
    assert view is not None and view.last_commit_unix is not None
    assert view.pending_reports == 0 and view.consecutive_errors == 0
    assert view.stalled_reason == ""
    assert m2.leadership is None

    # Partition 1's next chunk cannot be committed: its task is stalled, with the reason.
    bad = pa.table({"id": pa.array(["x"]), "name": ["a"], "kp": pa.array([1], pa.int32())})
    chunk(store, 1, 10, 11, rows=bad, topic=topic)
    chunk(store, 2, 10, 20, topic=topic)
    stalled = await until(lambda: [t for t in m1.control.list_tasks(TaskFilter(state="stalled"))
                                   if t.job == "ice"], 90, "a stalled task")
    assert [t.id for t in stalled] == [task_id("ice", topic, 1)]
    task = m1.control.get_task(stalled[0].id)
    assert "cannot be committed" in task.stalled_reason and "long -> string" in \
        task.stalled_reason, task.stalled_reason
    assert task.table is not None and list(task.table.blocked) == [f"{topic}/1"]
    await until(lambda: (m1.control.get_job("ice").table or view).committed_total
                == 10 * PARTITIONS + 10, 90, "partition 2's chunk committed")
    blocked = REGISTRY.get_sample_value("exportd_iceberg_blocked_partitions", {"job": "ice"})
    assert blocked == 1.0
    assert REGISTRY.get_sample_value("exportd_iceberg_last_commit_timestamp_seconds",
                                     {"job": "ice"})
