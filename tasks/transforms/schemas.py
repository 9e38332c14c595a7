"""Parsers for values that carry a schema: Avro, JSON Schema and Protobuf (tasks/transforms/
protobuf.py) in the Confluent wire format, their
schemas looked up by id in a Confluent-compatible registry, and plain Avro with the job's schema.

The wire format is a magic byte 0, the schema id (4 bytes, big-endian) and the payload. A value
that is not in it, names an id the registry does not know, cannot be decoded with its schema, or
arrives while the registry cannot be reached raises RecordError with that reason: the record is
dead-lettered and the task goes on.

Avro values decode to what Avro's JSON encoding gives (the Avro specification's): logical types
as their underlying type (a timestamp-millis is its long), bytes and fixed as strings of code
points 0-255, unions as the bare value; so NDJSON lines hold what `avro-tools tojson` prints,
without union wrappers. fastavro decodes.

The registry is asked through confluent-kafka's SchemaRegistryClient (basic auth, TLS, retries).
Each worker process keeps one `RegistrySchemas` per registry, shared by its tasks: a bounded LRU
of compiled schemas by id, and failures remembered for FAILURE_TTL, so neither a busy partition
nor a registry outage makes a request per record. Before each request the registry's host is
resolved and every address checked against the server's egress rules (tasks/egress.py), as HTTP
sinks do: a name that turns private is refused, not followed.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import fastavro
import jsonschema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tasks.egress import IpNetwork, address_allowed
from tasks.errors import RecordError
from tasks.expressions import compile_search
from tasks.spec import Parse, Registry, resolve_secret_refs
from tasks.transforms.parsers import parse_json
from tasks.transforms.protobuf import protobuf_decoder

MAGIC = 0
HEADER = 5
# How long a failed lookup (unknown id, registry down) answers for itself before the registry is
# asked again: an outage costs one request per id per this long, not one per record.
FAILURE_TTL = 5.0

Decode = Callable[[bytes], Any]


def check_avro_schema(text: str) -> None:
    """ValueError with the reason when `text` is not an Avro schema fastavro accepts."""
    try:
        fastavro.parse_schema(json.loads(text))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"avro_schema is not a valid Avro schema: {exc}") from exc


# --- Avro -----------------------------------------------------------------------------------------

def _plain_types(schema: Any) -> tuple[Any, bool]:
    """The schema without logical types (their values decode as the underlying type, as in
    Avro's JSON encoding), and whether it holds bytes or fixed (converted after decoding)."""
    if isinstance(schema, list):
        parts = [_plain_types(item) for item in schema]
        return [p for p, _ in parts], any(b for _, b in parts)
    if isinstance(schema, str):
        return schema, schema in ("bytes", "fixed")
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        binary = schema.get("type") in ("bytes", "fixed")
        for key, value in schema.items():
            if key == "logicalType":
                continue
            if key in ("type", "items", "values"):
                value, inner = _plain_types(value)
                binary = binary or inner
            elif key == "fields":
                fields = []
                for field in value:
                    ftype, inner = _plain_types(field["type"])
                    fields.append({**field, "type": ftype})
                    binary = binary or inner
                value = fields
            out[key] = value
        return out, binary
    return schema, False


def _text_bytes(value: Any) -> Any:
    """bytes as Avro's JSON encoding writes them: a string of code points 0-255."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {key: _text_bytes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_text_bytes(item) for item in value]
    return value


def avro_decoder(schema_text: str, *, bytes_as_text: bool = True) -> Decode:
    """Decode one Avro binary payload (no header) written with this schema. `bytes_as_text`:
    bytes and fixed as Avro's JSON encoding writes them (for NDJSON and CSV); else as bytes
    (Parquet and Avro files keep them binary)."""
    plain, binary = _plain_types(json.loads(schema_text))
    binary = binary and bytes_as_text
    parsed = fastavro.parse_schema(plain)

    def decode(payload: bytes) -> Any:
        buffer = io.BytesIO(payload)
        try:
            record = fastavro.schemaless_reader(buffer, parsed, None)
        except Exception as exc:  # fastavro raises whatever its reader hits on bad bytes
            raise RecordError(f"not Avro of its schema: {type(exc).__name__}: {exc}") from exc
        if buffer.tell() != len(payload):
            raise RecordError(f"not Avro of its schema: {len(payload) - buffer.tell()} bytes "
                              "left after the record")
        return _text_bytes(record) if binary else record

    return decode





# --- JSON Schema ----------------------------------------------------------------------------------

class _Patterns:
    """A schema's regexes compiled with RE2 once each, in linear time: a schema from the
    registry is data, and Python's `re` would backtrack on a hostile pattern."""

    def __init__(self) -> None:
        self._compiled: dict[str, Callable[[str], bool] | str] = {}

    def matcher(self, regex: str) -> Callable[[str], bool] | str:
        """The predicate, or why RE2 cannot run the pattern."""
        found = self._compiled.get(regex)
        if found is None:
            try:
                found = compile_search(regex)
            except ValueError as exc:
                found = f"the schema's {exc}"
            self._compiled[regex] = found
        return found

    def pattern(self, validator: Any, regex: str, instance: Any, _schema: Any) -> Any:
        """JSON Schema's `pattern` keyword."""
        if not validator.is_type(instance, "string"):
            return
        matches = self.matcher(regex)
        if isinstance(matches, str):
            yield jsonschema.ValidationError(matches)
        elif not matches(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {regex!r}")

    def pattern_properties(self, validator: Any, properties: dict[str, Any], instance: Any,
                           _schema: Any) -> Any:
        """JSON Schema's `patternProperties` keyword."""
        if not validator.is_type(instance, "object"):
            return
        for regex, subschema in properties.items():
            matches = self.matcher(regex)
            if isinstance(matches, str):
                yield jsonschema.ValidationError(matches)
                continue
            for key, value in instance.items():
                if matches(key):
                    yield from validator.descend(value, subschema, path=key, schema_path=regex)


def json_schema_decoder(schema_text: str) -> Decode:
    """Parse one JSON payload and check it against its schema (regex keywords by RE2)."""
    schema = json.loads(schema_text)
    patterns = _Patterns()
    validator_class = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.validators.validator_for(schema),
        {"pattern": patterns.pattern, "patternProperties": patterns.pattern_properties})
    validator = validator_class(schema)

    def decode(payload: bytes) -> Any:
        record = parse_json(payload)
        error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "(root)"
            raise RecordError(f"does not match its JSON schema at {where}: {error.message}")
        return record

    return decode


# schema type -> (schema text, bytes_as_text) -> decoder
COMPILERS: dict[str, Callable[[str, bool], Decode]] = {
    "AVRO": lambda text, as_text: avro_decoder(text, bytes_as_text=as_text),
    "JSON": lambda text, _: json_schema_decoder(text),
    "PROTOBUF": lambda text, as_text: protobuf_decoder(text, bytes_as_text=as_text)}
FORMAT_TYPES = {"avro": "AVRO", "json_schema": "JSON", "protobuf": "PROTOBUF"}
SCHEMA_FORMATS = frozenset(FORMAT_TYPES)


# --- The registry ---------------------------------------------------------------------------------

class RegistrySchemas:
    """Compiled schemas by id from one registry: a bounded LRU, failures remembered briefly."""

    def __init__(self, registry: Registry, *, environ: Mapping[str, str] | None = None,
                 allow_networks: Iterable[IpNetwork] = (), bytes_as_text: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = registry.url
        self.capacity = registry.cache_size
        self._allow = tuple(allow_networks)
        self._bytes_as_text = bytes_as_text
        self._clock = clock
        conf: dict[str, Any] = {"url": registry.url, "timeout": registry.timeout,
                                "max.retries": 1, "cache.capacity": registry.cache_size}
        if registry.username is not None:
            conf["basic.auth.user.info"] = (
                f"{registry.username}:" + resolve_secret_refs(
                    registry.password or "", environ or os.environ,
                    what="parse.registry.password"))
        self._client = SchemaRegistryClient(conf)
        self._lock = threading.Lock()
        self._compiled: OrderedDict[int, tuple[str, Decode]] = OrderedDict()
        self._failed: dict[int, tuple[float, str]] = {}
        self.requests = 0   # lookups that reached the registry (tests read it)

    def decoder(self, schema_id: int, schema_type: str) -> Decode:
        with self._lock:
            hit = self._compiled.get(schema_id)
            if hit is not None:
                self._compiled.move_to_end(schema_id)
            else:
                failed = self._failed.get(schema_id)
                if failed is not None and failed[0] > self._clock():
                    raise RecordError(failed[1])
        if hit is None:
            hit = self._fetch(schema_id)
        kind, decode = hit
        if kind != schema_type:
            raise RecordError(f"schema id {schema_id} is a {kind} schema, not {schema_type}")
        return decode

    def _fetch(self, schema_id: int) -> tuple[str, Decode]:
        try:
            self._check_egress()
            self.requests += 1
            found = self._client.get_schema(schema_id)
            kind = found.schema_type or "AVRO"
            compile_ = COMPILERS.get(kind)
            if compile_ is None:
                raise RecordError(f"schema id {schema_id} is a {kind} schema, which exportd "
                                  "does not decode")
            entry = (kind, compile_(found.schema_str or "", self._bytes_as_text))
        except RecordError as exc:
            return self._remember_failure(schema_id, str(exc))
        except SchemaRegistryError as exc:
            reason = (f"schema id {schema_id} is unknown to the registry"
                      if exc.http_status_code == 404 else
                      f"schema registry error for id {schema_id}: HTTP {exc.http_status_code} "
                      f"{exc.error_message}")
            return self._remember_failure(schema_id, reason)
        except Exception as exc:  # httpx transport errors, a schema that does not compile
            return self._remember_failure(
                schema_id, f"schema registry unreachable or schema {schema_id} unusable: "
                           f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._compiled[schema_id] = entry
            self._failed.pop(schema_id, None)
            while len(self._compiled) > self.capacity:
                self._compiled.popitem(last=False)
        return entry

    def _remember_failure(self, schema_id: int, reason: str) -> tuple[str, Decode]:
        with self._lock:
            if len(self._failed) >= self.capacity:
                self._failed.clear()
            self._failed[schema_id] = (self._clock() + FAILURE_TTL, reason)
        raise RecordError(reason)

    def _check_egress(self) -> None:
        """Every address the registry's host resolves to must be one the server's egress rules
        allow (the job names the URL; the server decides)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise RecordError(f"schema registry {host} does not resolve: {exc}") from exc
        refused = [info[4][0] for info in infos
                   if not address_allowed(str(info[4][0]), self._allow)]
        if refused:
            raise RecordError(f"schema registry {host} resolves to {refused[0]}, which this "
                              "server's egress rules refuse (egress.http_allow_networks)")


# One per registry (and login) per worker process, shared by its tasks.
_REGISTRIES: dict[tuple[Any, ...], RegistrySchemas] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry_schemas(registry: Registry, allow_networks: Iterable[IpNetwork], *,
                     bytes_as_text: bool = True) -> RegistrySchemas:
    allow = tuple(allow_networks)
    key = (registry.url, registry.username, registry.password, allow, bytes_as_text)
    with _REGISTRIES_LOCK:
        found = _REGISTRIES.get(key)
        if found is None:
            found = _REGISTRIES[key] = RegistrySchemas(registry, allow_networks=allow,
                                                       bytes_as_text=bytes_as_text)
        return found


def registry_parser(schemas: RegistrySchemas, fmt: str) -> Decode:
    """A parser of Confluent wire-format values of `fmt` ('avro', 'json_schema', 'protobuf')."""
    schema_type = FORMAT_TYPES[fmt]

    def parse(value: bytes) -> Any:
        if len(value) < HEADER or value[0] != MAGIC:
            raise RecordError("not in the schema registry wire format (magic byte 0 and a "
                              "4-byte schema id)")
        schema_id = int.from_bytes(value[1:HEADER], "big")
        return schemas.decoder(schema_id, schema_type)(value[HEADER:])

    return parse


def schema_parser(spec: Parse, allow_networks: Iterable[IpNetwork], *,
                  bytes_as_text: bool = True) -> Decode:
    """The parser of an 'avro', 'json_schema' or 'protobuf' parse step."""
    if spec.registry is None:
        return avro_decoder(spec.avro_schema or "", bytes_as_text=bytes_as_text)
    return registry_parser(registry_schemas(spec.registry, allow_networks,
                                            bytes_as_text=bytes_as_text), spec.format)
