"""Avro and JSON Schema values through a real schema registry (Apicurio Registry's
Confluent-compatible API), produced by confluent-kafka's own serializers, exported to S3 as
NDJSON: several schema versions interleaved in one partition, nothing dropped; an unknown schema
id, a value not in the wire format and an unreachable registry go to dead letters with their
reasons while the task goes on."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, cast

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tasks.pipeline import PipelineRunner
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    lines,
    new_bucket,
    produce,
    run_until_committed,
    runner,
    s3_objects,
    unique,
)
from tools.infra.ports import free_port


def _avro(name: str, fields: list[dict[str, Any]]) -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "exportd.test",
                       "fields": fields})


# Three versions of one subject: a field added with a default, an int widened to long, a field
# removed, a logical type and bytes.
V1 = _avro("Order", [{"name": "id", "type": "long"}, {"name": "qty", "type": "int"},
                     {"name": "note", "type": ["null", "string"], "default": None}])
V2 = _avro("Order", [{"name": "id", "type": "long"}, {"name": "qty", "type": "long"},
                     {"name": "note", "type": ["null", "string"], "default": None},
                     {"name": "region", "type": "string", "default": "eu"}])
V3 = _avro("Order", [{"name": "id", "type": "long"}, {"name": "qty", "type": "long"},
                     {"name": "region", "type": "string", "default": "eu"},
                     {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                     {"name": "tag", "type": "bytes"}])


def _avro_values(url: str, topic: str, n: int) -> tuple[list[bytes], list[dict[str, Any]]]:
    client = SchemaRegistryClient({"url": url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    # Each version registered as the subject's latest in turn (the serializer's default).
    serializers = [AvroSerializer(client, schema) for schema in (V1, V2, V3)]
    values: list[bytes] = []
    expected: list[dict[str, Any]] = []
    for i in range(n):
        version = i % 3
        if version == 0:
            record: dict[str, Any] = {"id": i, "qty": i % 7, "note": f"n{i}" if i % 2 else None}
            want = dict(record)
        elif version == 1:
            record = {"id": i, "qty": 2**40 + i, "note": None, "region": "us"}
            want = dict(record)
        else:
            record = {"id": i, "qty": i, "region": "apac", "at": 1_700_000_000_000 + i,
                      "tag": bytes([0, 200, i % 256])}
            want = {**record, "tag": bytes([0, 200, i % 256]).decode("latin-1")}
        raw = serializers[version](record, ctx)
        assert raw is not None
        values.append(raw)
        expected.append(want)
    return values, expected


async def _export(kafka: str, s3: str, tmp_path: Path, topic: str, values: list[bytes],
                  parse: dict[str, Any], *, end: int | None = None,
                  **spec: Any) -> tuple[dict[str, bytes], list[dict[str, Any]], PipelineRunner]:
    """Produce `values`, export them to a new bucket with this parse step (dead letters to
    files), run until committed (to `end`, default every value); the objects, the dead
    letters and the runner."""
    produce(kafka, topic, values)
    bucket = new_bucket(s3)
    dlq = tmp_path / "dlq"
    r = runner(environment(kafka, tmp_path, s3),
               job(topic, {"type": "s3", "bucket": bucket, "prefix": "x"},
                   transform={"parse": parse},
                   dead_letter={"type": "file", "directory": str(dlq)}, **spec))
    await run_until_committed(r, len(values), end=end)
    return s3_objects(s3, bucket), _dead_lines(dlq), r


def _dead_lines(dlq: Path) -> list[dict[str, Any]]:
    return lines(p.read_bytes() for p in dlq.rglob("*.ndjson"))


async def test_avro_versions_interleaved_export_every_field(
        kafka: str, s3: str, registry: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("avro"))
    values, expected = _avro_values(registry, topic, 300)
    # A schema id the registry never issued, and a value that is not in the wire format.
    values[100] = b"\x00\x00\x0f\x42\x40" + values[100][5:]
    values[200] = b"{\"id\": 200}"
    files, dead_letters, r = await _export(kafka, s3, tmp_path, topic, values,
                                           {"format": "avro", "registry": {"url": registry}})

    got = sorted(lines(files.values()), key=lambda rec: rec["id"])
    assert got == [want for i, want in enumerate(expected) if i not in (100, 200)]
    dead = {d["offset"]: d["reason"] for d in dead_letters}
    assert set(dead) == {100, 200}
    assert "schema id 1000000 is unknown to the registry" in dead[100]
    assert "not in the schema registry wire format" in dead[200]
    assert r.stats().dead_letters_total == 2


async def test_json_schema_values_are_checked_against_their_schema(
        kafka: str, s3: str, registry: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("jsonschema"))
    schema = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Click",
                         "type": "object", "required": ["id"],
                         "properties": {"id": {"type": "integer"}, "page": {"type": "string"}}})
    client = SchemaRegistryClient({"url": registry})
    serialize = JSONSerializer(schema, client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    values = [serialize({"id": i, "page": f"/p/{i}"}, ctx) or b"" for i in range(50)]
    # Registered header, payload the schema refuses (id is a string).
    values[7] = values[7][:5] + b'{"id": "seven"}'
    files, dead_letters, _ = await _export(
        kafka, s3, tmp_path, topic, values,
        {"format": "json_schema", "registry": {"url": registry}})
    got = sorted(rec["id"] for rec in lines(files.values()))
    assert got == [i for i in range(50) if i != 7]
    (dead,) = dead_letters
    assert dead["offset"] == 7 and "does not match its JSON schema at id" in dead["reason"]


async def test_an_unreachable_registry_dead_letters_and_the_task_goes_on(
        kafka: str, s3: str, registry: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("avro-down"))
    values, _ = _avro_values(registry, topic, 30)
    down = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"   # nothing listens there
    # Nothing reached S3, so nothing is committed yet: an S3 chunk closes only with a record in
    # it (its key is its start offset; docs/architecture/pipeline.md).
    _files, dead, _ = await _export(kafka, s3, tmp_path, topic, values,
                                 {"format": "avro", "registry": {"url": down, "timeout": 1}},
                                 end=0)
    assert sorted(d["offset"] for d in dead) == list(range(30))
    assert all("schema registry unreachable" in d["reason"] for d in dead)


@pytest.mark.parametrize("file_type", ["parquet", "avro"])
async def test_avro_versions_export_to_typed_files_nothing_dropped(
        kafka: str, s3: str, registry: str, tmp_path: Path, file_type: str) -> None:
    """Three schema versions in one partition, files of 40 records (so files mix versions):
    every field of every version is a typed column, read back record for record."""
    topic = create_topic(kafka, unique(f"avro-{file_type}"))
    values, _ = _avro_values(registry, topic, 120)
    files, _dead, _ = await _export(kafka, s3, tmp_path, topic, values,
                                 {"format": "avro", "registry": {"url": registry}},
                                 format={"type": file_type, "compression": "zstd"},
                                 rotation={"max_records": 40})

    assert len(files) == 3 and all(key.endswith(f".{file_type}") for key in files)
    got: list[dict[str, Any]] = []
    for body in files.values():
        if file_type == "parquet":
            table = pq.read_table(io.BytesIO(body))
            assert table.schema.field("id").type == pa.int64()
            assert table.schema.field("qty").type == pa.int64()
            assert table.schema.field("tag").type == pa.binary()
            got.extend(table.to_pylist())
        else:
            reader = fastavro.reader(io.BytesIO(body))
            writer_schema: Any = reader.writer_schema
            fields = {f["name"]: f["type"] for f in writer_schema["fields"]}
            assert fields["qty"] == ["null", "long"] and fields["tag"] == ["null", "bytes"]
            got.extend(cast(dict[str, Any], rec) for rec in reader)
    got.sort(key=lambda rec: rec["id"])
    assert [rec["id"] for rec in got] == list(range(120))
    for rec in got:
        i = rec["id"]
        if i % 3 == 0:
            assert rec["qty"] == i % 7 and rec["note"] == (f"n{i}" if i % 2 else None)
            assert rec["region"] is None and rec["tag"] is None
        elif i % 3 == 1:
            assert rec["qty"] == 2**40 + i and rec["region"] == "us"
        else:
            assert rec["region"] == "apac" and rec["at"] == 1_700_000_000_000 + i
            assert rec["tag"] == bytes([0, 200, i % 256]) and rec["note"] is None


def _order_file(version: int) -> descriptor_pb2.FileDescriptorProto:
    """exportd.test.Order as a .proto file would define it; version 2 adds `note` and a nested
    message type (values of it name index path [0, 0])."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="order.proto", package="exportd.test",
                                               syntax="proto3")
    status = proto.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    status.value.add(name="PAID", number=1)
    order = proto.message_type.add(name="Order")
    order.field.add(name="id", number=1, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    order.field.add(name="status", number=2, type=f.TYPE_ENUM, label=f.LABEL_OPTIONAL,
                    type_name=".exportd.test.Status")
    order.field.add(name="tags", number=3, type=f.TYPE_STRING, label=f.LABEL_REPEATED)
    order.field.add(name="blob", number=4, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    if version == 2:
        order.field.add(name="note", number=5, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
        line = order.nested_type.add(name="Line")
        line.field.add(name="sku", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    return proto


def _message_class(proto: descriptor_pb2.FileDescriptorProto, name: str) -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


async def test_protobuf_values_of_two_versions_and_a_nested_type(
        kafka: str, s3: str, registry: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("proto"))
    client = SchemaRegistryClient({"url": registry})
    ctx = SerializationContext(topic, MessageField.VALUE)
    v1 = _message_class(_order_file(1), "exportd.test.Order")
    v2 = _message_class(_order_file(2), "exportd.test.Order")
    line = _message_class(_order_file(2), "exportd.test.Order.Line")
    conf = {"use.deprecated.format": False}
    values: list[bytes] = []
    for i in range(60):
        if i % 3 == 0:
            message = v1(id=i, status=1, tags=["a", str(i)], blob=bytes([i, 255]))
            raw = ProtobufSerializer(v1, client, conf)(message, ctx)
        elif i % 3 == 1:
            message = v2(id=i, note=f"n{i}")
            raw = ProtobufSerializer(v2, client, conf)(message, ctx)
        else:
            raw = ProtobufSerializer(line, client, {**conf, "auto.register.schemas": True})(
                line(sku=f"sku-{i}"), SerializationContext(topic + "-lines", MessageField.VALUE))
        assert raw is not None
        values.append(raw)
    values[59] = values[59][:5] + b"\x00\xff\xff"   # an index path then a broken message
    files, dead_letters, _ = await _export(
        kafka, s3, tmp_path, topic, values,
        {"format": "protobuf", "registry": {"url": registry}})
    got = lines(files.values())
    orders = sorted((rec for rec in got if "id" in rec), key=lambda rec: int(rec["id"]))
    assert orders[0] == {"id": 0, "status": "PAID", "tags": ["a", "0"], "blob": "AP8="}
    assert orders[1] == {"id": 1, "status": "NEW", "tags": [], "blob": "", "note": "n1"}
    assert [rec["id"] for rec in orders] == [i for i in range(60) if i % 3 != 2]
    assert sorted(rec["sku"] for rec in got if "sku" in rec) == sorted(
        f"sku-{i}" for i in range(60) if i % 3 == 2 and i != 59)
    (dead,) = dead_letters
    assert dead["offset"] == 59 and "does not decode as exportd.test.Order:" in dead["reason"]
