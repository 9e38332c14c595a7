"""The Iceberg catalogs an operator offers jobs, by name, and opening one with pyiceberg.

Catalogs are settings of the servers (which write data files and read the table's schema and
offsets) and of the masters (whose leader commits): `iceberg.catalogs.<name>`. A job names one
(tasks/iceberg/spec.py). Kinds:

- `sql`: pyiceberg's SQL catalog. On SQLite (`uri: sqlite:////var/lib/exportd/catalog.db`) it is
  the embedded default of `make dev` and the tests, usable when every process sees the file; on
  a real database (`postgresql+psycopg://…`) for a cluster.
- `rest`: an Iceberg REST catalog (`uri: https://…`).

The warehouse is `s3://bucket/prefix` (credentials and endpoint below) or `file:///path`. The
secret access key and any property named like a secret are never logged or shown (redacted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from tasks.errors import ConfigError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Access(_Model):
    """The warehouse's S3 endpoint and credentials; None: AWS's defaults."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


class CatalogSettings(_Model):
    type: Literal["sql", "rest"] = "sql"
    uri: str = Field(min_length=1)
    warehouse: str = Field(min_length=1)
    s3: S3Access = S3Access()
    # More pyiceberg catalog properties (e.g. a REST catalog's `token`); passed as they are.
    properties: dict[str, SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _warehouse(self) -> CatalogSettings:
        if not self.warehouse.startswith(("s3://", "file:///")):
            raise ValueError("warehouse is s3://bucket/prefix or file:///absolute/path")
        return self


class IcebergSettings(_Model):
    catalogs: dict[str, CatalogSettings] = Field(default_factory=dict)

    def catalog(self, name: str) -> CatalogSettings:
        """The named catalog; ConfigError naming the known ones when it is not configured."""
        found = self.catalogs.get(name)
        if found is None:
            known = ", ".join(sorted(self.catalogs)) or "none"
            raise ConfigError(f"iceberg catalog {name!r} is not configured on this process "
                              f"(iceberg.catalogs: {known})", catalog=name)
        return found


def catalog_properties(settings: CatalogSettings) -> dict[str, str]:
    """pyiceberg's properties for the catalog and its FileIO (secrets included: never log)."""
    props = {"uri": settings.uri, "warehouse": settings.warehouse, "type": settings.type}
    s3 = settings.s3
    if s3.endpoint_url:
        props["s3.endpoint"] = s3.endpoint_url
    props["s3.region"] = s3.region
    if s3.access_key_id:
        props["s3.access-key-id"] = s3.access_key_id
    if s3.secret_access_key is not None:
        props["s3.secret-access-key"] = s3.secret_access_key.get_secret_value()
    props.update({key: value.get_secret_value() for key, value in settings.properties.items()})
    return props


def open_catalog(name: str, settings: CatalogSettings) -> Catalog:
    """A pyiceberg catalog (imported here: pyiceberg is loaded only by processes that use it)."""
    from pyiceberg.catalog import load_catalog
    return load_catalog(name, **catalog_properties(settings))
