"""Tasks of one job creating its table at once (a real SQL catalog on SQLite): every one ends
with the one table, none fails on the namespace both found missing."""

from __future__ import annotations

import threading

import pyarrow as pa

from tasks.fence import WorkerFence
from tasks.iceberg.catalogs import CatalogSettings
from tasks.iceberg.spec import IcebergSink
from tasks.iceberg.tables import TableHandle

TASKS = 8


def test_tasks_creating_the_table_at_once_all_get_it(file_catalog: CatalogSettings) -> None:
    spec = IcebergSink(catalog="race", namespace="ns", table="t")
    schema = pa.schema([("id", pa.int64())])
    barrier = threading.Barrier(TASKS)
    locations: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        handle = TableHandle(spec, file_catalog)
        barrier.wait(timeout=30)
        try:
            locations.append(handle.create(schema, WorkerFence.unbounded()).location())
        except BaseException as exc:  # collected: the assertion shows every failure
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(TASKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(locations) == TASKS and len(set(locations)) == 1
