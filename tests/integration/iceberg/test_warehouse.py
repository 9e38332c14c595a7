"""The create-only store of a table location, on moto's S3 and on files, and a real catalog."""

from __future__ import annotations

import pytest

from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tasks.iceberg.warehouse import open_warehouse


@pytest.mark.parametrize("which", ["s3_catalog", "file_catalog"])
def test_put_once_refuses_a_second_write(which: str, request: pytest.FixtureRequest) -> None:
    settings: CatalogSettings = request.getfixturevalue(which)
    store = open_warehouse(f"{settings.warehouse}/ns.db/t", settings)
    assert store.put_once("_exportd/reports/a.json", b"one")
    assert not store.put_once("_exportd/reports/a.json", b"two")
    assert store.read("_exportd/reports/a.json") == b"one"
    assert store.read("_exportd/reports/missing.json") is None
    assert [i.key for i in store.list("_exportd/reports")] == ["_exportd/reports/a.json"]
    assert store.key_of(store.uri("data/x.parquet")) == "data/x.parquet"
    store.delete(["_exportd/reports/a.json"])
    assert store.list("_exportd/reports") == []


@pytest.mark.parametrize("which", ["s3_catalog", "file_catalog"])
def test_catalog_creates_a_table_in_the_warehouse(which: str,
                                                  request: pytest.FixtureRequest) -> None:
    import pyarrow as pa
    settings: CatalogSettings = request.getfixturevalue(which)
    catalog = open_catalog("test", settings)
    catalog.create_namespace_if_not_exists("ns")
    table = catalog.create_table_if_not_exists(("ns", "t"), schema=pa.schema([("id", pa.int64())]))
    table.append(pa.table({"id": pa.array([1, 2], pa.int64())}))
    assert table.scan().to_arrow().num_rows == 2
    assert table.location().startswith(settings.warehouse)
