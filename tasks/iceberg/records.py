"""Records conformed to an Iceberg table, and their table partitions. Pure (no I/O).

A chunk's records are the exported dicts (JSON today; typed from the schema registry when a job
uses it). `conform` makes them fit the table's current schema:

- a field the table has a column for is cast to the column's Iceberg type (long, int, double,
  float, string, boolean, timestamptz, timestamp, date, and struct/list/map of those); a value
  that cannot be cast makes the record a **dead letter** with the reason
  (`field x: 'abc' is not a long (column x is long)`), as does a record that is not a JSON object
  or lacks a required column. The rest of the chunk is written.
- `timestamp_fields` are parsed (iso8601 / epoch_ms / epoch_s) into UTC datetimes (Iceberg
  timestamptz, microseconds), whether the table has their column yet or not.
- a field the table does not have is kept: it becomes a column of the data file, typed from all
  its values in the chunk as `formats.parquet_table` types them (JSON text when they share no
  type). The leader adds it to the table when it commits the file (union by name).
- a column the record lacks is null.

`arrow_table` builds the data file's columns (the table's, in table order, then the new ones),
and `partitions` groups rows by their table partition, with the values Iceberg computes
(pyiceberg's own transforms: identity, day, hour, murmur3 bucket) and Iceberg's partition path.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyiceberg.partitioning import PartitionField as IcebergPartitionField
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    Transform,
)
from pyiceberg.typedef import Record
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
)

from tasks.iceberg.spec import PartitionField

if TYPE_CHECKING:
    import pyarrow as pa

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
INT_RANGE = (-(2 ** 31), 2 ** 31 - 1)
LONG_RANGE = (-(2 ** 63), 2 ** 63 - 1)
TimestampFormats = Mapping[str, str]   # field -> iso8601 | epoch_ms | epoch_s


class CastError(ValueError):
    """A value that does not fit its column; the message is the dead letter's reason."""


@dataclass
class Conformed:
    """A chunk's records that fit the table: `rows[i]` is the record at chunk index `kept[i]`;
    `dead` holds (chunk index, reason) of the others; `new_fields` the fields the table has no
    column for, in order of first appearance."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)
    new_fields: list[str] = field(default_factory=list)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _not(value: Any, what: str, where: str, column_type: IcebergType) -> CastError:
    return CastError(f"field {where}: {_show(value)} is not {what} (column {where} is "
                     f"{column_type})")


def _integral(value: Any, bounds: tuple[int, int], what: str, where: str,
              column_type: IcebergType) -> int:
    if isinstance(value, bool):
        raise _not(value, what, where, column_type)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise _not(value, what, where, column_type)
    return value


def parse_timestamp(value: Any, fmt: str, where: str) -> dt.datetime:
    """A timestamp field's value as a UTC datetime (microseconds); CastError when it is not one
    in `fmt` (iso8601 strings without an offset are UTC)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    try:
        if fmt in ("epoch_ms", "epoch_s"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CastError(f"field {where}: {_show(value)} is not a timestamp in {fmt}")
            scale = 1000 if fmt == "epoch_ms" else 1_000_000
            micros = (value * scale if isinstance(value, int)
                      else round(value * scale))
            return EPOCH + dt.timedelta(microseconds=micros)
        if not isinstance(value, str):
            raise CastError(f"field {where}: {_show(value)} is not an iso8601 timestamp")
        when = dt.datetime.fromisoformat(value)
    except CastError:
        raise
    except (ValueError, OverflowError, TypeError) as exc:
        raise CastError(f"field {where}: {_show(value)} is not a timestamp in {fmt} "
                        f"({exc})") from exc
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def cast(value: Any, column_type: IcebergType, where: str) -> Any:
    """`value` as the Python value of `column_type` (None stays None); CastError otherwise."""
    if value is None:
        return None
    if isinstance(column_type, LongType):
        return _integral(value, LONG_RANGE, "a long", where, column_type)
    if isinstance(column_type, IntegerType):
        return _integral(value, INT_RANGE, "an int", where, column_type)
    if isinstance(column_type, DoubleType | FloatType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _not(value, "a number", where, column_type)
        return float(value)
    if isinstance(column_type, StringType):
        if isinstance(value, str):
            return value
        if isinstance(value, bytes):
            raise _not(value, "a string", where, column_type)
        # Numbers, booleans, objects and lists keep their value as JSON text.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(column_type, BooleanType):
        if not isinstance(value, bool):
            raise _not(value, "a boolean", where, column_type)
        return value
    if isinstance(column_type, TimestamptzType):
        return parse_timestamp(value, "iso8601", where)
    if isinstance(column_type, TimestampType):
        return parse_timestamp(value, "iso8601", where).replace(tzinfo=None)
    if isinstance(column_type, DateType):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            pass
        raise _not(value, "a date", where, column_type)
    if isinstance(column_type, BinaryType):
        if isinstance(value, bytes):
            return value
        raise _not(value, "bytes", where, column_type)
    if isinstance(column_type, StructType):
        if not isinstance(value, dict):
            raise _not(value, "an object", where, column_type)
        return {f.name: _field(value, f, f"{where}.{f.name}") for f in column_type.fields}
    if isinstance(column_type, ListType):
        if not isinstance(value, list):
            raise _not(value, "a list", where, column_type)
        return [cast(item, column_type.element_type, f"{where}[{i}]")
                for i, item in enumerate(value)]
    if isinstance(column_type, MapType):
        if not isinstance(value, dict):
            raise _not(value, "an object", where, column_type)
        return [(cast(k, column_type.key_type, f"{where} key"),
                 cast(v, column_type.value_type, f"{where}.{k}")) for k, v in value.items()]
    raise CastError(f"field {where}: column type {column_type} is not supported by exportd")


def _field(record: Mapping[str, Any], column: NestedField, where: str) -> Any:
    value = cast(record.get(column.name), column.field_type, where)
    if value is None and column.required:
        raise CastError(f"field {where} is missing (column {where} is required)")
    return value


Caster = Callable[[Any], Any]
# Iceberg primitive types whose values, already of this Python type, are taken as they are.
_EXACT: dict[str, type] = {"LongType": int, "IntegerType": int, "DoubleType": float,
                           "FloatType": float, "StringType": str, "BooleanType": bool}


def caster(column_type: IcebergType, where: str) -> Caster:
    """`cast` for one column, with the common case (the value already has the column's Python
    type) decided by one `type()` test per value: the type dispatch is done once per chunk."""
    exact = _EXACT.get(type(column_type).__name__)
    if exact is int:
        low, high = LONG_RANGE if isinstance(column_type, LongType) else INT_RANGE

        def integral(value: Any) -> Any:
            if type(value) is int and low <= value <= high:
                return value
            return cast(value, column_type, where)
        return integral
    if exact is not None:
        def plain(value: Any) -> Any:
            return value if type(value) is exact else cast(value, column_type, where)
        return plain
    return lambda value: cast(value, column_type, where)


@dataclass(frozen=True)
class _Column:
    name: str
    cast: Caster
    required: bool
    timestamp: str | None   # the timestamp field's format, when it is one


def _plan(schema: Schema, timestamps: TimestampFormats) -> list[_Column]:
    return [_Column(f.name, caster(f.field_type, f.name), f.required, timestamps.get(f.name))
            for f in schema.fields]


def _conform_one(record: Any, plan: Sequence[_Column], known: frozenset[str],
                 timestamps: TimestampFormats) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise CastError(f"the record is not a JSON object: {_show(record)}")
    row: dict[str, Any] = {}
    for column in plan:
        value = record.get(column.name)
        if value is None:
            if column.required:
                raise CastError(f"field {column.name} is missing (column {column.name} is "
                                f"required)")
        else:
            if column.timestamp is not None:
                value = parse_timestamp(value, column.timestamp, column.name)
            value = column.cast(value)
        row[column.name] = value
    if not known.issuperset(record):
        for name, value in record.items():
            if name in known:
                continue
            fmt = timestamps.get(name)
            row[name] = (parse_timestamp(value, fmt, name)
                         if fmt is not None and value is not None else value)
    return row


def conform_one(record: Any, schema: Schema, timestamps: TimestampFormats) -> dict[str, Any]:
    """One record as a row of the table (new fields kept as they are); CastError otherwise."""
    return _conform_one(record, _plan(schema, timestamps),
                        frozenset(f.name for f in schema.fields), timestamps)


def conform(records: Sequence[Any], schema: Schema, timestamps: TimestampFormats) -> Conformed:
    """The chunk's records against the table's schema (see the module docstring)."""
    out = Conformed()
    plan = _plan(schema, timestamps)
    known = frozenset(f.name for f in schema.fields)
    new: dict[str, None] = {}
    for index, record in enumerate(records):
        try:
            row = _conform_one(record, plan, known, timestamps)
        except CastError as exc:
            out.dead.append((index, str(exc)))
            continue
        out.rows.append(row)
        out.kept.append(index)
        if len(row) > len(plan):
            new.update(dict.fromkeys(name for name in row if name not in known))
    out.new_fields = list(new)
    return out


def arrow_table(conformed: Conformed, schema: Schema, timestamps: TimestampFormats) -> pa.Table:
    """The data file's columns: every table column (typed as the table has it, null where a
    record lacks it), then the new fields (timestamp fields as timestamptz, the others typed
    from their values as `formats.parquet_table` does). No Iceberg field ids: the table's name
    mapping resolves columns by name."""
    import pyarrow as pa
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    from tasks.formats import parquet_table

    rows = conformed.rows
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    arrays: list[pa.Array] = []
    names: list[str] = []
    for column in arrow:   # every row has every table column (conform)
        name = column.name
        arrays.append(pa.array([row[name] for row in rows], type=column.type))
        names.append(column.name)
    stamped = [n for n in conformed.new_fields if n in timestamps]
    for name in stamped:
        arrays.append(pa.array([row.get(name) for row in rows],
                               type=pa.timestamp("us", tz="UTC")))
        names.append(name)
    others = [n for n in conformed.new_fields if n not in timestamps]
    if others:
        inferred = parquet_table([{n: row.get(n) for n in others} for row in rows])
        for name in others:
            arrays.append(inferred.column(name).combine_chunks())
            names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def writable_table(conformed: Conformed, schema: Schema,
                   timestamps: TimestampFormats) -> pa.Table:
    """`arrow_table`, and should pyarrow refuse a value the casts let through, the rows it
    refuses moved to `conformed.dead` (found row by row: rare, so it may be slow) rather than
    failing the chunk again and again."""
    import pyarrow as pa

    refused = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError,
               ValueError, TypeError)
    try:
        return arrow_table(conformed, schema, timestamps)
    except refused:
        pass
    keep: list[int] = []
    for i, row in enumerate(conformed.rows):
        try:
            arrow_table(Conformed([row], [conformed.kept[i]], [], conformed.new_fields), schema,
                        timestamps)
            keep.append(i)
        except refused as exc:
            conformed.dead.append((conformed.kept[i],
                                   f"cannot be written in the table's columns: {exc}"))
    conformed.dead.sort()
    conformed.rows = [conformed.rows[i] for i in keep]
    conformed.kept = [conformed.kept[i] for i in keep]
    return arrow_table(conformed, schema, timestamps)


# -- partitions ---------------------------------------------------------------------------

def transform_of(part: PartitionField) -> Transform[Any, Any]:
    if part.transform == "day":
        return DayTransform()
    if part.transform == "hour":
        return HourTransform()
    if part.transform == "bucket":
        assert part.buckets is not None
        return BucketTransform(part.buckets)
    return IdentityTransform()


def partition_spec(schema: Schema, partition_by: Sequence[PartitionField]) -> PartitionSpec:
    """The job's partition spec against `schema` (whose columns hold every source field)."""
    fields = [IcebergPartitionField(source_id=schema.find_field(part.field).field_id,
                                    field_id=1000 + i, transform=transform_of(part),
                                    name=part.name)
              for i, part in enumerate(partition_by)]
    return PartitionSpec(*fields)


def spec_shape(spec: PartitionSpec, schema: Schema) -> list[tuple[str, str, str]]:
    """(source column, transform, name) of each field: what a job's spec must equal."""
    out = []
    for part in spec.fields:
        source = schema.find_column_name(part.source_id) or f"#{part.source_id}"
        out.append((source, str(part.transform), part.name))
    return out


def _memoized(transform: Transform[Any, Any], func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """pyiceberg's transform, called once per distinct input: per value for identity and bucket,
    per UTC date (day) or UTC hour (hour) of a timestamp, whose result depends on nothing else.
    A chunk has few distinct partitions, and the transforms cost microseconds each."""
    memo: dict[Any, Any] = {}
    if isinstance(transform, DayTransform | HourTransform):
        by_hour = isinstance(transform, HourTransform)

        def when(value: Any) -> Any:
            if not isinstance(value, dt.datetime):
                return func(value)
            utc = value if value.tzinfo is None else value.astimezone(dt.UTC)
            key = (utc.year, utc.month, utc.day, utc.hour if by_hour else 0)
            found = memo.get(key)
            if found is None:
                found = memo[key] = func(value)
            return found
        return when

    def each(value: Any) -> Any:
        try:
            return memo[value]
        except KeyError:
            found = memo[value] = func(value)
            return found
        except TypeError:   # unhashable (not a partition source type): as it is
            return func(value)
    return each


def json_value(value: Any) -> Any:
    """A partition value as the report's JSON holds it: Iceberg's internal representation
    (dates as days, timestamps as microseconds since the epoch)."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return (aware - EPOCH) // dt.timedelta(microseconds=1)
    if isinstance(value, dt.date):
        return (value - EPOCH.date()).days
    return value


@dataclass(frozen=True)
class TablePartition:
    path: str                    # Iceberg's `name=value/...` ('' when unpartitioned)
    values: dict[str, Any]       # partition field name -> value (JSON)
    rows: list[int]              # indexes into Conformed.rows, in order


def partitions(rows: Sequence[Mapping[str, Any]], schema: Schema,
               spec: PartitionSpec) -> list[TablePartition]:
    """The rows grouped by table partition, in path order. Values come from pyiceberg's
    transforms of the conformed values, so they equal what Iceberg computes."""
    if not spec.fields:
        return [TablePartition("", {}, list(range(len(rows))))]
    funcs: list[tuple[str, str, Callable[[Any], Any]]] = []
    for part in spec.fields:
        source = schema.find_field(part.source_id)
        funcs.append((source.name, part.name,
                      _memoized(part.transform, part.transform.transform(source.field_type))))
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, row in enumerate(rows):
        key = tuple(func(row.get(source)) for source, _, func in funcs)
        groups.setdefault(key, []).append(index)
    out = [TablePartition(spec.partition_to_path(Record(*key), schema),
                          {name: json_value(v) for (_, name, _), v in zip(funcs, key, strict=True)},
                          indexes)
           for key, indexes in groups.items()]
    return sorted(out, key=lambda p: p.path)
