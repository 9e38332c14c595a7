"""Records conformed to an Iceberg table (tasks/iceberg/records.py): casts, dead-letter reasons,
new fields, timestamp fields, and partition values and paths as Iceberg computes them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import BucketTransform, DayTransform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from tasks.iceberg.records import (
    CastError,
    arrow_table,
    cast,
    conform,
    json_value,
    parse_timestamp,
    partition_spec,
    partitions,
    spec_shape,
)
from tasks.iceberg.spec import PartitionField

SCHEMA = Schema(
    NestedField(1, "id", LongType()),
    NestedField(2, "ts", TimestamptzType()),
    NestedField(3, "country", StringType()),
    NestedField(4, "n", StructType(NestedField(5, "a", IntegerType()))),
    NestedField(6, "tags", ListType(7, StringType())),
    NestedField(8, "ok", BooleanType()),
    NestedField(9, "amount", DoubleType()),
)
UTC = dt.UTC


@pytest.mark.parametrize(("value", "column", "expected"), [
    (5, LongType(), 5),
    (5.0, LongType(), 5),
    (2 ** 40, LongType(), 2 ** 40),
    (7, IntegerType(), 7),
    (3, DoubleType(), 3.0),
    (2.5, DoubleType(), 2.5),
    ("x", StringType(), "x"),
    (12, StringType(), "12"),
    ({"a": [1]}, StringType(), '{"a":[1]}'),
    (True, BooleanType(), True),
    ("2026-12-05", DateType(), dt.date(2026, 12, 5)),
    ("2026-12-05T10:00:00+01:00", TimestamptzType(),
     dt.datetime(2026, 12, 5, 9, 0, tzinfo=UTC)),
    ({"a": 1, "b": 2}, StructType(NestedField(5, "a", IntegerType())), {"a": 1}),
    ([1, None], ListType(7, LongType()), [1, None]),
    ({"k": 1}, MapType(10, StringType(), 11, LongType()), [("k", 1)]),
    (None, LongType(), None),
])
def test_values_cast_to_their_column(value: Any, column: Any, expected: Any) -> None:
    assert cast(value, column, "x") == expected


@pytest.mark.parametrize(("value", "column", "reason"), [
    ("abc", LongType(), "field x: 'abc' is not a long (column x is long)"),
    (True, LongType(), "field x: True is not a long (column x is long)"),
    (1.5, LongType(), "field x: 1.5 is not a long (column x is long)"),
    (2 ** 63, LongType(), "is not a long"),
    (2 ** 31, IntegerType(), "field x: 2147483648 is not an int (column x is int)"),
    ("1.5", DoubleType(), "field x: '1.5' is not a number (column x is double)"),
    (1, BooleanType(), "field x: 1 is not a boolean (column x is boolean)"),
    ("yesterday", TimestamptzType(), "field x: 'yesterday' is not a timestamp in iso8601"),
    ({"a": "z"}, StructType(NestedField(5, "a", IntegerType())),
     "field x.a: 'z' is not an int (column x.a is int)"),
    ([1, "b"], ListType(7, LongType()), "field x[1]: 'b' is not a long"),
    ("x", ListType(7, LongType()), "field x: 'x' is not a list"),
])
def test_a_value_that_does_not_fit_says_why(value: Any, column: Any, reason: str) -> None:
    with pytest.raises(CastError) as caught:
        cast(value, column, "x")
    assert reason in str(caught.value)


def test_timestamp_fields_parse_in_their_format_into_utc_microseconds() -> None:
    at = dt.datetime(2026, 12, 5, 10, 0, 0, 123000, tzinfo=UTC)
    assert parse_timestamp(1796464800123, "epoch_ms", "t") == at
    assert parse_timestamp(1796464800.123, "epoch_s", "t") == at
    assert parse_timestamp("2026-12-05T10:00:00.123Z", "iso8601", "t") == at
    assert parse_timestamp("2026-12-05T11:00:00.123+01:00", "iso8601", "t") == at
    assert parse_timestamp("2026-12-05T10:00:00.123", "iso8601", "t") == at   # naive: UTC
    with pytest.raises(CastError, match="is not a timestamp in epoch_ms"):
        parse_timestamp("2026-12-05", "epoch_ms", "t")
    with pytest.raises(CastError, match="is not an iso8601 timestamp"):
        parse_timestamp(5, "iso8601", "t")


def test_conform_keeps_fitting_records_and_dead_letters_the_others() -> None:
    records = [
        {"id": 1, "ts": 1796464800000, "country": "de", "coupon": "A"},
        {"id": "abc", "ts": 1796464800000},
        7,
        {"id": 2, "ts": "not a time"},
        {"id": 3, "extra": {"deep": 1}},
    ]
    out = conform(records, SCHEMA, {"ts": "epoch_ms"})
    assert out.kept == [0, 4]
    assert out.dead == [
        (1, "field id: 'abc' is not a long (column id is long)"),
        (2, "the record is not a JSON object: 7"),
        (3, "field ts: 'not a time' is not a timestamp in epoch_ms"),
    ]
    assert out.new_fields == ["coupon", "extra"]
    first = out.rows[0]
    assert first["ts"] == dt.datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert first["n"] is None and first["tags"] is None   # missing: null
    assert out.rows[1]["ts"] is None


def test_the_file_has_every_table_column_then_the_new_fields_typed_from_their_values() -> None:
    records = [{"id": 1, "coupon": 5, "seen": "2026-12-05T10:00:00Z"},
               {"id": 2, "coupon": 6.5, "mixed": 1},
               {"id": 3, "mixed": "x", "empty": None}]
    stamps = {"seen": "iso8601"}
    out = conform(records, SCHEMA, stamps)
    table = arrow_table(out, SCHEMA, stamps)
    assert table.column_names == ["id", "ts", "country", "n", "tags", "ok", "amount", "seen",
                                  "coupon", "mixed", "empty"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("n").type == pa.struct([pa.field("a", pa.int32())])
    assert table.schema.field("seen").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("coupon").type == pa.float64()   # int and float: double
    assert table.column("mixed").to_pylist() == [None, "1", '"x"']   # no common type: JSON
    assert table.schema.field("empty").type == pa.string()
    assert table.column("id").to_pylist() == [1, 2, 3]


SPEC_BY = [PartitionField(field="ts", transform="day"),
           PartitionField(field="ts", transform="hour"),
           PartitionField(field="country", transform="bucket", buckets=16),
           PartitionField(field="id", transform="bucket", buckets=16),
           PartitionField(field="country")]


def test_partition_values_are_icebergs() -> None:
    spec = partition_spec(SCHEMA, SPEC_BY)
    assert spec_shape(spec, SCHEMA) == [("ts", "day", "ts_day"), ("ts", "hour", "ts_hour"),
                                        ("country", "bucket[16]", "country_bucket"),
                                        ("id", "bucket[16]", "id_bucket"),
                                        ("country", "identity", "country")]
    at = dt.datetime(2017, 11, 16, 22, 31, 8, tzinfo=UTC)
    rows = [{"id": 34, "ts": at, "country": "iceberg"}]
    [part] = partitions(rows, SCHEMA, spec)
    # The Iceberg spec's own examples (Appendix B): hash(34) = 2017239379,
    # hash("iceberg") = 1210000089; bucket = (hash & MAX_INT) % N.
    assert part.values == {"ts_day": 17486, "ts_hour": 17486 * 24 + 22,
                           "country_bucket": 1210000089 % 16, "id_bucket": 2017239379 % 16,
                           "country": "iceberg"}
    assert part.values["country_bucket"] == BucketTransform(16).transform(StringType())(
        "iceberg")
    assert part.values["ts_day"] == DayTransform().transform(TimestamptzType())(
        json_value(at))
    assert part.path == ("ts_day=2017-11-16/ts_hour=2017-11-16-22/country_bucket=9/"
                         "id_bucket=3/country=iceberg")


def test_rows_group_by_partition_and_paths_are_escaped() -> None:
    schema = Schema(NestedField(1, "region", StringType()), NestedField(2, "id", LongType()))
    spec = partition_spec(schema, [PartitionField(field="region")])
    rows: list[dict[str, Any]] = [{"region": "eu/west", "id": 1}, {"region": None, "id": 2},
            {"region": "eu/west", "id": 3}]
    parts = partitions(rows, schema, spec)
    assert [(p.path, p.values, p.rows) for p in parts] == [
        ("region=eu%2Fwest", {"region": "eu/west"}, [0, 2]),
        ("region=null", {"region": None}, [1])]
    [whole] = partitions(rows, schema, PartitionSpec())
    assert (whole.path, whole.rows) == ("", [0, 1, 2])


def test_json_values_are_icebergs_internal_representation() -> None:
    assert json_value(dt.date(1970, 1, 11)) == 10
    assert json_value(dt.datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
    assert json_value("x") == "x"


def test_rows_pyarrow_refuses_become_dead_letters_not_a_failed_chunk() -> None:
    from tasks.iceberg.records import Conformed, writable_table
    schema = Schema(NestedField(1, "id", LongType()))
    # As if a cast had let "x" through: pyarrow refuses it for an int64 column.
    conformed = Conformed(rows=[{"id": 1}, {"id": "x"}, {"id": 3}], kept=[0, 2, 5],
                          dead=[(1, "earlier")])
    table = writable_table(conformed, schema, {})
    assert table.column("id").to_pylist() == [1, 3]
    assert conformed.kept == [0, 5]
    assert [i for i, _ in conformed.dead] == [1, 2]
    assert "cannot be written in the table's columns" in conformed.dead[1][1]
