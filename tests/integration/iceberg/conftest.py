"""Real Iceberg catalogs for tests: pyiceberg's SQL catalog on a SQLite file (the embedded
catalog of `make dev`), with its warehouse on moto's S3 server or on the local file system."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from tasks.iceberg.catalogs import CatalogSettings, S3Access


@pytest.fixture
def s3_catalog(s3: str, tmp_path: Path) -> CatalogSettings:
    """A SQL catalog (SQLite in tmp_path) whose warehouse is a fresh bucket on moto."""
    bucket = f"wh-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    return CatalogSettings.model_validate({
        "type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": f"s3://{bucket}/wh",
        "s3": S3Access(endpoint_url=s3, access_key_id="test",
                       secret_access_key="test").model_dump()})  # type: ignore[arg-type]


@pytest.fixture
def file_catalog(tmp_path: Path) -> CatalogSettings:
    """A SQL catalog (SQLite in tmp_path) whose warehouse is a local directory."""
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    return CatalogSettings(type="sql", uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                           warehouse=f"file://{warehouse}")
