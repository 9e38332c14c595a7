"""A task's Iceberg table: the catalog (one per process and catalog), loading the table, and
creating it when it is missing. Blocking I/O; callers run it in a thread.

The task creates the table (it needs the table's location to write its files): the schema of
its first chunk's conformed records, plus a column for every partition source field and every
timestamp field (timestamptz) the chunk lacked; the partition spec from the job; and the name
mapping (`schema.name-mapping.default`) that lets readers resolve the columns of data files that
carry no Iceberg field ids. Two tasks creating it at once both end with the one table
(`create_table_if_not_exists`). Everything else that changes the table — snapshots, schema
evolution and its name mapping — is the leader's (master/iceberg/).

A table that exists with another partition spec than the job's fails the task (a non-retryable
SinkError naming both): its files would land in partitions the leader cannot commit.

The schema is re-read at most once per `commit_interval` (the leader evolves it at commits), so
a column the leader added is cast like the others from then on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tasks.errors import SinkError
from tasks.fence import WorkerFence
from tasks.iceberg.catalogs import CatalogSettings, open_catalog
from tasks.iceberg.layout import Offsets, offsets_from_summary
from tasks.iceberg.records import partition_spec, spec_shape, transform_of
from tasks.iceberg.spec import IcebergSink
from tasks.logs import get_logger

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

NAME_MAPPING = "schema.name-mapping.default"
# A parent walk to the last snapshot of exportd's is bounded (snapshot expiry keeps few).
MAX_PARENTS = 10_000

log = get_logger(__name__)

_catalogs: dict[tuple[str, str, str], Catalog] = {}
_catalogs_lock = threading.Lock()


def catalog_for(name: str, settings: CatalogSettings) -> Catalog:
    """The process's catalog client of that name and settings (opened once)."""
    key = (name, settings.uri, settings.warehouse)
    with _catalogs_lock:
        found = _catalogs.get(key)
        if found is None:
            try:
                found = _catalogs[key] = open_catalog(name, settings)
            except Exception as exc:
                raise _error(f"cannot open iceberg catalog {name!r}", exc) from exc
        return found


def _error(what: str, exc: BaseException) -> SinkError:
    """A catalog failure: retryable (the database or REST service may come back)."""
    return SinkError(f"{what}: {type(exc).__name__}: {exc}", retryable=True)


def wanted_shape(spec: IcebergSink) -> list[tuple[str, str, str]]:
    return [(p.field, str(transform_of(p)), p.name) for p in spec.partition_by]


def check_spec(table: Table, spec: IcebergSink) -> None:
    """SinkError (not retryable) when the table's partition spec is not the job's."""
    have = spec_shape(table.spec(), table.schema())
    want = wanted_shape(spec)
    if have != want:
        def show(shape: list[tuple[str, str, str]]) -> str:
            return ", ".join(f"{t}({s})" for s, t, _ in shape) or "unpartitioned"
        raise SinkError(f"iceberg table {'.'.join(spec.identifier)} has the partition spec "
                        f"[{show(have)}], the job [{show(want)}]: drop the table or change "
                        f"the job's partition_by", retryable=False)


def creation_schema(arrow: pa.Schema, spec: IcebergSink) -> pa.Schema:
    """The first chunk's columns plus every timestamp field (timestamptz) and partition source
    field (string, when nothing says otherwise) it lacked."""
    import pyarrow as pa

    fields = list(arrow)
    have = {f.name for f in fields}
    for name in spec.timestamp_fields:
        if name not in have:
            fields.append(pa.field(name, pa.timestamp("us", tz="UTC")))
            have.add(name)
    for part in spec.partition_by:
        if part.field not in have:
            fields.append(pa.field(part.field, pa.string()))
            have.add(part.field)
    return pa.schema(fields)


# The leader commits every commit_interval: merge manifests (at 100, pyiceberg's default) so
# their number stays bounded (master/iceberg/committer.py appends with merge_append).
TABLE_PROPERTIES = {"commit.manifest-merge.enabled": "true"}


class TableHandle:
    """One job's table, as a task sees it."""

    def __init__(self, spec: IcebergSink, settings: CatalogSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec, self.settings, self.clock = spec, settings, clock
        self._table: Table | None = None
        self._loaded_at = float("-inf")

    @property
    def name(self) -> str:
        return ".".join(self.spec.identifier)

    def catalog(self) -> Catalog:
        return catalog_for(self.spec.catalog, self.settings)

    def load(self) -> Table | None:
        """The table, re-read when the last read is older than the commit interval; None
        when it does not exist."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        now = self.clock()
        if self._table is not None and now - self._loaded_at < self.spec.commit_interval:
            return self._table
        try:
            table = self.catalog().load_table(self.spec.identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None
        except SinkError:
            raise
        except Exception as exc:
            raise _error(f"cannot load iceberg table {self.name}", exc) from exc
        check_spec(table, self.spec)
        self._table, self._loaded_at = table, now
        return table

    def create(self, arrow: pa.Schema, fence: WorkerFence) -> Table:
        """Create the table (when still missing) from a chunk's columns; the table."""
        from pyiceberg.catalog import Catalog as CatalogBase
        from pyiceberg.schema import assign_fresh_schema_ids

        schema = assign_fresh_schema_ids(
            CatalogBase._convert_schema_if_needed(creation_schema(arrow, self.spec)))
        try:
            partitions = partition_spec(schema, self.spec.partition_by)
        except ValueError as exc:
            raise SinkError(f"iceberg table {self.name}: the job's partition_by does not fit "
                            f"the records: {exc}", retryable=False) from exc
        catalog = self.catalog()
        fence.check("iceberg create table")
        try:
            try:
                catalog.create_namespace_if_not_exists(self.spec.namespace)
            except Exception:
                # Another task created it between the SQL catalog's check and its insert (it
                # raises the database's IntegrityError, not NamespaceAlreadyExistsError).
                if not catalog.namespace_exists(self.spec.namespace):
                    raise
            table = catalog.create_table_if_not_exists(self.spec.identifier, schema=schema,
                                                       partition_spec=partitions,
                                                       properties=TABLE_PROPERTIES)
        except Exception as exc:
            raise _error(f"cannot create iceberg table {self.name}", exc) from exc
        log.info("iceberg_table_ready", table=self.name, location=table.location())
        table = self._with_name_mapping(table, fence)
        check_spec(table, self.spec)
        self._table, self._loaded_at = table, self.clock()
        return table

    def _with_name_mapping(self, table: Table, fence: WorkerFence) -> Table:
        """Set the name mapping of a table that has none (just created); another task setting
        it at the same time is fine (the commit that loses re-reads and finds it)."""
        from pyiceberg.exceptions import CommitFailedException
        from pyiceberg.table.name_mapping import create_mapping_from_schema

        for _ in range(5):
            if NAME_MAPPING in table.properties:
                return table
            mapping = create_mapping_from_schema(table.schema()).model_dump_json()
            fence.check("iceberg table properties")
            try:
                with table.transaction() as tx:
                    tx.set_properties({NAME_MAPPING: mapping})
            except CommitFailedException:
                pass
            except Exception as exc:
                raise _error(f"cannot set the name mapping of {self.name}", exc) from exc
            try:
                table = self.catalog().load_table(self.spec.identifier)
            except Exception as exc:
                raise _error(f"cannot load iceberg table {self.name}", exc) from exc
        raise SinkError(f"iceberg table {self.name}: its name mapping could not be set",
                        retryable=True)


def table_offsets(table: Table) -> Offsets | None:
    """The offsets of the table's last exportd commit: the current snapshot's summary, or its
    parents' when the current one is not exportd's (a compaction by another engine, a manual
    write). None when no snapshot of exportd's is found."""
    snapshot = table.current_snapshot()
    for _ in range(MAX_PARENTS):
        if snapshot is None:
            return None
        summary: Mapping[str, Any] = (snapshot.summary.additional_properties
                                      if snapshot.summary is not None else {})
        found = offsets_from_summary({str(k): str(v) for k, v in summary.items()})
        if found is not None:
            return found
        if snapshot.parent_snapshot_id is None:
            return None
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
    return None


def without_retries(table: Table) -> Table:
    """The table with pyiceberg's automatic commit retries off (in memory; the catalog keeps
    its own properties), for the leader's commits (master/iceberg/). A retry after a conflict
    would re-parent the commit, planned on the OLD snapshot (its offsets, its compaction), onto
    the new one: chunks another leader just committed would be appended twice. A conflict must
    end the attempt; the round plans again."""
    from pyiceberg.table import Table as _Table
    from pyiceberg.table import TableProperties
    props = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    meta = table.metadata.model_copy(update={"properties": props})
    return _Table(table.name(), meta, table.metadata_location, table.io, table.catalog,
                  table.config)
