"""Decoding of schema-carrying values (tasks/transforms/schemas.py) and their spec: plain Avro,
Avro's JSON-encoding semantics, the wire format, the bounded cache and remembered failures (a
registry replaced by a stand-in client: pure logic), and the parse spec's checks."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest

from tasks.errors import RecordError, ValidationError
from tasks.spec import Registry, parse_job_spec
from tasks.transforms import schemas
from tasks.transforms.schemas import (
    FAILURE_TTL,
    RegistrySchemas,
    avro_decoder,
    registry_parser,
)

SCHEMA = json.dumps({
    "type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "blob", "type": "bytes"},
        {"name": "maybe", "type": ["null", {"type": "fixed", "name": "F", "size": 2}]},
        {"name": "tags", "type": {"type": "map", "values": "bytes"}},
    ]})


def _avro(record: dict[str, Any], schema: str = SCHEMA) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(schema)), record)
    return out.getvalue()


def test_avro_decodes_as_avros_json_encoding() -> None:
    value = _avro({"id": 7, "at": 1_700_000_000_123, "blob": b"\x00\xff",
                   "maybe": b"ab", "tags": {"k": b"\x01"}})
    assert avro_decoder(SCHEMA)(value) == {
        "id": 7, "at": 1_700_000_000_123, "blob": "\x00\xff", "maybe": "ab", "tags": {"k": "\x01"}}


def test_avro_garbage_and_trailing_bytes_are_record_errors() -> None:
    decode = avro_decoder(SCHEMA)
    with pytest.raises(RecordError, match="not Avro of its schema"):
        decode(b"\x02")
    good = _avro({"id": 1, "at": 0, "blob": b"", "maybe": None, "tags": {}})
    with pytest.raises(RecordError, match="bytes left after the record"):
        decode(good + b"\x00")


class FakeClient:
    """Stands in for confluent-kafka's SchemaRegistryClient: counts lookups, can be 'down'."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def get_schema(self, schema_id: int) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")

        class Found:
            schema_type = "AVRO"
            schema_str = SCHEMA
        return Found()


def _schemas(clock: list[float]) -> tuple[RegistrySchemas, FakeClient]:
    found = RegistrySchemas(Registry(url="http://registry.example:8081", cache_size=2),
                            clock=lambda: clock[0])
    client = FakeClient()
    found._client = client  # type: ignore[assignment]
    found._check_egress = lambda: None  # type: ignore[method-assign]
    return found, client


def test_schemas_are_fetched_once_per_id_and_the_cache_is_bounded() -> None:
    clock = [0.0]
    found, client = _schemas(clock)
    parse = registry_parser(found, "avro")
    payload = _avro({"id": 1, "at": 0, "blob": b"", "maybe": None, "tags": {}})
    for schema_id in (1, 1, 2, 1, 3, 1, 2):
        assert parse(b"\x00" + schema_id.to_bytes(4, "big") + payload)["id"] == 1
    # 1 once; 2, then 3 pushes 2 out (capacity 2; 1 was used last); 2 again.
    assert client.calls == 4
    assert len(found._compiled) == 2


def test_an_outage_costs_one_request_per_id_per_failure_ttl() -> None:
    clock = [0.0]
    found, client = _schemas(clock)
    client.down = True
    parse = registry_parser(found, "avro")
    value = b"\x00\x00\x00\x00\x09" + b"\x02"
    for _ in range(100):
        with pytest.raises(RecordError, match="schema registry unreachable"):
            parse(value)
    assert client.calls == 1
    clock[0] += FAILURE_TTL + 0.1
    client.down = False
    assert parse(b"\x00\x00\x00\x00\x09" + _avro(
        {"id": 3, "at": 0, "blob": b"", "maybe": None, "tags": {}}))["id"] == 3
    assert client.calls == 2


def test_wire_format_and_schema_type_are_checked() -> None:
    found, _ = _schemas([0.0])
    with pytest.raises(RecordError, match="wire format"):
        registry_parser(found, "avro")(b"\x01\x00\x00\x00\x01abc")
    with pytest.raises(RecordError, match="is a AVRO schema, not JSON"):
        registry_parser(found, "json_schema")(b"\x00\x00\x00\x00\x01{}")


def _spec(parse: dict[str, Any]) -> Any:
    return parse_job_spec({"id": "j", "source": {"topic": "t"},
                           "sink": {"type": "s3", "bucket": "bkt"}, "transform": {"parse": parse}})


def test_the_spec_needs_one_schema_source_and_a_secret_reference_for_passwords() -> None:
    assert _spec({"format": "avro", "avro_schema": SCHEMA}).transform.parse.format == "avro"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"format": "avro"}, "either a registry or an avro_schema"),
        ({"format": "avro", "avro_schema": '{"type": "nope"}'}, "not a valid Avro schema"),
        ({"format": "json_schema", "avro_schema": SCHEMA}, "needs a registry"),
        ({"format": "json", "registry": {"url": "http://r:1"}}, "apply only to formats"),
        ({"format": "avro", "registry": {"url": "ftp://r"}}, "url must be http"),
        ({"format": "avro", "registry": {"url": "http://r:1", "username": "u",
                                         "password": "hunter2"}}, "secret reference"),
    ]
    for bad, reason in cases:
        with pytest.raises(ValidationError, match=reason):
            _spec(bad)
    ok = _spec({"format": "avro", "registry": {"url": "http://r:1/", "username": "u",
                                               "password": "${env:EXPORTD_SECRET_REG}"}})
    assert ok.transform.parse.registry.url == "http://r:1"


def test_the_registry_password_comes_from_the_servers_environment() -> None:
    registry = Registry(url="http://r:1", username="u", password="${env:EXPORTD_SECRET_REG}")
    found = RegistrySchemas(registry, environ={"EXPORTD_SECRET_REG": "s3cret"})
    assert found._client is not None
    with pytest.raises(Exception, match="EXPORTD_SECRET_REG, which is not set"):
        RegistrySchemas(registry, environ={})
    schemas.check_avro_schema(SCHEMA)


def test_json_schema_patterns_run_in_linear_time() -> None:
    """A registry's JSON schema is data: its `pattern` keywords are matched by RE2, so a
    hostile one cannot hold a worker (Python's re takes seconds on 30 characters of this)."""
    decode = schemas.json_schema_decoder(json.dumps({
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^x-(a+)+$": {"type": "integer"}}}))
    hostile = "a" * 5000 + "!"
    with pytest.raises(RecordError, match="does not match"):
        decode(json.dumps({"s": hostile}).encode())
    assert decode(json.dumps({"s": "aaa", "x-aa": 1}).encode())["s"] == "aaa"
    with pytest.raises(RecordError, match="is not of type 'integer'"):
        decode(json.dumps({"x-" + "a" * 5000: "no"}).encode())
    backref = schemas.json_schema_decoder(json.dumps({"type": "string", "pattern": "(a)\\1"}))
    with pytest.raises(RecordError, match="backreference"):
        backref(b'"aa"')
